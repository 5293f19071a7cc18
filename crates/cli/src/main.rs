//! The `bluegreen` binary: everything lives in the library so the HTTP server and the tests
//! share its code paths.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(bluegreen::run(std::env::args_os()))
}
