//! Thin binary edge: tune the allocator, parse the command line, run it, map errors to exit codes.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (the same index in mimalloc v2 and v3's `mi_option_e`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc gives freed memory back to the OS after 10 ms by default, so candle's large
/// per-operation buffers are zeroed again by the kernel on every use (5-10 % of BLIP's vision
/// encoder and of a training epoch on 2 cores). One second keeps them warm across a batch and
/// still returns memory when the daemon idles. `MIMALLOC_PURGE_DELAY` in the environment wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option of the allocator; no pointers are involved.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    sgbd_edge::cli::main()
}
