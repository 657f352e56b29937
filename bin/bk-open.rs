fn main() {
    bk::cli::program::main_with::<bk::cli::OpenCli>("bk-open", bk::stages::open::run)
}
