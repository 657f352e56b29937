//! bk-hash: add the SHA-256 of each regular file's content to its record
//! (see [`bk::stages::hash`]).

fn main() {
    bk::cli::program::main_with::<bk::cli::HashCli>("bk-hash", bk::stages::hash::run)
}
