//! bk-scan: walk trees and print one metadata record per entry (see
//! [`bk::stages::scan`]).

fn main() {
    bk::cli::program::main_with::<bk::cli::ScanCli>("bk-scan", bk::stages::scan::run)
}
