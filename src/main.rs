//! The `strata` command line. All logic lives in the library; this binary parses
//! arguments, sets up logging, calls the library and presents the result.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
