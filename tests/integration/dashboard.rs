//! The operators' dashboard in a real browser: Debian's chromium, headless,
//! driven over WebDriver (chromedriver) from this test, against a running
//! `oasis serve`. An operator logs in (a wrong token first), sees the route,
//! starts a canary from the page, watches its share and counters move under
//! scoring traffic, rolls it back with a reason, and finds both in the
//! audit table. Screenshots of each view go to
//! `$CARGO_TARGET_TMPDIR/dashboard-screenshots/`.
//!
//! `scripts/setup` installs `chromium` and `chromium-driver`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use oasis_test_components::{BASELINE, GUARDED_BOOST, PID_PACING};
use serde_json::{Value, json};

use crate::harness::example_body;
use crate::harness::process::ServeProcess;
use crate::harness::server::{atomic_write, digest, install};

const TOKEN: &str = "dashboard-test-token-0123456789abcdef";

/// A chromedriver on a free local port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run scripts/setup (Debian's chromium-driver)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            // What this machine's chromium needs headless, as root, with no
            // network beyond localhost.
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1800", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("cannot start chromium through chromedriver")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// The text of the first element matching `css`, or "" when there is none.
async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Polls the page until `f` holds of the text of `css` (15 s at most).
async fn until(c: &Client, css: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = text(c, css).await;
        if f(&t) {
            return t;
        }
        if Instant::now() > deadline {
            shot(c, "failed").await;
            panic!("the page never showed {what} in `{css}`: {t:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}`: {e}"))
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_runs_a_canary_from_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "base", BASELINE, "");
    install(dir.path(), "p", GUARDED_BOOST, "");
    atomic_write(
        &dir.path().join("routes.toml"),
        b"[routes.radio]\npolicy = \"p\"\nbaseline = \"base\"\n",
    );
    let server = ServeProcess::start(dir.path(), &[], &[("OASIS_ADMIN_TOKEN", TOKEN)]);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/admin/v1/policies/p/versions", server.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/wasm")
        .body(std::fs::read(PID_PACING).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v2 = digest(PID_PACING);

    // Scoring traffic from many listeners, for as long as the test runs.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, http, url) = (stop.clone(), http.clone(), server.url.clone());
        tokio::spawn(async move {
            let mut v: Value = serde_json::from_slice(&example_body()).unwrap();
            v["route"] = "radio".into();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                v["context"]["listener_id"] = format!("listener-{i}").into();
                v["context"]["request_id"] = format!("req-{i}").into();
                let r = http
                    .post(format!("{url}/v1/score"))
                    .json(&v)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            i
        })
    };

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    c.goto(&format!("{}/dashboard", server.url)).await.unwrap();

    // A wrong token is refused, on the page.
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("not-the-token")
        .await
        .unwrap();
    click(&c, "#login-submit").await;
    until(&c, "#login-error", "the refusal", |t| {
        t.contains("token refused")
    })
    .await;
    shot(&c, "0-login-refused").await;

    // The right one shows the route, its stable arm counting requests.
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    click(&c, "#login-submit").await;
    let stable_requests = r#".route[data-route="radio"] tr[data-arm="stable"] td.requests"#;
    until(&c, stable_requests, "stable requests", |t| {
        t.parse::<u64>().is_ok_and(|n| n > 0)
    })
    .await;
    // The page re-renders its tables as it refreshes: a one-shot read can
    // land mid-render and see nothing, so every read of a live table polls.
    until(
        &c,
        r#".route[data-route="radio"]"#,
        "the route's chain",
        |t| t.contains("guarded-boost") && t.contains("baseline"),
    )
    .await;
    until(&c, "#policies", "the uploaded version", |t| {
        t.contains(&v2[7..19])
    })
    .await;
    shot(&c, "1-routes").await;

    // The campaigns the traffic offers: delivery against target (the
    // example request sends its own figures), and the served policy's
    // promotions of its tracks counting up.
    let campaign = r#"#campaigns tr[data-campaign="cmp-mixes"]"#;
    let offered: u64 = until(
        &c,
        &format!("{campaign} td.candidates"),
        "campaign counts",
        |t| t.parse::<u64>().is_ok_and(|n| n > 0),
    )
    .await
    .parse()
    .unwrap();
    until(&c, &format!("{campaign} td.delivered"), "delivered", |t| {
        t == "2,100"
    })
    .await;
    until(&c, &format!("{campaign} td.target"), "the target", |t| {
        t == "8,000"
    })
    .await;
    until(&c, campaign, "the source of `delivered`", |t| {
        t.contains("request")
    })
    .await;
    until(
        &c,
        &format!("{campaign} td.candidates"),
        "more campaign counts",
        |t| t.parse::<u64>().is_ok_and(|n| n > offered),
    )
    .await;
    c.execute(
        "document.getElementById('campaigns').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    shot(&c, "1b-campaigns").await;

    // Start a canary at 50% from the page, confirming it.
    let route = r#".route[data-route="radio"]"#;
    c.find(Locator::Css(&format!("{route} select.canary-version")))
        .await
        .unwrap()
        .select_by_value(&v2)
        .await
        .unwrap();
    let percent = c
        .find(Locator::Css(&format!("{route} input.canary-percent")))
        .await
        .unwrap();
    percent.clear().await.unwrap();
    percent.send_keys("50").await.unwrap();
    click(&c, &format!("{route} button.start-canary")).await;
    until(&c, "#confirm-text", "the confirmation", |t| {
        t.contains("at 50%")
    })
    .await;
    click(&c, "#confirm-ok").await;
    until(&c, &format!("{route} .canary"), "the canary", |t| {
        t.contains("at 50%")
    })
    .await;
    // Its counters move under the traffic.
    let canary_requests = format!(r#"{route} tr[data-arm="canary"] td.requests"#);
    let first: u64 = until(&c, &canary_requests, "canary requests", |t| {
        t.parse::<u64>().is_ok_and(|n| n > 0)
    })
    .await
    .parse()
    .unwrap();
    until(&c, &canary_requests, "more canary requests", |t| {
        t.parse::<u64>().is_ok_and(|n| n > first)
    })
    .await;
    until(
        &c,
        &format!(r#"{route} tr[data-arm="canary"] td.promoted"#),
        "the canary's promoted share",
        |t| t.ends_with('%'),
    )
    .await;
    c.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    shot(&c, "2-canary-under-load").await;

    // Roll it back with a reason: the canary is gone and the audit says so.
    click(&c, &format!("{route} button.rollback")).await;
    until(&c, "#confirm-text", "the confirmation", |t| {
        t.contains("roll back radio")
    })
    .await;
    c.find(Locator::Css("#confirm-reason"))
        .await
        .unwrap()
        .send_keys("browser test: looked wrong")
        .await
        .unwrap();
    click(&c, "#confirm-ok").await;
    until(&c, "#audit tbody", "the rollback in the audit", |t| {
        t.contains("rollback") && t.contains("browser test: looked wrong")
    })
    .await;
    until(&c, "#audit tbody", "the canary in the audit", |t| {
        t.contains("canary.set")
    })
    .await;
    assert_eq!(
        text(&c, &format!("{route} .canary")).await,
        "",
        "the canary is gone"
    );
    shot(&c, "3-rolled-back").await;

    stop.store(true, Ordering::Relaxed);
    assert!(load.await.unwrap() > 0);
    c.close().await.unwrap();
}
