//! python-startup on every fixture, in cold and in warm mode: the verdict, the diagnostic,
//! the time taken (timeout + 1 s at most) and the process table afterwards.

mod common;

use std::time::{Duration, Instant};

use bluegreen_core::{Verdict, Verifier};
use bluegreen_verify_process::{StartupOptions, StartupVerifier};
use common::{
    assert_passes_warm, children_of, pid_exists, started_warm_verifier, verifier, wait_until,
    Setup, TIMEOUT,
};

const LOOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks `fixture` in both modes, asserting the time bound, that nothing survives and that
/// both modes agree; returns the verdict (snapshotted by the caller).
async fn check_both_modes(fixture: &str, timeout: Duration) -> serde_json::Value {
    check_both_modes_recording(fixture, timeout, 0).await
}

/// Like [`check_both_modes`], also asserting that the fixture recorded at least
/// `min_recorded` pids in `.pids` (all of which must be gone).
async fn check_both_modes_recording(
    fixture: &str,
    timeout: Duration,
    min_recorded: usize,
) -> serde_json::Value {
    let mut verdicts: Vec<Verdict> = Vec::new();
    for warm in [false, true] {
        let setup = Setup::fixture(fixture);
        let verifier = verifier(warm, timeout);
        let started = Instant::now();
        let verdict = verifier.verify(&setup.req).await;
        let elapsed = started.elapsed();
        assert!(
            elapsed < timeout + Duration::from_secs(1),
            "{fixture} (warm={warm}) took {elapsed:?}"
        );
        if warm {
            assert!(
                verifier.zygote_pid().is_some(),
                "{fixture}: warm mode ran cold"
            );
        }
        if warm {
            setup.assert_no_survivors();
        } else {
            // Cold: the supervisor reaped everything before it exited, and we reaped it.
            setup.assert_no_survivors_within(Duration::ZERO);
        }
        let recorded = std::fs::read_to_string(setup.root().join(".pids")).unwrap_or_default();
        assert!(
            recorded.lines().count() >= min_recorded,
            "{fixture} (warm={warm}) recorded only {recorded:?}"
        );
        verdicts.push(verdict);
    }
    assert_eq!(
        verdicts[0], verdicts[1],
        "{fixture}: cold and warm verdicts differ"
    );
    serde_json::json!({ "passed": verdicts[0].passed, "diagnostics": verdicts[0].diagnostics })
}

macro_rules! fixture_test {
    ($name:ident, $file:literal, $timeout:expr, passed = $passed:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let verdict = check_both_modes($file, $timeout).await;
            assert_eq!(verdict["passed"], $passed, "{verdict:#}");
            insta::assert_json_snapshot!(stringify!($name), verdict);
        }
    };
}

fixture_test!(good_agent, "good_agent.py", TIMEOUT, passed = true);
fixture_test!(
    imports_sibling_from_root,
    "imports_sibling.py",
    TIMEOUT,
    passed = true
);
fixture_test!(
    raises_at_import,
    "raises_at_import.py",
    TIMEOUT,
    passed = false
);
fixture_test!(
    sys_exit_at_import,
    "sys_exit_at_import.py",
    TIMEOUT,
    passed = false
);
fixture_test!(
    infinite_loop_ignoring_sigterm,
    "infinite_loop.py",
    LOOP_TIMEOUT,
    passed = false
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_and_sleep_grandchild() {
    // The check process, its child and the sleeping grandchild record their pids;
    // none may survive, not even as a zombie.
    let verdict = check_both_modes_recording("fork_grandchild.py", TIMEOUT, 3).await;
    assert_eq!(verdict["passed"], true, "{verdict:#}");
    insta::assert_json_snapshot!("fork_and_sleep_grandchild", verdict);
}
fixture_test!(allocates_4gib, "allocates_4gib.py", TIMEOUT, passed = false);
fixture_test!(prints_100mb, "prints_100mb.py", TIMEOUT, passed = true);
fixture_test!(
    missing_entrypoint,
    "missing_entrypoint.py",
    TIMEOUT,
    passed = false
);
fixture_test!(
    entrypoint_wrong_arity,
    "entrypoint_wrong_arity.py",
    TIMEOUT,
    passed = false
);
fixture_test!(
    entrypoint_not_callable,
    "entrypoint_not_callable.py",
    TIMEOUT,
    passed = false
);
fixture_test!(
    large_good_agent,
    "large_good_agent.py",
    TIMEOUT,
    passed = true
);

#[tokio::test]
async fn without_entrypoint_only_the_import_counts() {
    let setup = Setup::fixture("missing_entrypoint.py");
    for warm in [false, true] {
        let verifier = StartupVerifier::new(
            "startup",
            StartupOptions {
                warm,
                ..StartupOptions::default()
            },
        );
        assert_eq!(verifier.verify(&setup.req).await, Verdict::pass());
    }
}

#[tokio::test]
async fn the_agent_sees_the_same_environment_in_both_modes() {
    // The zygote runs with its own allocator settings (zygote.rs, ZYGOTE_ALLOCATOR); neither
    // the agent nor a process it starts may see them.
    let setup = Setup::new(
        r#"import os, subprocess, sys
names = sorted(os.environ)
child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.environ))"],
                       capture_output=True, text=True).stdout.strip()
assert child == repr(names), (child, names)
leaked = [n for n in names if n == "PYTHONMALLOC" or n.startswith("MALLOC_")]
assert not leaked, leaked
with open("env.txt", "a") as out:
    out.write(repr(names) + "\n")

def process_event(event):
    return event
"#,
    );
    for warm in [false, true] {
        let verdict = verifier(warm, TIMEOUT).verify(&setup.req).await;
        assert!(verdict.passed, "warm={warm}: {verdict:?}");
    }
    let seen = std::fs::read_to_string(setup.root().join("env.txt")).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 2, "{seen}");
    assert_eq!(lines[0], lines[1], "cold and warm environments differ");
}

#[tokio::test]
async fn syntax_error_points_into_the_staged_file() {
    let setup = Setup::new("x = 1\n\ndef broken(:\n    pass\n");
    for warm in [false, true] {
        let verdict = verifier(warm, TIMEOUT).verify(&setup.req).await;
        assert!(!verdict.passed);
        assert_eq!(verdict.diagnostics[0].line, 3, "{verdict:?}");
        assert!(
            verdict.diagnostics[0].message.starts_with("SyntaxError"),
            "{verdict:?}"
        );
    }
}

#[tokio::test]
async fn error_in_a_sibling_points_at_the_import_line() {
    let setup = Setup::new("import os\nimport agent_helpers\nagent_helpers.score(None)\n");
    for warm in [false, true] {
        let verdict = verifier(warm, TIMEOUT).verify(&setup.req).await;
        assert!(!verdict.passed);
        let d = &verdict.diagnostics[0];
        assert_eq!(d.line, 3, "{verdict:?}");
        assert_eq!(
            d.message, "AttributeError: 'NoneType' object has no attribute 'get'",
            "{verdict:?}"
        );
    }
}

#[tokio::test]
async fn module_code_runs_fresh_in_every_warm_check() {
    // Each child is forked from a pristine zygote: state from one check never leaks into
    // the next, and the module runs as `alpha` (the target's stem), with cwd = root.
    let code = "import os, sys\n\
                assert __name__ == 'alpha', __name__\n\
                assert os.getcwd() == sys.path[0], (os.getcwd(), sys.path[:2])\n\
                assert not os.path.exists('marker'), 'state leaked'\n\
                open('marker', 'w').close()\n\
                def process_event(e):\n    return e\n";
    let verifier = verifier(true, TIMEOUT);
    for _ in 0..3 {
        let setup = Setup::new(code);
        assert_eq!(verifier.verify(&setup.req).await, Verdict::pass());
        assert!(setup.root().join("marker").exists());
    }
    // No bytecode is written next to the staged file.
    let setup = Setup::fixture("good_agent.py");
    verifier.verify(&setup.req).await;
    assert!(!setup.root().join("services/agents/__pycache__").exists());
}

#[tokio::test]
async fn environment_is_cleared_except_the_allow_list() {
    std::env::set_var("BGVP_SECRET_TOKEN", "hunter2");
    std::env::set_var("BGVP_PASSED", "yes");
    let code = "import os\n\
                assert 'BGVP_SECRET_TOKEN' not in os.environ\n\
                assert os.environ.get('BGVP_PASSED') == 'yes'\n";
    let setup = Setup::new(code);
    for warm in [false, true] {
        let verifier = StartupVerifier::new(
            "startup",
            StartupOptions {
                warm,
                pass_env: vec!["BGVP_PASSED".into()],
                ..StartupOptions::default()
            },
        );
        assert_eq!(verifier.verify(&setup.req).await, Verdict::pass());
    }
}

#[tokio::test]
async fn a_missing_interpreter_fails_with_a_clear_message() {
    let setup = Setup::fixture("good_agent.py");
    for warm in [false, true] {
        let verifier = StartupVerifier::new(
            "startup",
            StartupOptions {
                python: "/nonexistent/python3".into(),
                warm,
                ..StartupOptions::default()
            },
        );
        let verdict = verifier.verify(&setup.req).await;
        assert!(!verdict.passed);
        assert!(
            verdict.diagnostics[0]
                .message
                .starts_with("cannot start python interpreter \"/nonexistent/python3\""),
            "{verdict:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_zygote_falls_back_to_cold_and_restarts() {
    let verifier = verifier(true, TIMEOUT);
    let good = Setup::fixture("good_agent.py");
    let bad = Setup::fixture("raises_at_import.py");
    assert!(verifier.verify(&good.req).await.passed);
    let first = verifier.zygote_pid().expect("zygote running");

    unsafe { libc::kill(first, libc::SIGKILL) };
    wait_until("the zygote is gone", || verifier.zygote_pid().is_none()).await;
    // The restart is rate-limited, so these run cold: same verdicts.
    let cold_bad = verifier.verify(&bad.req).await;
    assert_eq!(cold_bad.diagnostics[0].line, 10);
    assert!(verifier.verify(&good.req).await.passed);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(verifier.verify(&bad.req).await, cold_bad);
    let second = verifier.zygote_pid().expect("zygote restarted");
    assert_ne!(first, second);
    wait_until("the old zygote is reaped", || !pid_exists(first)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zygote_killed_during_a_check_falls_back_to_cold() {
    let verifier = verifier(true, TIMEOUT);
    let warmup = Setup::fixture("good_agent.py");
    assert!(verifier.verify(&warmup.req).await.passed);
    let zygote = verifier.zygote_pid().expect("zygote running");

    // Each import logs itself, then sleeps long enough for the zygote to be killed.
    let slow = Setup::new(
        "import time\nwith open('imports.log', 'a') as log:\n    log.write('import\\n')\n\
         time.sleep(1)\ndef process_event(e):\n    return e\n",
    );
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        unsafe { libc::kill(zygote, libc::SIGKILL) };
    });
    assert_eq!(verifier.verify(&slow.req).await, Verdict::pass());
    killer.await.unwrap();
    // It ran twice: warm until the zygote died, then a complete cold check.
    let log = std::fs::read_to_string(slow.root().join("imports.log")).unwrap();
    assert_eq!(log, "import\nimport\n");
    slow.assert_no_survivors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_verifier_kills_the_zygote() {
    let verifier = verifier(true, TIMEOUT);
    let clone = verifier.clone();
    let setup = Setup::fixture("good_agent.py");
    assert!(clone.verify(&setup.req).await.passed);
    let pid = verifier.zygote_pid().expect("zygote running");
    // The zygote keeps a spare child forked (made right after each check).
    wait_until("a spare child exists", || !children_of(pid).is_empty()).await;
    let children = children_of(pid);
    drop(verifier);
    assert!(pid_exists(pid), "a clone still holds the zygote");
    drop(clone);
    wait_until("the zygote is killed and reaped", || !pid_exists(pid)).await;
    wait_until("its spare child is gone", || {
        children.iter().all(|c| !pid_exists(*c))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_checker_and_its_group_are_killed_as_soon_as_it_reports() {
    // The checker would linger for a second after its report, and its grandchild sleeps for
    // a minute: both must be gone right after the verdict, not after the linger.
    let code = "import os, time\n\
                with open('.pids', 'a') as f:\n    f.write('%d\\n' % os.getpid())\n\
                if os.fork() == 0:\n\
                \x20   with open('.pids', 'a') as f:\n        f.write('%d\\n' % os.getpid())\n\
                \x20   time.sleep(60)\n    os._exit(0)\n\
                time.sleep(0.1)\n\
                def process_event(e):\n    return e\n";
    let (verifier, _zygote) = started_warm_verifier().await;
    let setup = Setup::new(code);
    assert_eq!(verifier.verify(&setup.req).await, Verdict::pass());
    let recorded = std::fs::read_to_string(setup.root().join(".pids")).unwrap();
    assert_eq!(recorded.lines().count(), 2, "{recorded:?}");
    setup.assert_no_survivors_within(Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_that_died_while_waiting_is_replaced_and_the_check_stays_warm() {
    let (verifier, zygote) = started_warm_verifier().await;
    for round in 0..3 {
        wait_until("a spare child exists", || !children_of(zygote).is_empty()).await;
        for spare in children_of(zygote) {
            unsafe { libc::kill(spare, libc::SIGKILL) };
        }
        // Right away (its death may not have been reported yet), and once more later.
        if round == 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_passes_warm(&verifier, zygote, &format!("round {round}")).await;
        assert_eq!(verifier.zygote_pid(), Some(zygote));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_checks_stay_warm_and_leave_one_spare() {
    // Checks arriving faster than a spare prepares get fresh children; none is left over.
    let (verifier, zygote) = started_warm_verifier().await;
    for i in 0..6 {
        assert_passes_warm(&verifier, zygote, &format!("check {i}")).await;
    }
    wait_until("only the spare is left", || children_of(zygote).len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(children_of(zygote).len(), 1, "{:?}", children_of(zygote));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_warm_checks_get_their_own_verdicts() {
    let verifier = verifier(true, TIMEOUT);
    let fixtures = [
        "good_agent.py",
        "raises_at_import.py",
        "missing_entrypoint.py",
        "imports_sibling.py",
    ];
    let setups: Vec<Setup> = fixtures
        .iter()
        .cycle()
        .take(16)
        .map(|f| Setup::fixture(f))
        .collect();
    let verdicts = futures_join_all(setups.iter().map(|s| verifier.verify(&s.req)).collect()).await;
    for (i, verdict) in verdicts.iter().enumerate() {
        let expected = matches!(fixtures[i % 4], "good_agent.py" | "imports_sibling.py");
        assert_eq!(verdict.passed, expected, "{}: {verdict:?}", fixtures[i % 4]);
    }
}

/// A tiny join_all (no futures crate).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futures.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test]
async fn a_forked_copy_that_finishes_the_import_does_not_confuse_the_report() {
    // Both processes finish importing; only the checking one reports. The agent also breaks
    // the modules the report uses.
    let code = "import json, os\n\
                if os.fork() == 0:\n    pass\n\
                json.dumps = None\n\
                os.write = None\n\
                def process_event(e):\n    return e\n";
    for warm in [false, true] {
        let setup = Setup::new(code);
        assert_eq!(
            verifier(warm, TIMEOUT).verify(&setup.req).await,
            Verdict::pass()
        );
        setup.assert_no_survivors();
    }
}

#[tokio::test]
async fn a_flood_on_the_report_channel_fails_alike_in_both_modes() {
    // The agent finds bluegreen's private report pipe and writes 4 MiB into it: memory stays
    // bounded and both modes give the same verdict (the write blocks until the timeout).
    let code = "import os, stat\n\
                for fd in range(3, 64):\n\
                \x20   try:\n\
                \x20       if stat.S_ISFIFO(os.fstat(fd).st_mode):\n\
                \x20           os.write(fd, b'x' * (4 << 20))\n\
                \x20   except OSError:\n\
                \x20       pass\n\
                def process_event(e):\n    return e\n";
    let mut verdicts = Vec::new();
    for warm in [false, true] {
        let setup = Setup::new(code);
        let started = Instant::now();
        let verdict = verifier(warm, LOOP_TIMEOUT).verify(&setup.req).await;
        assert!(started.elapsed() < LOOP_TIMEOUT + Duration::from_secs(1));
        assert!(!verdict.passed, "warm={warm}: {verdict:?}");
        setup.assert_no_survivors();
        verdicts.push(verdict);
    }
    assert_eq!(verdicts[0], verdicts[1]);
}

#[tokio::test]
async fn keyboard_interrupt_and_os_exit_at_import_fail() {
    let cases = [
        ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
        (
            "import os\nos._exit(0)\n",
            "interpreter exited with status 0 before the import finished",
        ),
        (
            "import os\nos._exit(3)\n",
            "interpreter exited with status 3 before the import finished",
        ),
        (
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
            "interpreter killed by signal 9 (SIGKILL)",
        ),
    ];
    for (code, message) in cases {
        let setup = Setup::new(code);
        for warm in [false, true] {
            let verdict = verifier(warm, TIMEOUT).verify(&setup.req).await;
            assert!(!verdict.passed, "{code}");
            assert_eq!(
                verdict.diagnostics[0].message, message,
                "{code} warm={warm}"
            );
        }
    }
}

#[tokio::test]
async fn prestart_starts_the_zygote_before_the_first_check() {
    let setup = Setup::fixture("good_agent.py");
    let cold = verifier(false, TIMEOUT);
    let warm = verifier(true, TIMEOUT);
    assert_eq!(warm.zygote_pid(), None);
    assert!(warm.prestart(setup.root()).await);
    let pid = warm.zygote_pid().expect("zygote running");
    assert!(warm.verify(&setup.req).await.passed);
    assert_eq!(warm.zygote_pid(), Some(pid));
    assert!(!cold.prestart(setup.root()).await);
}

/// The entrypoint check reads a plain function's arity off its code object instead of asking
/// `inspect` (check.py, `_bg_plainly_takes_one_argument`); it must never accept what
/// `inspect.signature(f).bind(x)` refuses. Every signature of up to four parameters from a
/// representative set, plus decorated functions, through a real interpreter.
#[test]
fn the_entrypoint_fast_path_agrees_with_inspect() {
    let check = include_str!("../src/python/check.py");
    let script = format!(
        r#"{check}

import functools, inspect, itertools
params = ["a", "b=1", "*args", "c", "/", "*", "k", "k2=2", "**kw"]
checked = 0
for r in range(5):
    for combo in itertools.permutations(params, r):
        scope = {{}}
        try:
            exec("def f(%s): pass" % ", ".join(combo), scope)
        except SyntaxError:
            continue
        f = scope["f"]
        try:
            inspect.signature(f).bind(object())
            binds = True
        except TypeError:
            binds = False
        assert _bg_plainly_takes_one_argument(f) == binds, combo
        checked += 1

@functools.wraps(lambda a, b: None)
def wrapped(*args, **kwargs):
    pass
assert not _bg_plainly_takes_one_argument(wrapped)
assert not _bg_plainly_takes_one_argument(functools.partial(lambda a, b: None, 1))
assert not _bg_plainly_takes_one_argument(print)
print(checked)
"#
    );
    let out = std::process::Command::new("python3")
        .args(["-I", "-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(checked > 800, "only {checked} signatures checked");
}
