//! Thin binary edge: the global allocator, then the command line (tuning, parsing, running and
//! exit codes live in the library: `sys::tune_allocator`, `cli::main`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sgbd_edge::sys::tune_allocator();
    sgbd_edge::cli::main()
}
