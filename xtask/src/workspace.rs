//! Where things are and how the binary under test is built — one place for every task.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's top directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace if relative) or
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// Builds `bluegreen` and returns its path.
///
/// Release builds `bluegreen` and `xtask` together with fault injection compiled in (inert
/// unless `BLUEGREEN_FAULT` is set): one build shared by `e2e` and `bench`, with the same
/// features, so neither rebuilds the other's artifacts. Debug is the build `cargo test`
/// already made, where fault injection is always on.
pub fn build_bluegreen(release: bool) -> Result<PathBuf, String> {
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--quiet", "-p", "bluegreen"]);
    if release {
        cargo.args([
            "--release",
            "-p",
            "xtask",
            "--features",
            "bluegreen/fault-injection",
        ]);
    }
    let status = cargo
        .current_dir(root())
        .status()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of bluegreen failed ({status})"));
    }
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir().join(profile).join("bluegreen"))
}
