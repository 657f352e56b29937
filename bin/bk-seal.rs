fn main() {
    bk::program::main_with::<bk::cli::SealCli>("bk-seal", bk::seal::run)
}
