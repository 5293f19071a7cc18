//! `cargo xtask e2e` (placeholder until implemented).

pub fn main(_args: &[String]) -> Result<(), String> {
    Err("not implemented yet".into())
}
