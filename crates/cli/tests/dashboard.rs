//! The dashboard in a real browser: headless Chromium driven over WebDriver (fantoccini +
//! chromedriver) against a real `bluegreen serve`, with deployments made by the CLI binary.
//!
//! Needs `chromedriver` and `chromium` (Debian: `apt-get install chromium chromium-driver`;
//! `.ci/run` installs them). Without them the test skips with a message, except under
//! `CI=true`, where it fails. Saves a screenshot to `target/dashboard.png`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_code, Root};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const TOKEN: &str = "dashboard-test-token-0123456789";
const WAIT: Duration = Duration::from_secs(30);

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_chromedriver(path: &Path) -> (Reaped, u16) {
    let port = free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Reaped(child), port)
}

fn start_server(root: &Path) -> (Reaped, SocketAddr) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("bluegreen"))
        .arg("--root")
        .arg(root)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("BLUEGREEN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (Reaped(child), addr)
}

async fn browser(port: u16) -> Client {
    let profile = tempfile::tempdir().unwrap().keep();
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1280,1100".to_owned(),
    ];
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut options = json!({ "args": args });
    if let Some(binary) = find_in_path("chromium") {
        options["binary"] = json!(binary);
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} within {WAIT:?}: {e}"))
}

/// Waits until `script` (a JS expression) is true in the page.
async fn wait_until(client: &Client, script: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = client
            .execute(&format!("return !!({script});"), vec![])
            .await
            .unwrap();
        if value == json!(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not true within {WAIT:?}: {script}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn state(client: &Client) -> String {
    let value = client
        .execute(
            "return document.getElementById('state').dataset.state;",
            vec![],
        )
        .await
        .unwrap();
    value.as_str().unwrap_or_default().to_owned()
}

async fn enter_token(client: &Client, token: &str) {
    let input = wait_for(client, "#token-input").await;
    input.send_keys(token).await.unwrap();
    client
        .find(Locator::Id("token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn deploy(root: &Root, code: &str) {
    root.write("new_alpha.py", code);
    let run = root.run(&[
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "new_alpha.py",
    ]);
    assert_code(&run, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_deployments_shows_diffs_escapes_code_and_rolls_back() {
    let Some(chromedriver) = find_in_path("chromedriver") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromedriver is missing (apt-get install chromium chromium-driver); under CI=true this fails"
        );
        eprintln!("skipping the browser test: chromedriver is not installed");
        return;
    };
    let root = Root::new();
    let (mut server, addr) = start_server(root.path());
    let (_driver, port) = start_chromedriver(&chromedriver);
    let client = browser(port).await;
    let url = format!("http://{addr}/");

    // The page loads without a token and asks for one.
    client.goto(&url).await.unwrap();
    wait_until(
        &client,
        "document.getElementById('state').dataset.state === 'no-token'",
    )
    .await;
    // A wrong token: 401, said so.
    enter_token(&client, "not-the-token").await;
    wait_until(
        &client,
        "document.getElementById('state').dataset.state === 'wrong-token'",
    )
    .await;
    // The right one: live, with the (empty) agents table.
    enter_token(&client, TOKEN).await;
    wait_until(
        &client,
        "document.getElementById('state').dataset.state === 'live'",
    )
    .await;
    let stored = client
        .execute(
            "return [sessionStorage.getItem('bluegreen.token'), document.cookie, location.href];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        stored,
        json!([TOKEN, "", url]),
        "the token is in session storage only"
    );

    // A deployment by the CLI appears without a reload.
    deploy(&root, "def process_event(e):\n    return 1\n");
    let row = wait_for(&client, "#agents tr[data-agent='alpha']").await;
    assert!(row.text().await.unwrap().contains("LIVE"));
    row.click().await.unwrap();
    wait_for(&client, "#history tr[data-deployment]").await;
    deploy(&root, "def process_event(e):\n    return 2\n");
    wait_until(
        &client,
        "document.querySelectorAll('#history tr[data-deployment]').length === 2",
    )
    .await;

    // The diff of the LIVE version against its predecessor.
    client
        .find(Locator::Css("#history tr[data-deployment] .diff-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &client,
        "document.getElementById('diff').textContent.includes('+    return 2')",
    )
    .await;

    // Code that would run if it were parsed as HTML stays text.
    let hostile = "def process_event(e):\n    return \"<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>\"\n";
    deploy(&root, hostile);
    wait_until(
        &client,
        "document.querySelectorAll('#history tr[data-deployment]').length === 3",
    )
    .await;
    client
        .find(Locator::Css("#history tr[data-deployment] .diff-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &client,
        "document.getElementById('diff').textContent.includes('<script>window.__pwned=1</script>')",
    )
    .await;
    let injected = client
        .execute(
            "return [typeof window.__pwned, document.querySelectorAll('#diff script, #diff img').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!(["undefined", 0]));

    let png = client.screenshot().await.unwrap();
    let target = bluegreen_tests::workspace_root().join("target/dashboard.png");
    std::fs::write(&target, &png).unwrap();

    // Roll back from the page (accepting the confirmation): the file on disk changes.
    let before = root.read("agents/alpha.py");
    assert_eq!(before, hostile.as_bytes());
    client
        .find(Locator::Id("rollback"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client.accept_alert().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while root.read("agents/alpha.py") == before {
        assert!(
            Instant::now() < deadline,
            "the rollback did not change the file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        root.read("agents/alpha.py"),
        b"def process_event(e):\n    return 2\n"
    );
    wait_until(&client, "[...document.querySelectorAll('#history .status')].some(s => s.textContent === 'ROLLED_BACK')").await;

    // The server goes away: the page says so (and keeps retrying).
    let _ = server.0.kill();
    let _ = server.0.wait();
    wait_until(
        &client,
        "document.getElementById('state').dataset.state === 'server-gone'",
    )
    .await;
    assert_eq!(state(&client).await, "server-gone");
    client.close().await.unwrap();
}
