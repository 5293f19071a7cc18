//! `cargo xtask fidelity`: placeholder.
pub fn main(_args: &[String]) -> Result<(), String> {
    Err("not implemented yet".into())
}
