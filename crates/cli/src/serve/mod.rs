//! The HTTP API (`bluegreen serve`). Work in progress.
