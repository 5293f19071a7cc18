//! The `bluegreen` command-line tool and HTTP service, as a library so tests and the
//! server share the code paths of the CLI.

pub mod exit;
pub mod json;
pub mod serve;
