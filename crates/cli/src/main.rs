//! The `bluegreen` binary: everything lives in the library so the HTTP server and the tests
//! share its code paths.

// mimalloc: parsing and verifying allocate many small short-lived objects; glibc malloc was
// the largest single cost of the syntax check (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(bluegreen::run(std::env::args_os()))
}
