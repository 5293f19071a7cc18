//! `cargo xtask demo` (placeholder until implemented).

pub fn main(_args: &[String]) -> Result<(), String> {
    Err("not implemented yet".into())
}
