//! Scenarios 1–4 and 9 through the CLI (file store), for every chain.

use serde_json::Value;

use super::cli::{
    ensure, expect_bytes, expect_no_staged, is_deployment_id, is_utc_timestamp, read, s,
    snapshot_files, write, Bg,
};
use super::config::{good_code, toml, ChainKind, Reject, Settings};
use super::{Case, Outcome, Row};
use bluegreen_core::util::sha256_hex;

pub const AGENT: &str = "alpha";
pub const FILE: &str = "agents/alpha.py";

pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for chain in ChainKind::ALL {
        let config = format!("file/{}", chain.name());
        rows.push(Row::run("1 deploy", &config, move |c| {
            first_and_second(c, chain)
        }));
        for kind in Reject::ALL {
            let scenario = format!("2 reject/{}", kind.name());
            rows.push(if chain.detects(kind) {
                Row::run(scenario, &config, move |c| rejection(c, chain, kind))
            } else {
                Row::not_applicable(
                    scenario,
                    &config,
                    format!("chain {} cannot detect {}", chain.name(), kind.name()),
                )
            });
        }
        rows.push(Row::run("3 rollback", &config, move |c| {
            rollbacks(c, chain)
        }));
        rows.push(Row::run("4 health", &config, move |c| health(c, chain)));
        rows.push(Row::run("9 retention", &config, move |c| {
            retention(c, chain)
        }));
    }
    rows
}

/// Writes the configuration into the case's root and returns the binary bound to it.
pub fn setup(c: &Case, chain: ChainKind, settings: &Settings) -> Result<Bg, String> {
    write(
        &c.root.join("bluegreen.toml"),
        toml(chain, settings, &c.ctx.fixtures).as_bytes(),
    )?;
    Ok(Bg::new(&c.ctx.bin, &c.root))
}

/// Checks a successful deploy document against the contract; returns its deployment id.
fn check_deploy_doc(
    doc: &Value,
    chain: ChainKind,
    code: &[u8],
    backup_of: Option<&[u8]>,
    c: &Case,
) -> Result<String, String> {
    let id = s(doc, "deployment_id")?.to_owned();
    ensure!(
        is_deployment_id(&id),
        "deployment_id {id:?} is not dep_ + 32 hex"
    );
    ensure!(doc["agent_id"] == AGENT, "agent_id: {doc}");
    ensure!(doc["file_path"] == FILE, "file_path is not {FILE}: {doc}");
    let meta = &doc["meta"];
    ensure!(
        meta["deployment_id"] == id.as_str(),
        "meta.deployment_id differs: {doc}"
    );
    ensure!(meta["status"] == "LIVE", "meta.status is not LIVE: {meta}");
    ensure!(
        meta["sha256"] == sha256_hex(code).as_str(),
        "meta.sha256 is not the code's sha256: {meta}"
    );
    ensure!(
        is_utc_timestamp(s(meta, "timestamp")?),
        "meta.timestamp is not RFC 3339 UTC: {meta}"
    );
    let stages = doc["stages"]
        .as_array()
        .ok_or_else(|| format!("no stages array: {doc}"))?;
    ensure!(!stages.is_empty(), "stages is empty");
    for st in stages {
        ensure!(
            st["stage"].is_string() && st["ok"] == true && st["elapsed_ms"].is_u64(),
            "bad stage entry {st}"
        );
    }
    let verification = doc["verification"]
        .as_array()
        .ok_or_else(|| format!("no verification array: {doc}"))?;
    let names: Vec<&str> = verification
        .iter()
        .filter_map(|v| v["verifier"].as_str())
        .collect();
    ensure!(
        names == chain.verifiers(),
        "verification ran {names:?}, the chain is {:?}",
        chain.verifiers()
    );
    ensure!(
        verification.iter().all(|v| v["passed"] == true
            && v["elapsed_ms"].is_u64()
            && v["diagnostics"].is_array()),
        "verification entries malformed or failed: {verification:?}"
    );
    match backup_of {
        None => ensure!(
            meta["backup_path"].is_null(),
            "first deployment has a backup_path: {meta}"
        ),
        Some(previous) => {
            let path = s(meta, "backup_path")?;
            check_backup_name(path, &id)?;
            expect_bytes(&c.root.join(path), previous, "the previous version")?;
        }
    }
    Ok(id)
}

/// `backups/agents/<agent>/green_<yyyymmddTHHMMSS.mmmZ>_<deployment_id>.py`
fn check_backup_name(path: &str, id: &str) -> Result<(), String> {
    let bad = || format!("backup_path {path:?} does not follow the contract's layout");
    let rest = path
        .strip_prefix(&format!("backups/agents/{AGENT}/green_"))
        .and_then(|r| r.strip_suffix(&format!("_{id}.py")))
        .ok_or_else(bad)?;
    let ok = rest.len() == 20
        && rest.char_indices().all(|(i, ch)| match i {
            8 => ch == 'T',
            15 => ch == '.',
            19 => ch == 'Z',
            _ => ch.is_ascii_digit(),
        });
    ensure!(ok, "{}", bad());
    Ok(())
}

/// The LIVE record of the agent in `status --json`.
pub fn live_record(bg: &Bg) -> Result<Value, String> {
    let status = bg.status()?;
    Ok(status["agents"][AGENT].clone())
}

/// Requires the registry to say `id` is LIVE with `code`, and the target to hold `code`.
pub fn expect_live(bg: &Bg, id: &str, code: &[u8]) -> Result<(), String> {
    let live = live_record(bg)?;
    ensure!(
        live["deployment_id"] == id && live["status"] == "LIVE",
        "status does not show {id} LIVE: {live}"
    );
    ensure!(
        live["sha256"] == sha256_hex(code).as_str(),
        "status sha256 is not the live code's: {live}"
    );
    expect_bytes(&bg.root.join(FILE), code, "the live version")
}

/// The status of deployment `id` in `history`.
pub fn history_status(bg: &Bg, id: &str) -> Result<String, String> {
    let history = bg.history(AGENT)?;
    history
        .iter()
        .find(|d| d["deployment_id"] == id)
        .and_then(|d| d["status"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("history has no deployment {id}"))
}

fn first_and_second(c: &Case, chain: ChainKind) -> Outcome {
    let bg = setup(c, chain, &Settings::default())?;
    let (v1, v2) = (good_code("1"), good_code("2"));
    let d1 = bg.deploy_ok(AGENT, FILE, &v1)?;
    let id1 = check_deploy_doc(&d1, chain, &v1, None, c)?;
    expect_bytes(&c.root.join(FILE), &v1, "v1")?;
    let snaps = snapshot_files(&c.root, AGENT);
    ensure!(
        snaps.is_empty(),
        "the first deployment made snapshots: {snaps:?}"
    );
    let d2 = bg.deploy_ok(AGENT, FILE, &v2)?;
    let id2 = check_deploy_doc(&d2, chain, &v2, Some(&v1), c)?;
    ensure!(
        id2 > id1,
        "deployment ids do not sort by time: {id1} then {id2}"
    );
    expect_bytes(&c.root.join(FILE), &v2, "v2")?;
    expect_no_staged(&c.root)?;

    let live = live_record(&bg)?;
    for key in [
        "deployment_id",
        "timestamp",
        "backup_path",
        "status",
        "sha256",
        "file_path",
    ] {
        ensure!(live.get(key).is_some(), "status lacks {key}: {live}");
    }
    ensure!(live["file_path"] == FILE, "status file_path: {live}");
    ensure!(
        live["backup_path"] == d2["meta"]["backup_path"],
        "status backup_path differs from the deploy's: {live}"
    );
    expect_live(&bg, &id2, &v2)?;

    let history = bg.history(AGENT)?;
    let got: Vec<(&str, &str)> = history
        .iter()
        .map(|d| {
            (
                d["deployment_id"].as_str().unwrap_or("?"),
                d["status"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    ensure!(
        got == [(id2.as_str(), "LIVE"), (id1.as_str(), "SUPERSEDED")],
        "history (newest first) is {got:?}"
    );
    for d in &history {
        ensure!(
            is_utc_timestamp(s(d, "timestamp")?) && d["sha256"].is_string(),
            "history entry malformed: {d}"
        );
    }
    Ok("first + second deployment, status and history agree".into())
}

fn rejection(c: &Case, chain: ChainKind, kind: Reject) -> Outcome {
    let bg = setup(c, chain, &Settings::default())?;
    let v1 = good_code("1");
    let id1 = s(&bg.deploy_ok(AGENT, FILE, &v1)?, "deployment_id")?.to_owned();
    let bad = kind.fixture(&c.ctx.fixtures)?;
    let out = bg.deploy(AGENT, FILE, &bad)?;
    let doc = out.expect(1, &format!("deploy of {}", kind.name()))?;
    ensure!(doc["status"] == "failed", "status is not failed: {doc}");
    let id = s(&doc, "deployment_id")?;
    ensure!(
        doc["meta"]["status"] == "FAILED",
        "meta.status is not FAILED: {doc}"
    );
    let failed: Vec<&Value> = doc["verification"]
        .as_array()
        .map(|v| v.iter().filter(|o| o["passed"] == false).collect())
        .unwrap_or_default();
    ensure!(failed.len() == 1, "expected one failed verifier: {doc}");
    let diagnostic = failed[0]["diagnostics"][0]["message"]
        .as_str()
        .ok_or_else(|| format!("the failed verifier has no diagnostic: {doc}"))?;
    expect_bytes(&c.root.join(FILE), &v1, "v1 (GREEN)")?;
    expect_no_staged(&c.root)?;
    let history = bg.history(AGENT)?;
    ensure!(
        history.first().map(|d| (&d["deployment_id"], &d["status"]))
            == Some((&Value::from(id), &Value::from("FAILED"))),
        "newest history entry is not {id} FAILED: {history:?}"
    );
    expect_live(&bg, &id1, &v1)?;
    let first_line: String = diagnostic
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(90)
        .collect();
    Ok(format!(
        "{} in {} ms: {first_line}",
        failed[0]["verifier"].as_str().unwrap_or("?"),
        out.elapsed.as_millis()
    ))
}

fn rollbacks(c: &Case, chain: ChainKind) -> Outcome {
    let bg = setup(c, chain, &Settings::default())?;
    let v: Vec<Vec<u8>> = (1..=4).map(|i| good_code(&i.to_string())).collect();
    let mut ids = Vec::new();
    for code in &v[..3] {
        ids.push(s(&bg.deploy_ok(AGENT, FILE, code)?, "deployment_id")?.to_owned());
    }
    bg.rollback(AGENT, None)?.expect(0, "rollback 1")?;
    expect_live(&bg, &ids[1], &v[1])?;
    let st = history_status(&bg, &ids[2])?;
    ensure!(
        st == "ROLLED_BACK",
        "v3 is {st} after rollback, not ROLLED_BACK"
    );

    bg.rollback(AGENT, None)?.expect(0, "rollback 2")?;
    expect_live(&bg, &ids[0], &v[0])?;
    let st = history_status(&bg, &ids[1])?;
    ensure!(
        st == "ROLLED_BACK",
        "v2 is {st} after rollback, not ROLLED_BACK"
    );

    let before = super::cli::tree_digest(&c.root);
    let out = bg.rollback(AGENT, None)?;
    let doc = out.expect_error(3, "rollback past the first version")?;
    ensure!(doc["error"].is_string(), "no error message: {doc}");
    let after = super::cli::tree_digest(&c.root);
    ensure!(
        before == after,
        "a refused rollback changed the root: {}",
        super::cli::digest_diff(&before, &after)
    );
    expect_live(&bg, &ids[0], &v[0])?;

    ids.push(s(&bg.deploy_ok(AGENT, FILE, &v[3])?, "deployment_id")?.to_owned());
    bg.rollback(AGENT, Some(&ids[1]))?
        .expect(0, "rollback --to v2")?;
    expect_live(&bg, &ids[1], &v[1])?;
    let st = history_status(&bg, &ids[3])?;
    ensure!(
        st == "ROLLED_BACK",
        "v4 is {st} after rollback --to, not ROLLED_BACK"
    );
    expect_no_staged(&c.root)?;
    Ok("v3→v2→v1, nothing left (exit 3), --to v2".into())
}

fn health(c: &Case, chain: ChainKind) -> Outcome {
    let settings = Settings {
        health: true,
        ..Settings::default()
    };
    let bg = setup(c, chain, &settings)?;
    let v1 = good_code("1");
    let id1 = s(&bg.deploy_ok(AGENT, FILE, &v1)?, "deployment_id")?.to_owned();
    let mut v2 = good_code("2");
    v2.extend_from_slice(b"# E2E_UNHEALTHY: the health probe fails on this version\n");
    let out = bg.deploy(AGENT, FILE, &v2)?;
    let doc = out.expect(1, "deploy of an unhealthy version")?;
    ensure!(doc["status"] == "failed", "status is not failed: {doc}");
    ensure!(
        doc["meta"]["status"] == "ROLLED_BACK",
        "meta.status is not ROLLED_BACK: {doc}"
    );
    let id2 = s(&doc, "deployment_id")?;
    expect_live(&bg, &id1, &v1)?;
    let st = history_status(&bg, id2)?;
    ensure!(st == "ROLLED_BACK", "history shows {st}, not ROLLED_BACK");
    expect_no_staged(&c.root)?;
    Ok(format!("GREEN restored in {} ms", out.elapsed.as_millis()))
}

fn retention(c: &Case, chain: ChainKind) -> Outcome {
    let settings = Settings {
        keep_backups: 3,
        ..Settings::default()
    };
    let bg = setup(c, chain, &settings)?;
    let v: Vec<Vec<u8>> = (1..=10).map(|i| good_code(&i.to_string())).collect();
    let mut ids = Vec::new();
    for code in &v {
        ids.push(s(&bg.deploy_ok(AGENT, FILE, code)?, "deployment_id")?.to_owned());
    }
    let snaps = snapshot_files(&c.root, AGENT);
    ensure!(
        snaps.len() == 3,
        "{} snapshots after 10 deployments with keep_backups = 3: {snaps:?}",
        snaps.len()
    );
    for (step, back) in [(1, 8usize), (2, 7)] {
        bg.rollback(AGENT, None)?
            .expect(0, &format!("rollback {step} after pruning"))?;
        expect_live(&bg, &ids[back], &v[back])?;
        let n = snapshot_files(&c.root, AGENT).len();
        ensure!(
            n <= 3,
            "{n} snapshots after rollback {step} (keep_backups = 3)"
        );
    }
    // Every kept snapshot holds bytes that were live once.
    for snap in snapshot_files(&c.root, AGENT) {
        let bytes = read(&snap)?;
        ensure!(
            v.contains(&bytes),
            "snapshot {} holds unknown bytes",
            snap.display()
        );
    }
    Ok("3 snapshots kept of 9; two rollbacks after pruning".into())
}

#[cfg(test)]
mod tests {
    use super::check_backup_name;

    #[test]
    fn backup_names_follow_the_contract() {
        let id = "dep_01a2178156e97205a4dd69dce63a3aa6";
        let good = format!("backups/agents/alpha/green_20261126T105802.089Z_{id}.py");
        assert!(check_backup_name(&good, id).is_ok());
        let no_millis = format!("backups/agents/alpha/green_20261126T105802Z_{id}.py");
        assert!(check_backup_name(&no_millis, id).is_err());
        let other_agent = format!("backups/agents/beta/green_20261126T105802.089Z_{id}.py");
        assert!(check_backup_name(&other_agent, id).is_err());
    }
}
