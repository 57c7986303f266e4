//! Thin binary edge: parse the command line, run it, map errors to exit codes.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sgbd_edge::cli::main()
}
