//! The exit codes of `bluegreen` — the one place they are defined (CONTRACT.md "CLI").
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | the code was rejected: verification failed, or the health check failed and GREEN was restored |
//! | 2 | bad input or usage (nothing was changed) |
//! | 3 | conflict: lock wait timed out, nothing to roll back, agent bound to another path |
//! | 4 | I/O or internal failure |

use bluegreen_core::ErrorKind;

pub const SUCCESS: u8 = 0;
pub const REJECTED: u8 = 1;
pub const BAD_INPUT: u8 = 2;
pub const CONFLICT: u8 = 3;
pub const IO: u8 = 4;

/// The exit code of a core error class.
pub fn code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Rejected => REJECTED,
        ErrorKind::BadInput => BAD_INPUT,
        ErrorKind::Conflict => CONFLICT,
        ErrorKind::Io => IO,
    }
}

/// The HTTP status of a core error class (the server's counterpart of [`code_for`]).
pub fn http_status_for(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::Rejected => 422,
        ErrorKind::BadInput => 400,
        ErrorKind::Conflict => 409,
        ErrorKind::Io => 500,
    }
}

/// A short machine-readable name for an error class (`"error_kind"` in JSON).
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Rejected => "rejected",
        ErrorKind::BadInput => "bad_input",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Io => "io",
    }
}
