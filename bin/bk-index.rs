fn main() {
    bk::program::main_with::<bk::cli::IndexCli>("bk-index", bk::index::run)
}
