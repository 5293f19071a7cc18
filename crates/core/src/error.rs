//! Errors of the core, each in one of the contract's exit-code classes.

/// The contract's failure classes. The CLI maps these to exit codes 1–4 (see
/// `crates/cli/src/exit.rs`); the HTTP server maps them to status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The code was rejected: verification failed, or the health check failed and GREEN was
    /// restored. Exit code 1.
    Rejected,
    /// Bad input or usage. Exit code 2. Nothing was changed.
    BadInput,
    /// A conflict: lock wait timed out, nothing to roll back, agent bound to another path.
    /// Exit code 3. Nothing was changed.
    Conflict,
    /// I/O or internal failure. Exit code 4.
    Io,
}

/// An error of the core. Messages are one line and name what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Conflict(String),
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    #[error("timed out after {waited_ms} ms waiting for the lock of agent {agent:?}")]
    LockTimeout { agent: String, waited_ms: u64 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(String),
    /// The deployment was refused (verification changed what it checks against) and the
    /// refusal could not be recorded as a FAILED deployment. Exit code 1.
    #[error("{0}")]
    Refused(String),
    #[error("internal: {0}")]
    Internal(String),
    /// An armed in-process fault point fired; the service stopped without cleanup, as a
    /// crashed process would (see `fault`).
    #[error("injected crash at {0}")]
    InjectedCrash(crate::fault::FaultPoint),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadInput(_) | Error::UnknownAgent(_) => ErrorKind::BadInput,
            Error::Conflict(_) | Error::LockTimeout { .. } => ErrorKind::Conflict,
            Error::Refused(_) => ErrorKind::Rejected,
            Error::Io { .. } | Error::Store(_) | Error::Internal(_) | Error::InjectedCrash(_) => {
                ErrorKind::Io
            }
        }
    }

    /// Wraps an I/O error with what was being done, e.g. `"writing /root/x.py"`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to `std::io::Result`s.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::io(what(), e))
    }
}
