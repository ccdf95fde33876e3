//! Shared test harness: a fresh database per test on the backend chosen by
//! `VORONKA_TEST_BACKEND` (`sqlite`, the default, or `postgres`), an app on port 0, and a
//! small HTTP client.

pub mod browser;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::HeaderMap;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use voronka_domain::{Clock, SystemClock};
use voronka_server::{AppConfig, AppState};
use voronka_store::{Store, StoreConfig};

pub fn backend() -> String {
    std::env::var("VORONKA_TEST_BACKEND").unwrap_or_else(|_| "sqlite".into())
}

pub fn pg_admin_url() -> String {
    std::env::var("VORONKA_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test and is removed afterwards.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<TempDir>,
}

pub struct TempDir(pub std::path::PathBuf);

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "voronka_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestDb {
    pub async fn new() -> TestDb {
        match backend().as_str() {
            "sqlite" => {
                let dir = TempDir::new();
                let url = format!("sqlite://{}", dir.0.join("test.db").display());
                TestDb { url, pg_name: None, _dir: Some(dir) }
            }
            "postgres" => {
                static N: AtomicU32 = AtomicU32::new(0);
                let prefix = std::env::var("VORONKA_TEST_PG_PREFIX").unwrap_or_else(|_| "voronka_test".into());
                let name = format!("{prefix}_{}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), rand::random::<u16>());
                let url = voronka_store::provision::create_pg_database(&pg_admin_url(), &name)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL is required for VORONKA_TEST_BACKEND=postgres: {e:#}"));
                TestDb { url, pg_name: Some(name), _dir: None }
            }
            other => panic!("unknown VORONKA_TEST_BACKEND {other:?}"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = pg_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                let _ = rt.block_on(voronka_store::provision::drop_pg_database(&admin, &name));
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Store,
    pub db: TestDb,
    pub token: String,
    pub state: AppState,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppConfig::default(), Arc::new(SystemClock)).await
}

pub async fn spawn_app_with(cfg: AppConfig, clock: Arc<dyn Clock>) -> TestApp {
    spawn_app_with_store(cfg, clock, |s| s).await
}

/// An app whose store is opened with the configuration `store` makes of the default one.
pub async fn spawn_app_with_store(cfg: AppConfig, clock: Arc<dyn Clock>, store: impl FnOnce(StoreConfig) -> StoreConfig) -> TestApp {
    let db = TestDb::new().await;
    let store = Store::open(&store(StoreConfig::new(&db.url)), clock).await.expect("open store");
    let (_, token) = store.create_token("test", &["admin".to_string()]).await.expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = AppState::new(store.clone(), cfg);
    let serving = state.clone();
    tokio::spawn(async move {
        let _ = voronka_server::serve(listener, serving, std::future::pending()).await;
    });
    TestApp { addr, store, db, token, state }
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a new connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Resp { status, headers, body }
}

impl TestApp {
    pub fn req(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        Request::builder().method(method).uri(path).header("host", self.addr.to_string())
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        let mut r = self.req("POST", path).header("content-type", "application/json");
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        send(self.addr, r.body(Full::new(Bytes::from(body.to_string()))).expect("request")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut r = self.req("GET", path);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        send(self.addr, r.body(Full::new(Bytes::new())).expect("request")).await
    }

    /// `POST /api/v1/leads` with the app's admin token.
    pub async fn lead(&self, body: Value) -> Resp {
        self.post_json("/api/v1/leads", Some(&self.token), &body).await
    }

    pub async fn token_with(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.store.create_token("scoped", &scopes).await.expect("token").1
    }

    pub async fn list(&self, query: &str) -> Value {
        let r = self.get(&format!("/api/v1/leads?{query}"), Some(&self.token)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

/// A `voronka serve` child process on a free port.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    /// What the server has written to stderr so far (its warnings and errors).
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Starts `bin serve` on `url` and waits for its `listening on` line.
    pub async fn start(bin: &str, url: &str, extra: &[&str]) -> ServerProcess {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--database-url", url];
        args.extend_from_slice(extra);
        ServerProcess::spawn(bin, &args).await
    }

    /// Starts `bin` with `args` and waits for its `listening on` line.
    pub async fn spawn(bin: &str, args: &[&str]) -> ServerProcess {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(bin)
            .args(args)
            .env("VORONKA_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn voronka serve");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err_lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                eprintln!("[server] {line}");
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .expect("server start timed out")
            .expect("read stdout")
            .expect("server exited before listening");
        let addr = line.strip_prefix("listening on http://").expect("listening line").parse().expect("address");
        ServerProcess { child, addr, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill").success();
        assert!(ok, "kill -{sig} failed");
    }
}

/// A request to `addr` with an optional bearer token and JSON body.
pub fn json_request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Request<Full<Bytes>> {
    let mut r = Request::builder().method(method).uri(path).header("host", addr.to_string());
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(b) => {
            r = r.header("content-type", "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    r.body(Full::new(body)).expect("request")
}

/// Like `send`, but a refused or dropped connection is an `Err`, not a panic.
pub async fn try_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Resp, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Resp { status, headers, body })
}

/// Opens the database at `url` and creates an admin token.
pub async fn admin_token(url: &str) -> String {
    let store = Store::open(&StoreConfig::new(url), Arc::new(SystemClock)).await.expect("open store");
    let (_, token) = store.create_token("test", &["admin".to_string()]).await.expect("token");
    store.close().await;
    token
}

impl TestApp {
    /// A request with a JSON body and the given method and token.
    pub async fn call(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Resp {
        send(self.addr, json_request(self.addr, method, path, Some(token), body)).await
    }

    /// Sends a request without a body.
    pub async fn send_req(&self, b: hyper::http::request::Builder) -> Resp {
        send(self.addr, b.body(Full::new(Bytes::new())).expect("request")).await
    }

    /// A multipart upload with a bearer token: the `file` part and text fields.
    pub async fn upload(&self, path: &str, token: &str, file_name: &str, file: &[u8], fields: &[(&str, &str)]) -> Resp {
        self.multipart(path, &[("authorization", &format!("Bearer {token}"))], file_name, file, fields).await
    }

    /// A multipart upload from a UI session; `csrf` goes in the header htmx sends.
    pub async fn ui_upload(
        &self,
        s: &UiSession,
        path: &str,
        csrf: Option<&str>,
        file_name: &str,
        file: &[u8],
        fields: &[(&str, &str)],
    ) -> Resp {
        let cookie = format!("vk_session={}", s.cookie);
        let mut headers: Vec<(&str, &str)> = vec![("cookie", &cookie), ("hx-request", "true")];
        if let Some(c) = csrf {
            headers.push(("x-csrf-token", c));
        }
        self.multipart(path, &headers, file_name, file, fields).await
    }

    async fn multipart(&self, path: &str, headers: &[(&str, &str)], file_name: &str, file: &[u8], fields: &[(&str, &str)]) -> Resp {
        let boundary = format!("voronka{}", rand::random::<u64>());
        let mut body: Vec<u8> = Vec::new();
        for (k, v) in fields {
            body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes());
        }
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut r = self.req("POST", path).header("content-type", format!("multipart/form-data; boundary={boundary}"));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        send(self.addr, r.body(Full::new(Bytes::from(body))).expect("request")).await
    }

    /// Polls an import until it is no longer running; returns it.
    pub async fn wait_import(&self, id: &str) -> Value {
        for _ in 0..1200 {
            let r = self.get(&format!("/api/v1/imports/{id}"), Some(&self.token)).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            if v["status"] != "running" {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("import {id} did not finish in 60 s");
    }

    /// Handles the outbox (routing) until it is empty.
    pub async fn dispatch(&self) {
        while voronka_server::jobs::dispatch_once(&self.state, "test").await.expect("dispatch") > 0 {}
    }
}

/// A logged-in browser of the web UI: its session cookie and the CSRF token of its pages.
#[derive(Debug, Clone)]
pub struct UiSession {
    pub cookie: String,
    pub csrf: String,
}

/// The value of `name` among the response's `Set-Cookie` headers.
pub fn set_cookie_value(r: &Resp, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|rest| rest.split(';').next().unwrap_or("").to_string()))
}

/// The content of `<meta name="csrf-token">` in a page.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf-token\" content=\"")? + "name=\"csrf-token\" content=\"".len();
    Some(html[at..].split('"').next()?.to_string())
}

pub fn form_body(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).expect("form")
}

impl TestApp {
    /// Creates an active user with a password; returns the user.
    pub async fn user(&self, email: &str, role: &str, password: &str) -> voronka_store::users::User {
        let spec = voronka_store::users::UserSpec {
            email: Some(email.into()),
            name: Some(email.split('@').next().unwrap_or(email).into()),
            role: Some(role.into()),
            password: Some(password.into()),
            lang: Some("en".into()),
            ..Default::default()
        };
        self.store.create_user(&spec).await.expect("user")
    }

    /// Logs in through the login form, as a browser does.
    pub async fn ui_login(&self, email: &str, password: &str) -> UiSession {
        self.try_ui_login(email, password).await.unwrap_or_else(|r| panic!("login failed: {} {}", r.status, r.text()))
    }

    pub async fn try_ui_login(&self, email: &str, password: &str) -> Result<UiSession, Resp> {
        let page = self.get("/login", None).await;
        let login_csrf = set_cookie_value(&page, "vk_login_csrf").expect("login csrf cookie");
        let body = form_body(&[("_csrf", &login_csrf), ("email", email), ("password", password), ("next", "")]);
        let r = send(
            self.addr,
            self.req("POST", "/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", format!("vk_login_csrf={login_csrf}"))
                .body(Full::new(Bytes::from(body)))
                .expect("request"),
        )
        .await;
        let Some(cookie) = set_cookie_value(&r, "vk_session").filter(|c| !c.is_empty()) else { return Err(r) };
        let mut s = UiSession { cookie, csrf: String::new() };
        let inbox = self.ui_get(&s, "/inbox").await;
        assert_eq!(inbox.status, 200, "{}", inbox.text());
        s.csrf = csrf_of(&inbox.text()).expect("csrf meta");
        Ok(s)
    }

    pub async fn ui_get(&self, s: &UiSession, path: &str) -> Resp {
        send(
            self.addr,
            self.req("GET", path).header("cookie", format!("vk_session={}", s.cookie)).body(Full::new(Bytes::new())).expect("request"),
        )
        .await
    }

    /// Posts a form with the session's CSRF token.
    pub async fn ui_post(&self, s: &UiSession, path: &str, fields: &[(&str, &str)]) -> Resp {
        let mut all: Vec<(&str, &str)> = vec![("_csrf", &s.csrf)];
        all.extend_from_slice(fields);
        self.ui_post_raw(s, path, &form_body(&all), &[]).await
    }

    /// Posts a raw urlencoded body with extra headers (for CSRF tests).
    pub async fn ui_post_raw(&self, s: &UiSession, path: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
        let mut r = self
            .req("POST", path)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("vk_session={}", s.cookie));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        send(self.addr, r.body(Full::new(Bytes::from(body.to_string()))).expect("request")).await
    }
}
