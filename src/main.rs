//! The `popfault` binary: a thin shell around the library's CLI.

fn main() -> std::process::ExitCode {
    popfault::cli::main()
}
