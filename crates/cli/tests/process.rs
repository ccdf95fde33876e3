//! The `voronka` binary as a process: durability under kill -9, graceful shutdown, two
//! servers on one database, and the CLI commands.

use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use voronka_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_voronka");

/// Posts leads with distinct phones from `workers` tasks until `stop` is set or the server
/// goes away; returns the ids of leads whose creation was acknowledged, and any 5xx seen.
async fn storm(
    addr: std::net::SocketAddr,
    token: String,
    workers: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<String>, Vec<u16>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let bad = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (token, acked, bad, stop) = (token.clone(), acked.clone(), bad.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let body = json!({"phone": format!("+79{:02}{:07}", w, i), "name": format!("storm {w}/{i}")});
                    match try_send(addr, json_request(addr, "POST", "/api/v1/leads", Some(&token), Some(&body))).await {
                        Ok(r) if r.status == 201 => acked.lock().unwrap().push(r.json()["id"].as_str().unwrap().to_string()),
                        Ok(r) if r.status >= 500 => bad.lock().unwrap().push(r.status),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    futures_util::future::join_all(tasks).await;
    let a = acked.lock().unwrap().clone();
    let b = bad.lock().unwrap().clone();
    (a, b)
}

async fn assert_all_present(url: &str, acked: &[String]) {
    let token = admin_token(url).await;
    let srv = ServerProcess::start(BIN, url, &[]).await;
    let mut missing = 0;
    for id in acked {
        let r = send(srv.addr, json_request(srv.addr, "GET", &format!("/api/v1/leads/{id}"), Some(&token), None)).await;
        if r.status != 200 {
            missing += 1;
        }
    }
    assert_eq!(missing, 0, "{missing} of {} acknowledged leads are missing", acked.len());
}

#[tokio::test]
async fn kill_9_during_a_write_storm_loses_no_acknowledged_lead() {
    let db = TestDb::new().await;
    let token = admin_token(&db.url).await;
    let mut srv = ServerProcess::start(BIN, &db.url, &[]).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm_task = tokio::spawn(storm(srv.addr, token, 32, stop.clone()));
    // Let a few hundred leads through, then pull the plug mid-storm.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    srv.signal("KILL");
    let _ = srv.child.wait().await;
    let (acked, bad) = storm_task.await.unwrap();
    assert!(bad.is_empty(), "5xx during the storm: {bad:?}");
    assert!(acked.len() > 50, "only {} leads acknowledged before the kill", acked.len());
    assert_all_present(&db.url, &acked).await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_cleanly() {
    let db = TestDb::new().await;
    let token = admin_token(&db.url).await;
    let mut srv = ServerProcess::start(BIN, &db.url, &[]).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm_task = tokio::spawn(storm(srv.addr, token, 16, stop.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    srv.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), srv.child.wait()).await.expect("exits after SIGTERM").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(status.success(), "exit status {status}");
    // The background jobs stopped before the database closed: nothing failed on the way out.
    let log = srv.stderr.lock().unwrap().clone();
    assert!(!log.contains("failed") && !log.contains("closed pool"), "errors during shutdown:\n{log}");
    let (acked, bad) = storm_task.await.unwrap();
    assert!(bad.is_empty(), "5xx during shutdown: {bad:?}");
    assert!(!acked.is_empty());
    assert_all_present(&db.url, &acked).await;
}

#[tokio::test]
async fn two_servers_on_one_database_make_one_lead_per_person() {
    let db = TestDb::new().await;
    let token = admin_token(&db.url).await;
    let a = ServerProcess::start(BIN, &db.url, &[]).await;
    let b = ServerProcess::start(BIN, &db.url, &[]).await;
    let mut pairs = Vec::new();
    for i in 0..40 {
        let phone_a = format!("+7901{:07}", i);
        let phone_b = format!("8 (901) {:03}-{:02}-{:02}", i / 10000, (i / 100) % 100, i % 100);
        let (ra, rb) = tokio::join!(
            send(a.addr, json_request(a.addr, "POST", "/api/v1/leads", Some(&token), Some(&json!({"phone": phone_a})))),
            send(b.addr, json_request(b.addr, "POST", "/api/v1/leads", Some(&token), Some(&json!({"phone": phone_b})))),
        );
        pairs.push((ra, rb));
    }
    let mut ids = HashSet::new();
    for (ra, rb) in &pairs {
        let mut st = [ra.status, rb.status];
        st.sort();
        assert_eq!(st, [200, 201], "{} / {}", ra.text(), rb.text());
        assert_eq!(ra.json()["id"], rb.json()["id"]);
        ids.insert(ra.json()["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 40);
    let page = send(a.addr, json_request(a.addr, "GET", "/api/v1/leads?limit=500", Some(&token), None)).await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 40);
}

fn voronka(args: &[&str], url: &str) -> std::process::Output {
    std::process::Command::new(BIN).args(args).env("VORONKA_DATABASE_URL", url).output().expect("run voronka")
}

#[tokio::test]
async fn cli_commands_print_only_what_they_create() {
    let db = TestDb::new().await;
    let out = voronka(&["migrate"], &db.url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = voronka(&["token", "create", "--name", "site", "--scope", "leads:write"], &db.url);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(token.starts_with("vk_") && token.trim_end().lines().count() == 1, "{token:?}");
    let out = voronka(&["form", "create", "--name", "Лендинг", "--thank-you", "https://site.ru/thanks"], &db.url);
    let form_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(form_key.starts_with("f_"));
    let out = voronka(&["site", "create", "--name", "Сайт", "--origin", "https://site.ru"], &db.url);
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("s_"));
    let bad = voronka(&["token", "create", "--name", "x", "--scope", "root"], &db.url);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope"));

    // The token and the form work against a server on the same database.
    let srv = ServerProcess::start(BIN, &db.url, &[]).await;
    let r =
        send(srv.addr, json_request(srv.addr, "POST", "/api/v1/leads", Some(token.trim()), Some(&json!({"phone": "+79001234567"})))).await;
    assert_eq!(r.status, 201);
    let r = send(srv.addr, json_request(srv.addr, "POST", &format!("/f/{form_key}"), None, Some(&json!({"phone": "+79001234568"})))).await;
    assert_eq!(r.status, 200);
}

#[test]
fn a_database_that_cannot_be_opened_is_a_one_line_error() {
    for url in ["sqlite:///nonexistent-dir/x/voronka.db", "postgres://nobody@127.0.0.1:1/none", "mysql://x@y/z"] {
        let out = voronka(&["migrate"], url);
        assert!(!out.status.success(), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{url}: {err}");
        assert!(lines[0].starts_with("error: "), "{err}");
        let out = std::process::Command::new(BIN).args(["serve", "--database-url", url, "--listen", "127.0.0.1:0"]).output().unwrap();
        assert!(!out.status.success());
    }
}

#[tokio::test]
async fn two_servers_never_assign_one_lead_twice() {
    let db = TestDb::new().await;
    let token = admin_token(&db.url).await;
    // Three managers on duty around the clock.
    for n in 0..3 {
        let out = voronka(
            &["user", "create", "--email", &format!("m{n}@firm.ru"), "--role", "manager", "--level", "senior", "--timezone", "UTC"],
            &db.url,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let hours = serde_json::json!({"hours": {"mon": [["00:00", "24:00"]], "tue": [["00:00", "24:00"]], "wed": [["00:00", "24:00"]], "thu": [["00:00", "24:00"]],
            "fri": [["00:00", "24:00"]], "sat": [["00:00", "24:00"]], "sun": [["00:00", "24:00"]]}, "capacity": 1000});
        let a = ServerProcess::start(BIN, &db.url, &[]).await;
        let r = send(a.addr, json_request(a.addr, "PATCH", &format!("/api/v1/users/{id}"), Some(&token), Some(&hours))).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let a = ServerProcess::start(BIN, &db.url, &[]).await;
    let b = ServerProcess::start(BIN, &db.url, &[]).await;
    // Hot leads through both servers: each becomes sales-ready and is routed by whichever
    // server's worker claims it.
    let mut ids = Vec::new();
    for i in 0..30 {
        let srv = if i % 2 == 0 { &a } else { &b };
        let r = send(
            srv.addr,
            json_request(srv.addr, "POST", "/api/v1/leads", Some(&token), Some(&json!({"phone": format!("+7902{:07}", i)}))),
        )
        .await;
        let id = r.json()["id"].as_str().unwrap().to_string();
        let events: Vec<serde_json::Value> = ["callback_request", "callback_request", "calculator", "calculator", "presentation_request"]
            .iter()
            .map(|k| json!({"type": k}))
            .collect();
        let r =
            send(srv.addr, json_request(srv.addr, "POST", "/api/v1/events", Some(&token), Some(&json!({"lead_id": id, "events": events}))))
                .await;
        assert_eq!(r.status, 202);
        ids.push(id);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = send(a.addr, json_request(a.addr, "GET", "/api/v1/leads?status=assigned&limit=100", Some(&token), None)).await.json();
        if page["items"].as_array().unwrap().len() == ids.len() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut per_owner = std::collections::HashMap::new();
    for id in &ids {
        let l = send(a.addr, json_request(a.addr, "GET", &format!("/api/v1/leads/{id}"), Some(&token), None)).await.json();
        assert_eq!(l["status"], "assigned", "{id} was not assigned");
        *per_owner.entry(l["owner"]["id"].as_str().unwrap().to_string()).or_insert(0) += 1;
        let t = send(a.addr, json_request(a.addr, "GET", &format!("/api/v1/leads/{id}/timeline"), Some(&token), None)).await.json();
        let assigned = t["items"].as_array().unwrap().iter().filter(|i| i["kind"] == "assigned").count();
        assert_eq!(assigned, 1, "{id} assigned {assigned} times");
    }
    assert_eq!(per_owner.len(), 3, "{per_owner:?}");
}

/// The server adds new leads to the search index by itself (SQLite; PostgreSQL's index is
/// kept by the database), and a lead is found by its words before and after.
#[tokio::test]
async fn the_server_indexes_new_leads_for_search() {
    let db = TestDb::new().await;
    let token = admin_token(&db.url).await;
    let srv = ServerProcess::start(BIN, &db.url, &[]).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let body = json!({"phone": format!("+7903{:07}", i), "name": format!("Индекс Клиент{i:02}")});
        let r = send(srv.addr, json_request(srv.addr, "POST", "/api/v1/leads", Some(&token), Some(&body))).await;
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let search = |q: String| {
        let token = token.clone();
        let addr = srv.addr;
        async move {
            let r = send(addr, json_request(addr, "GET", &format!("/api/v1/leads?q={q}"), Some(&token), None)).await;
            r.json()["items"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(search("%D0%BA%D0%BB%D0%B8%D0%B5%D0%BD%D1%8217".into()).await, vec![ids[17].clone()]);
    // Within a few seconds the server has indexed them all (nobody else indexes here).
    let store = voronka_store::Store::open(&voronka_store::StoreConfig::new(&db.url), Arc::new(voronka_domain::SystemClock)).await.unwrap();
    let mut left = i64::MAX;
    for _ in 0..50 {
        left = store.unindexed_leads().await.unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(left, 0, "the server indexes new leads");
    assert_eq!(search("%D0%BA%D0%BB%D0%B8%D0%B5%D0%BD%D1%8217".into()).await, vec![ids[17].clone()]);
    store.close().await;
}

/// `voronka user create --password-stdin`: the password is read from standard input (never
/// from the command line), stored as an argon2id hash, and the user can log in with it; a
/// bad role is one line on stderr and a failing exit.
#[tokio::test]
async fn a_user_created_from_the_command_line_logs_in_with_the_password_from_stdin() {
    use std::io::Write;
    let db = TestDb::new().await;
    let mut child = std::process::Command::new(BIN)
        .args(["user", "create", "--email", "head@firm.ru", "--role", "head_of_sales", "--name", "Нина", "--password-stdin"])
        .env("VORONKA_DATABASE_URL", &db.url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run voronka");
    child.stdin.take().unwrap().write_all(b"long enough secret phrase\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "prints the new user's id: {id:?}");
    let store = voronka_store::Store::open(&voronka_store::StoreConfig::new(&db.url), Arc::new(voronka_domain::SystemClock)).await.unwrap();
    let u = store.check_password("head@firm.ru", "long enough secret phrase").await.unwrap().expect("the password from stdin works");
    assert_eq!((u.id.to_string(), u.role.as_str()), (id, "head_of_sales"));
    assert!(store.check_password("head@firm.ru", "long enough secret phrase\n").await.unwrap().is_none(), "the newline is not part of it");
    store.close().await;
    let out = voronka(&["user", "create", "--email", "x@firm.ru", "--role", "wizard"], &db.url);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("role") && err.trim().lines().count() == 1, "{err}");
}

/// A directory removed when the test ends, passed or failed.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("voronka_{name}_{}_{}", std::process::id(), uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `voronka bench floor-serve`, the SQLite intake floor that `bench intake` measures Voronka
/// against: an answered lead has all of its rows in the database (the lead, its two
/// identities, its arrival event, its score row, its outbox message) and a failed batch none;
/// its counters say what it wrote; a body that is not a lead is refused; the indexes it is
/// told to run without are dropped, and one that does not exist is an error naming it; with
/// `--rows one` it writes one row a lead.
#[tokio::test]
async fn the_intake_floor_writes_every_row_of_an_answered_lead_and_none_of_a_failed_one() {
    let dir = TempDir::new("floor_test");
    let path = dir.0.join("floor.db");
    let url = format!("sqlite://{}", path.display());
    let out = voronka(&["migrate"], &url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = path.to_str().unwrap();

    let out = std::process::Command::new(BIN)
        .args(["bench", "floor-serve", "--database", db, "--rows", "lead", "--without-index", "no_such_index"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_index"), "{}", String::from_utf8_lossy(&out.stderr));

    let srv = ServerProcess::spawn(
        BIN,
        &["bench", "floor-serve", "--database", db, "--rows", "lead", "--without-index", "leads_channel_created"],
    )
    .await;
    let lead = |i: u32| {
        json!({"name": format!("Пол {i}"), "phone": format!("+7901000000{i}"), "email": format!("floor{i}@example.ru"),
               "channel": "web_form", "utm": {"source": "yandex"}})
    };
    for i in 0..3 {
        let r = send(srv.addr, json_request(srv.addr, "POST", "/api/v1/leads", None, Some(&lead(i)))).await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert!(r.json()["id"].as_str().is_some());
    }
    // The same phone again breaks the identities' key: the batch fails and leaves nothing.
    let r = send(srv.addr, json_request(srv.addr, "POST", "/api/v1/leads", None, Some(&lead(1)))).await;
    assert_eq!(r.status, 500, "{}", r.text());
    let bad = send(srv.addr, json_request(srv.addr, "POST", "/api/v1/leads", None, Some(&json!({"name": 5})))).await;
    assert_eq!(bad.status, 422, "{}", bad.text());
    let stats = send(srv.addr, json_request(srv.addr, "GET", "/floor/stats", None, None)).await.json();
    assert_eq!(stats["leads"], 3, "{stats}");
    assert!(stats["fsyncs"].as_u64().unwrap() >= 3, "{stats}");

    let conn = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM leads WHERE channel = 'web_form' AND utm_source = 'yandex'"), 3);
    assert_eq!(count("SELECT count(*) FROM identities"), 6);
    assert_eq!(count("SELECT count(*) FROM events WHERE kind = 'lead_created' AND lead_id IS NOT NULL"), 3);
    assert_eq!(count("SELECT count(*) FROM lead_scores WHERE status = 'new'"), 3);
    assert_eq!(count("SELECT count(*) FROM outbox WHERE topic = 'lead.created'"), 3);
    assert_eq!(count("SELECT count(*) FROM sqlite_master WHERE name = 'leads_channel_created'"), 0);
    assert_eq!(count("SELECT count(*) FROM sqlite_master WHERE name = 'leads_status_created'"), 1);
    drop(conn);
    drop(srv);

    let one = dir.0.join("one.db");
    let srv = ServerProcess::spawn(BIN, &["bench", "floor-serve", "--database", one.to_str().unwrap(), "--rows", "one"]).await;
    for i in 0..2 {
        let r = send(srv.addr, json_request(srv.addr, "POST", "/api/v1/leads", None, Some(&lead(i)))).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let conn = rusqlite::Connection::open(&one).unwrap();
    assert_eq!(
        conn.query_row("SELECT count(*) FROM floor_one WHERE body LIKE '%floor1@example.ru%'", [], |r| r.get::<_, i64>(0)).unwrap(),
        1
    );
    assert_eq!(conn.query_row("SELECT count(*) FROM floor_one", [], |r| r.get::<_, i64>(0)).unwrap(), 2);
}

/// `voronka bench import`'s PostgreSQL floor: it runs beside a small import and says what it
/// measured, without the indexes it is told to drop, and names an index it cannot find.
#[tokio::test]
async fn the_import_floor_runs_without_the_indexes_it_is_told_to_drop() {
    if backend() == "sqlite" {
        return;
    }
    let run = |extra: &[&str]| {
        let mut args = vec!["bench", "import", "--backend", "postgres", "--rows", "300", "--floor-secs", "1"];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(BIN).args(&args).env("VORONKA_BENCH_PG_URL", pg_admin_url()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(&["--floor-without-index", "leads_search_trgm", "--floor-without-index", "identities_lead"]);
    assert!(out.contains("imported 300 rows"), "{out}");
    let floor = out.lines().find(|l| l.contains("the floor:")).unwrap_or_else(|| panic!("no floor in {out}"));
    let rate: f64 = floor.split(" leads/s").next().and_then(|h| h.rsplit(' ').next()).and_then(|r| r.parse().ok()).unwrap();
    assert!(rate >= 100.0, "{floor}");
    assert!(floor.ends_with("without the indexes leads_search_trgm, identities_lead (2 copies dropped)"), "{floor}");
    let out = run(&["--floor-without-index", "no_such_index"]);
    assert!(out.contains("the floor could not be measured") && out.contains("no such index") && out.contains("no_such_index"), "{out}");
    let out = run(&["--floor-without-index", "leads_pkey"]);
    assert!(out.contains("the floor could not be measured") && out.contains("\"leads_pkey\"] are keys"), "{out}");
}

/// `voronka bench import`'s SQLite floor: its one writer alone inserting the rows of as many
/// new leads as the import created, into a fresh database of its own.
#[tokio::test]
async fn the_sqlite_import_floor_writes_as_many_leads_as_the_import_created() {
    if backend() != "sqlite" {
        return;
    }
    let out = std::process::Command::new(BIN).args(["bench", "import", "--backend", "sqlite", "--rows", "300"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let imported = out.lines().find(|l| l.contains("imported 300 rows")).unwrap_or_else(|| panic!("no import in {out}"));
    let created: u64 = imported.split(" created").next().and_then(|h| h.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(created > 200, "{imported}");
    let floor = out.lines().find(|l| l.contains("the floor:")).unwrap_or_else(|| panic!("no floor in {out}"));
    assert!(floor.contains(&format!(": {created} leads in ")), "{floor}");
    let rate: f64 = floor.split(" leads/s").next().and_then(|h| h.rsplit(' ').next()).and_then(|r| r.parse().ok()).unwrap();
    assert!(rate >= 100.0, "{floor}");
}

/// `voronka bench rescore` on a small generated dataset: every model change re-scores every
/// lead (changes of points, which carry the entries over, and changes of what rules match,
/// which read the events or the fields again), then the refresh and the floor.
#[tokio::test]
async fn the_rescore_bench_times_each_kind_of_model_change() {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["bench", "rescore", "--leads", "1500", "--events-per-lead", "4"]);
    if backend() == "sqlite" {
        cmd.args(["--backend", "sqlite"]);
    } else {
        cmd.args(["--backend", "postgres"]).env("VORONKA_BENCH_PG_URL", pg_admin_url());
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let passes: Vec<&str> = out.lines().filter(|l| l.contains("re-score after changing")).collect();
    assert_eq!(passes.len(), 5, "{out}");
    for (i, what) in
        ["points (page_view", "points (company", "starter model's points", "cap (page_view", "cities (Kazan"].iter().enumerate()
    {
        assert!(
            passes[i].contains(what) && passes[i].contains(": 1500 leads in ") && passes[i].contains("(1500 changed)"),
            "{}",
            passes[i]
        );
    }
    assert!(out.lines().any(|l| l.contains("refresh of stored scores") && l.contains(": 1500 leads in ")), "{out}");
    assert!(out.lines().any(|l| l.contains("the floor:") && l.contains("1500 narrow score rows")), "{out}");
}
