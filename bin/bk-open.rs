fn main() {
    bk::program::main_with::<bk::cli::OpenCli>("bk-open", bk::open::run)
}
