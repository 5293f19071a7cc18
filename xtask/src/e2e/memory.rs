//! Store "memory": scenarios 1–4 and 9 through the library with `MemoryStore`, in this
//! process. The CLI always uses the file store, so this is where the library allows it.
//! The chains are built from the same verifier crates the CLI wires up.

use std::path::Path;
use std::time::Duration;

use bluegreen_core::util::sha256_hex;
use bluegreen_core::{
    BlueGreenService, Chain, DeployOutcome, ErrorKind, Limits, MemoryStore, Status, Store,
};
use bluegreen_verify_process::{ScriptOptions, ScriptVerifier, StartupOptions, StartupVerifier};
use bluegreen_verify_syntax::{Engine, SyntaxOptions, SyntaxVerifier};

use super::cli::{ensure, expect_bytes, expect_no_staged};
use super::config::{good_code, ChainKind, Reject, Settings, SCRIPT_TIMEOUT_SECS};
use super::scenarios::{AGENT, FILE};
use super::{Case, Outcome, Row};

pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for chain in ChainKind::ALL {
        let config = format!("memory/{}", chain.name());
        rows.push(Row::run("1 deploy", &config, move |c| {
            in_runtime(|| first_and_second(c, chain))
        }));
        for kind in Reject::ALL {
            let scenario = format!("2 reject/{}", kind.name());
            rows.push(if chain.detects(kind) {
                Row::run(scenario, &config, move |c| {
                    in_runtime(|| rejection(c, chain, kind))
                })
            } else {
                Row::not_applicable(
                    scenario,
                    &config,
                    format!("chain {} cannot detect {}", chain.name(), kind.name()),
                )
            });
        }
        rows.push(Row::run("3 rollback", &config, move |c| {
            in_runtime(|| rollbacks(c, chain))
        }));
        rows.push(Row::run("4 health", &config, move |c| {
            in_runtime(|| health(c, chain))
        }));
        rows.push(Row::run("9 retention", &config, move |c| {
            in_runtime(|| retention(c, chain))
        }));
    }
    rows
}

/// Runs an async scenario on a fresh runtime (dropped, with any zygote, at the end).
fn in_runtime<F, Fut>(f: F) -> Outcome
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(f())
}

fn script(
    fixtures: &Path,
    name: &str,
    file: &str,
    placeholder: &str,
) -> Result<ScriptVerifier, String> {
    ScriptVerifier::new(
        name,
        ScriptOptions {
            command: vec![
                "python3".into(),
                fixtures.join(file).display().to_string(),
                placeholder.into(),
            ],
            timeout: Duration::from_secs(SCRIPT_TIMEOUT_SECS),
            ..ScriptOptions::default()
        },
    )
    .map_err(|e| format!("script verifier: {e}"))
}

/// The library equivalent of `config::toml`.
fn service(
    c: &Case<'_>,
    chain: ChainKind,
    settings: &Settings,
) -> Result<(BlueGreenService, MemoryStore), String> {
    let mut verifiers = Chain::new();
    for name in chain.verifiers() {
        verifiers = match *name {
            "syntax" => verifiers.with(SyntaxVerifier::new(
                "syntax",
                SyntaxOptions {
                    engine: if chain == ChainKind::SyntaxTreeSitter {
                        Engine::TreeSitter
                    } else {
                        Engine::Ruff
                    },
                    ..SyntaxOptions::default()
                },
            )),
            "startup" => verifiers.with(StartupVerifier::new(
                "startup",
                StartupOptions {
                    entrypoint: Some("process_event".into()),
                    timeout: Duration::from_secs(settings.startup_timeout_secs),
                    warm: chain.warm(),
                    ..StartupOptions::default()
                },
            )),
            "script" => verifiers.with(script(
                &c.ctx.fixtures,
                "script",
                "script_check.py",
                "{staged}",
            )?),
            other => return Err(format!("no verifier {other}")),
        };
    }
    let store = MemoryStore::new();
    let mut builder = BlueGreenService::builder(&c.root)
        .store(store.clone())
        .chain(verifiers)
        .limits(Limits {
            keep_backups: settings.keep_backups,
            max_code_bytes: settings.max_code_bytes,
            ..Limits::default()
        });
    if settings.health {
        builder = builder.health_chain(Chain::new().with(script(
            &c.ctx.fixtures,
            "health",
            "health_check.py",
            "{target}",
        )?));
    }
    let service = builder
        .build()
        .map_err(|e| format!("building the service: {e}"))?;
    Ok((service, store))
}

async fn deploy_live(
    svc: &BlueGreenService,
    code: &[u8],
) -> Result<bluegreen_core::DeployReport, String> {
    let report = svc
        .deploy_hot_swap(AGENT, code, FILE)
        .await
        .map_err(|e| format!("deploy: {e}"))?;
    ensure!(
        report.outcome == DeployOutcome::Live,
        "deploy was {:?}: {:?}",
        report.outcome,
        report.error
    );
    Ok(report)
}

fn expect_live(c: &Case<'_>, svc: &BlueGreenService, id: &str, code: &[u8]) -> Result<(), String> {
    let active = svc.active_versions().map_err(|e| e.to_string())?;
    let live = active
        .get(AGENT)
        .ok_or_else(|| format!("no active version of {AGENT}"))?;
    ensure!(
        live.deployment_id.as_str() == id && live.status == Status::Live,
        "active version is {} {}, expected {id} LIVE",
        live.deployment_id,
        live.status
    );
    ensure!(
        live.sha256 == sha256_hex(code),
        "active version {id} has sha256 {}, the code expected live has {}; history: {}",
        short(&live.sha256),
        short(&sha256_hex(code)),
        history_line(svc)
    );
    expect_bytes(&c.root.join(FILE), code, "the live version")
}

fn short(sha: &str) -> &str {
    &sha[..8.min(sha.len())]
}

/// The agent's history in one line (oldest first), for failure messages.
fn history_line(svc: &BlueGreenService) -> String {
    let mut history = svc.history(AGENT).unwrap_or_default();
    history.reverse();
    history
        .iter()
        .map(|d| {
            format!(
                "{} {} sha {} backup {}",
                &d.deployment_id.as_str()[d.deployment_id.as_str().len().saturating_sub(6)..],
                d.status,
                short(&d.sha256),
                d.backup_path.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn status_of(svc: &BlueGreenService, id: &str) -> Result<Status, String> {
    svc.history(AGENT)
        .map_err(|e| e.to_string())?
        .iter()
        .find(|d| d.deployment_id.as_str() == id)
        .map(|d| d.status)
        .ok_or_else(|| format!("history has no {id}"))
}

async fn first_and_second(c: &Case<'_>, chain: ChainKind) -> Outcome {
    let (svc, store) = service(c, chain, &Settings::default())?;
    let (v1, v2) = (good_code("1"), good_code("2"));
    let r1 = deploy_live(&svc, &v1).await?;
    ensure!(
        r1.meta.backup_path.is_none(),
        "first deployment has a backup"
    );
    ensure!(
        r1.verification
            .iter()
            .map(|v| v.verifier.as_str())
            .collect::<Vec<_>>()
            == chain.verifiers(),
        "verification ran {:?}",
        r1.verification
    );
    let r2 = deploy_live(&svc, &v2).await?;
    let backup = r2
        .meta
        .backup_path
        .clone()
        .ok_or("second deployment has no backup")?;
    let held = store.read_backup(&backup).map_err(|e| e.to_string())?;
    ensure!(
        held.as_deref() == Some(&v1[..]),
        "the backup does not hold v1"
    );
    ensure!(
        !c.root.join("backups").exists() && !c.root.join(".bluegreen").exists(),
        "a memory store wrote state into the root"
    );
    expect_live(c, &svc, r2.deployment_id.as_str(), &v2)?;
    let history: Vec<(String, Status)> = svc
        .history(AGENT)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|d| (d.deployment_id.to_string(), d.status))
        .collect();
    ensure!(
        history
            == [
                (r2.deployment_id.to_string(), Status::Live),
                (r1.deployment_id.to_string(), Status::Superseded)
            ],
        "history is {history:?}"
    );
    expect_no_staged(&c.root)?;
    Ok("first + second deployment; backup in the memory store".into())
}

async fn rejection(c: &Case<'_>, chain: ChainKind, kind: Reject) -> Outcome {
    let (svc, _store) = service(c, chain, &Settings::default())?;
    let v1 = good_code("1");
    let r1 = deploy_live(&svc, &v1).await?;
    let bad = kind.fixture(&c.ctx.fixtures)?;
    let report = svc
        .deploy_hot_swap(AGENT, &bad, FILE)
        .await
        .map_err(|e| format!("deploy: {e}"))?;
    ensure!(
        report.outcome == DeployOutcome::Rejected,
        "{} was {:?}",
        kind.name(),
        report.outcome
    );
    let failed = report
        .verification
        .iter()
        .find(|v| !v.passed)
        .ok_or("no failed verifier")?;
    ensure!(
        !failed.diagnostics.is_empty(),
        "the failed verifier has no diagnostic"
    );
    expect_bytes(&c.root.join(FILE), &v1, "v1 (GREEN)")?;
    expect_no_staged(&c.root)?;
    let st = status_of(&svc, report.deployment_id.as_str())?;
    ensure!(st == Status::Failed, "history shows {st}, not FAILED");
    expect_live(c, &svc, r1.deployment_id.as_str(), &v1)?;
    let first: String = failed.diagnostics[0]
        .message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(90)
        .collect();
    Ok(format!("{}: {first}", failed.verifier))
}

async fn rollbacks(c: &Case<'_>, chain: ChainKind) -> Outcome {
    let (svc, _store) = service(c, chain, &Settings::default())?;
    let v: Vec<Vec<u8>> = (1..=4).map(|i| good_code(&i.to_string())).collect();
    let mut ids = Vec::new();
    for code in &v[..3] {
        ids.push(deploy_live(&svc, code).await?.deployment_id.to_string());
    }
    for (step, back) in [(1, 1usize), (2, 0)] {
        svc.rollback(AGENT, None, None)
            .await
            .map_err(|e| format!("rollback {step}: {e}"))?;
        expect_live(c, &svc, &ids[back], &v[back])?;
        let st = status_of(&svc, &ids[back + 1])?;
        ensure!(st == Status::RolledBack, "after rollback {step}: {st}");
    }
    match svc.rollback(AGENT, None, None).await {
        Ok(_) => return Err("a rollback past the first version succeeded".into()),
        Err(e) => ensure!(
            e.kind() == ErrorKind::Conflict,
            "nothing to roll back is {:?}: {e}",
            e.kind()
        ),
    }
    expect_live(c, &svc, &ids[0], &v[0])?;
    ids.push(deploy_live(&svc, &v[3]).await?.deployment_id.to_string());
    svc.rollback(AGENT, None, Some(&ids[1]))
        .await
        .map_err(|e| format!("rollback --to: {e}"))?;
    expect_live(c, &svc, &ids[1], &v[1])?;
    expect_no_staged(&c.root)?;
    Ok("v3→v2→v1, nothing left (Conflict), --to v2".into())
}

async fn health(c: &Case<'_>, chain: ChainKind) -> Outcome {
    let settings = Settings {
        health: true,
        ..Settings::default()
    };
    let (svc, _store) = service(c, chain, &settings)?;
    let v1 = good_code("1");
    let r1 = deploy_live(&svc, &v1).await?;
    let mut v2 = good_code("2");
    v2.extend_from_slice(b"# E2E_UNHEALTHY\n");
    let report = svc
        .deploy_hot_swap(AGENT, &v2, FILE)
        .await
        .map_err(|e| format!("deploy: {e}"))?;
    ensure!(
        report.outcome == DeployOutcome::RolledBack,
        "an unhealthy version ended {:?}",
        report.outcome
    );
    expect_live(c, &svc, r1.deployment_id.as_str(), &v1)?;
    let st = status_of(&svc, report.deployment_id.as_str())?;
    ensure!(st == Status::RolledBack, "history shows {st}");
    expect_no_staged(&c.root)?;
    Ok("GREEN restored".into())
}

async fn retention(c: &Case<'_>, chain: ChainKind) -> Outcome {
    let settings = Settings {
        keep_backups: 3,
        ..Settings::default()
    };
    let (svc, store) = service(c, chain, &settings)?;
    let v: Vec<Vec<u8>> = (1..=10).map(|i| good_code(&i.to_string())).collect();
    let mut ids = Vec::new();
    for code in &v {
        ids.push(deploy_live(&svc, code).await?.deployment_id.to_string());
    }
    let agent = bluegreen_core::AgentId::new(AGENT).map_err(|e| e.to_string())?;
    let count = || {
        store
            .list_backups(&agent)
            .map(|b| b.len())
            .unwrap_or(usize::MAX)
    };
    ensure!(
        count() == 3,
        "{} snapshots kept with keep_backups = 3",
        count()
    );
    for (step, back) in [(1, 8usize), (2, 7)] {
        svc.rollback(AGENT, None, None)
            .await
            .map_err(|e| format!("rollback {step} after pruning: {e}"))?;
        expect_live(c, &svc, &ids[back], &v[back])?;
        ensure!(count() <= 3, "{} snapshots after rollback {step}", count());
    }
    Ok("3 snapshots kept of 9; two rollbacks after pruning".into())
}
