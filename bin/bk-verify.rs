fn main() {
    bk::cli::program::main_with::<bk::cli::VerifyCli>("bk-verify", bk::stages::verify::run)
}
