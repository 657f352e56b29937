fn main() {
    bk::cli::program::main_with::<bk::cli::IndexCli>("bk-index", bk::stages::index::run)
}
