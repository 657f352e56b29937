fn main() {
    bk::cli::program::main_with::<bk::cli::SealCli>("bk-seal", bk::stages::seal::run)
}
