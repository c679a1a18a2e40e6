fn main() -> std::process::ExitCode {
    leadrelay::cli::main()
}
