//! A real browser for UI tests: Debian's `chromium` driven through `chromedriver`
//! (WebDriver) with fantoccini. Each test starts its own driver on a free port and its own
//! profile, so tests run side by side. Screenshots go to `artifacts/screenshots/`
//! (or `$VORONKA_ARTIFACTS/screenshots/`) and are kept after the run.

use crate::TempDir;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use fantoccini;

fn find(candidates: &[&str], what: &str) -> String {
    for c in candidates {
        if std::path::Path::new(c).exists() {
            return c.to_string();
        }
    }
    panic!("{what} is required for the browser tests (Debian packages chromium and chromium-driver; scripts/test installs them)");
}

/// Where screenshots of this run are kept.
pub fn artifacts_dir() -> PathBuf {
    let base = match std::env::var("VORONKA_ARTIFACTS") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../artifacts"),
    };
    let dir = base.join("screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    _profile: TempDir,
    /// Prefix of this test's screenshots.
    pub name: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with the given `Accept-Language`.
    pub async fn start(name: &str, accept_language: &str) -> Browser {
        let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"], "Chromium");
        let chromedriver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"], "ChromeDriver");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = TempDir::new();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                    "--disable-dev-shm-usage", "--disable-extensions", "--disable-component-update", "--disable-sync",
                    "--window-size=2400,1300", format!("--user-data-dir={}", profile.0.display()),
                ],
                "prefs": {"intl.accept_languages": accept_language},
            }
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("could not start a browser session: {e}"),
            }
        };
        Browser { client, driver, _profile: profile, name: name.to_string() }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Waits for an element (10 s at most).
    pub async fn el(&self, css: &str) -> fantoccini::elements::Element {
        self.client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default()
    }

    pub async fn text(&self, css: &str) -> String {
        self.el(css).await.text().await.unwrap_or_default()
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.map(|v| v.len()).unwrap_or(0)
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.el(css).await;
        e.clear().await.ok();
        e.send_keys(value).await.unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    pub async fn click(&self, css: &str) {
        self.el(css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.el(css).await.select_by_value(value).await.unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
    }

    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Waits until `script` returns true (10 s at most).
    pub async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.client.execute(script, vec![]).await.ok().and_then(|v| v.as_bool()) == Some(true) {
                return;
            }
            if Instant::now() > deadline {
                self.shot(&format!("timeout-{}", what.replace(' ', "-"))).await;
                panic!("timed out waiting for {what} on {}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot as `NAME-what.png` among the artifacts.
    pub async fn shot(&self, what: &str) {
        match self.client.screenshot().await {
            Ok(png) => {
                let path = artifacts_dir().join(format!("{}-{what}.png", self.name));
                std::fs::write(&path, png).expect("write screenshot");
            }
            Err(e) => eprintln!("screenshot {what} failed: {e}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}
