//! bk-hash: add the SHA-256 of each regular file's content to its record
//! (see [`bk::hash`]).

fn main() {
    bk::program::main_with::<bk::cli::HashCli>("bk-hash", bk::hash::run)
}
