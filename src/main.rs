fn main() -> std::process::ExitCode {
    onepie::cli::main()
}
