//! Benchmark section (placeholder until implemented).

/// Runs this section; `quick` is the smoke version for CI. Returns the figures as JSON.
#[allow(dead_code)]
pub fn run(_quick: bool) -> Result<serde_json::Value, String> {
    Err("not implemented yet".into())
}
