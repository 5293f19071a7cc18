//! Checks Python files and prints their diagnostics plus the throughput:
//! `cargo run --release -p bluegreen-verify-syntax --example check_files -- [--engine E] FILE...`
//! (a file named `@LIST` holds one path per line).

use std::time::Instant;

use bluegreen_verify_syntax::{check_source, Engine, SyntaxOptions};

fn main() -> Result<(), String> {
    let mut options = SyntaxOptions::default();
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--engine" {
            let value = args.next().ok_or("--engine needs a value")?;
            options.engine = value.parse::<Engine>().map_err(|e| e.to_string())?;
        } else if let Some(list) = arg.strip_prefix('@') {
            let text = std::fs::read_to_string(list).map_err(|e| format!("{list}: {e}"))?;
            paths.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        } else {
            paths.push(arg);
        }
    }
    let sources: Vec<(String, Vec<u8>)> = paths
        .into_iter()
        .map(|p| {
            std::fs::read(&p)
                .map(|b| (p.clone(), b))
                .map_err(|e| format!("{p}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let mut rejected = 0;
    for (path, source) in &sources {
        let diagnostics = check_source(source, &options);
        if let Some(first) = diagnostics.first() {
            rejected += 1;
            println!("{path}:{}:{}: {}", first.line, first.column, first.message);
        }
    }
    let elapsed = start.elapsed();
    let bytes: usize = sources.iter().map(|(_, s)| s.len()).sum();
    eprintln!(
        "{} files, {rejected} rejected, {:.1} MB in {:.3} s = {:.1} MB/s ({})",
        sources.len(),
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        options.engine
    );
    Ok(())
}
