fn main() {
    bk::program::main_with::<bk::cli::VerifyCli>("bk-verify", bk::verify::run)
}
