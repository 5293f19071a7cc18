//! Property tests of the path rules (CONTRACT.md "Input rules"): whatever string a caller
//! passes, `resolve_target` never yields a path outside the root, never one under
//! bluegreen's own directories, and its result is a fixed point (normalization is
//! idempotent). Runs a bounded number of cases so it takes seconds in CI.

use std::path::Path;

use bluegreen_core::paths::{canonical_root, check_registry_target, resolve_target};
use proptest::prelude::*;

/// Path-ish strings built from the pieces that matter: separators, dots, the state
/// directories, symlinks planted in the root (inside and out), NUL, absolute prefixes.
fn raw_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("a".to_owned()),
        Just("b.py".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("".to_owned()),
        Just("in".to_owned()),
        Just("out".to_owned()),
        Just("loop".to_owned()),
        Just("file".to_owned()),
        Just(".bluegreen".to_owned()),
        Just("backups".to_owned()),
        Just("\0".to_owned()),
        "[a-z.]{1,4}",
        any::<String>().prop_map(|s| s.chars().take(6).collect()),
    ];
    (
        prop_oneof![Just(""), Just("/"), Just("./"), Just("/tmp/")],
        prop::collection::vec(piece, 0..6),
        prop_oneof![Just(""), Just("/")],
    )
        .prop_map(|(lead, parts, tail)| format!("{lead}{}{tail}", parts.join("/")))
}

fn planted_root() -> (tempfile::TempDir, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = canonical_root(dir.path()).unwrap();
    std::fs::create_dir(root.join("a")).unwrap();
    std::fs::write(root.join("file"), b"x").unwrap();
    std::os::unix::fs::symlink(root.join("a"), root.join("in")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
    std::os::unix::fs::symlink(root.join("loop"), root.join("loop")).unwrap();
    (dir, outside, root)
}

fn inside(root: &Path, p: &Path) -> bool {
    p.starts_with(root) && p != root
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn resolved_targets_stay_inside_and_are_fixed_points(raw in raw_path()) {
        let (_d, _o, root) = planted_root();
        if let Ok(target) = resolve_target(&root, &raw) {
            prop_assert!(inside(&root, &target.abs), "{raw:?} -> {target:?}");
            prop_assert_eq!(root.join(&target.rel), target.abs.clone());
            prop_assert!(check_registry_target(&target.rel).is_ok(), "{target:?}");
            // Idempotent: resolving the result again gives the same target.
            let again = resolve_target(&root, &target.rel);
            prop_assert_eq!(again.ok(), Some(target.clone()));
            let abs = target.abs.to_str().unwrap().to_owned();
            prop_assert_eq!(resolve_target(&root, &abs).ok(), Some(target));
        }
    }

    #[test]
    fn registry_target_rules_accept_only_normal_relative_paths(raw in raw_path()) {
        if check_registry_target(&raw).is_ok() {
            prop_assert!(!raw.starts_with('/'));
            prop_assert!(raw.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
            prop_assert!(!raw.contains('\0'));
        }
    }
}
