//! bk-scan: walk trees and print one metadata record per entry (see
//! [`bk::scan`]).

fn main() {
    bk::program::main_with::<bk::cli::ScanCli>("bk-scan", bk::scan::run)
}
