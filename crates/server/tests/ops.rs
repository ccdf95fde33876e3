//! Operations endpoints and the OpenAPI document.

use serde_json::json;
use voronka_testkit::*;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.get("/healthz", None).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ready");
    // With the database gone, the process is alive but not ready.
    app.store.close().await;
    assert_eq!(app.get("/healthz", None).await.status, 200);
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, 503);
}

/// Once the intake can no longer acknowledge anything, `/readyz` says so (a load balancer
/// then stops sending leads there) and every later submission is refused. On SQLite a
/// failed flush of the log stops it: the flushing thread opens the log by name, so with
/// the file gone its next flush fails. PostgreSQL's commits are PostgreSQL's to flush (a
/// failed one is that batch's error); its intake stops only with the process.
#[tokio::test]
async fn readiness_fails_once_the_intake_can_acknowledge_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.lead(json!({"phone": "+79001234567"})).await.status, 201);
    assert_eq!(app.get("/readyz", None).await.status, 200);
    if backend() != "sqlite" {
        assert!(app.store.intake().is_running());
        return;
    }
    let path = app.db.url.strip_prefix("sqlite://").expect("a SQLite URL");
    std::fs::remove_file(format!("{path}-wal")).expect("remove the WAL");
    let r = app.lead(json!({"phone": "+79001234568"})).await;
    assert_eq!(r.status, 503, "a lead whose flush failed is not acknowledged: {}", r.text());
    let r = app.get("/readyz", None).await;
    assert_eq!((r.status, r.json()), (503, json!({"status": "unavailable", "reason": "intake_stopped"})));
    assert!(!app.store.intake().is_running());
    // The process stays alive, and refuses every later lead.
    assert_eq!(app.get("/healthz", None).await.status, 200);
    let r = app.lead(json!({"phone": "+79001234569"})).await;
    assert_eq!(r.status, 503, "{}", r.text());
}

/// Closing the store copies SQLite's log into the database file and empties it, so that
/// the file alone holds every write: a copy of just the file has every lead. PostgreSQL
/// keeps its own files.
#[tokio::test]
async fn closing_leaves_the_sqlite_file_whole() {
    let app = spawn_app().await;
    for i in 0..50 {
        assert_eq!(app.lead(json!({"phone": format!("+7900123{i:04}")})).await.status, 201);
    }
    app.store.close().await;
    if backend() != "sqlite" {
        return;
    }
    let path = app.db.url.strip_prefix("sqlite://").expect("a SQLite URL").to_string();
    let wal = std::fs::metadata(format!("{path}-wal")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal, 0, "the log still holds {wal} bytes after close");
    let copy = format!("{path}.copy");
    std::fs::copy(&path, &copy).expect("copy the file alone");
    let c = rusqlite::Connection::open(&copy).expect("open the copy");
    let n: i64 = c.query_row("SELECT COUNT(*) FROM leads", [], |r| r.get(0)).expect("count");
    assert_eq!(n, 50, "a copy of the database file alone lacks leads");
}

#[tokio::test]
async fn metrics_count_requests_and_intake_outcomes() {
    let app = spawn_app().await;
    app.lead(json!({"phone": "+79001234567"})).await;
    app.lead(json!({"phone": "+79001234567"})).await;
    app.lead(json!({"name": "x"})).await;
    let text = app.get("/metrics", None).await.text();
    assert!(text.contains("intake_outcomes_total{endpoint=\"api\",outcome=\"created\"}"), "{text}");
    assert!(text.contains("outcome=\"repeat\""));
    assert!(text.contains("outcome=\"contact_required\""));
    assert!(text.contains("http_requests_total{"));
    assert!(text.contains("route=\"/api/v1/leads\""));
    assert!(text.contains("http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn the_openapi_document_describes_the_api() {
    let app = spawn_app().await;
    let r = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/api/v1/leads", "/api/v1/leads/{id}", "/api/v1/leads/{id}/timeline", "/healthz", "/readyz"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["paths"]["/api/v1/leads"]["post"]["responses"].get("422").is_some());
    assert!(doc["components"]["schemas"].get("Lead").is_some());
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let r = app.get("/nope", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = send(app.addr, app.req("DELETE", "/healthz").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap()).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
}

/// A lease is exclusive until it runs out or its holder gives it up; given up, any holder
/// takes it at once (the vacuum job releases its lease after each pass, so a restarted
/// server does not wait out its earlier self's ten minutes).
#[tokio::test]
async fn a_released_lease_is_free_at_once() {
    let app = spawn_app().await;
    let ttl = chrono::Duration::minutes(10);
    assert!(app.store.try_lease("job", "a", ttl).await.unwrap());
    assert!(!app.store.try_lease("job", "b", ttl).await.unwrap(), "held by a");
    assert!(app.store.try_lease("job", "a", ttl).await.unwrap(), "renewed by its holder");
    app.store.release_lease("job", "b").await.unwrap();
    assert!(!app.store.try_lease("job", "b", ttl).await.unwrap(), "only the holder releases it");
    app.store.release_lease("job", "a").await.unwrap();
    assert!(app.store.try_lease("job", "b", ttl).await.unwrap(), "free once released");
    assert!(!app.store.try_lease("job", "a", ttl).await.unwrap(), "now held by b");
}

/// With autovacuum off (here for one table; on this project's machines for the whole
/// server), the upkeep vacuums the tables whose dead or newly inserted rows pass autovacuum's own thresholds,
/// and leaves the others alone. SQLite needs no vacuuming.
#[tokio::test]
async fn tables_are_vacuumed_when_autovacuum_is_off() {
    let app = spawn_app().await;
    for i in 0..3 {
        assert_eq!(app.lead(json!({"phone": format!("+7900111223{i}")})).await.status, 201);
    }
    if backend() == "sqlite" {
        assert_eq!(app.store.vacuum_neglected().await.unwrap(), Vec::<String>::new());
        return;
    }
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&app.db.url).await.expect("connect");
    sqlx::raw_sql("ALTER TABLE job_leases SET (autovacuum_enabled = false)").execute(&mut c).await.expect("alter");
    // 1,500 rows inserted since the last vacuum: over 1,000 + 20 % of them. (Dead rows of
    // a small table are mostly pruned by the updates themselves, so they make a poor test.)
    sqlx::raw_sql("INSERT INTO job_leases (name, holder, until) SELECT 'test' || g, 'test', now() FROM generate_series(1, 1500) g")
        .execute(&mut c)
        .await
        .expect("insert");
    drop(c);
    let last_vacuum = || async {
        let mut c = sqlx::PgConnection::connect(&app.db.url).await.expect("connect");
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'job_leases'",
        )
        .fetch_one(&mut c)
        .await
        .expect("stats")
    };
    assert_eq!(last_vacuum().await, None);
    // The statistics reach the collector within seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let vacuumed = loop {
        let v = app.store.vacuum_neglected().await.expect("vacuum");
        if v.iter().any(|t| t == "public.job_leases") || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert!(vacuumed.iter().any(|t| t == "public.job_leases"), "{vacuumed:?}");
    assert!(last_vacuum().await.is_some());
    // Once vacuumed, it is not taken again.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let again = app.store.vacuum_neglected().await.expect("vacuum");
    assert!(!again.iter().any(|t| t == "public.job_leases"), "{again:?}");
}

/// On PostgreSQL, the trigram index of the search text is merged in the background after
/// every thousand new leads, not by the intake transaction whose insert finds its pending list
/// full; the leads stay findable. On SQLite the search index is filled by bookkeeping anyway,
/// and there is nothing to merge.
#[tokio::test]
async fn the_search_index_is_merged_in_the_background_as_leads_arrive() {
    let app = spawn_app().await;
    for chunk in (0..1_050).collect::<Vec<u32>>().chunks(50) {
        let futs = chunk.iter().map(|i| app.lead(json!({"name": format!("Очистка {i:04}"), "phone": format!("+7901{i:07}")})));
        for r in futures_util::future::join_all(futs).await {
            assert_eq!(r.status, 201, "{}", r.text());
        }
    }
    let cleanings = || async {
        let text = app.get("/metrics", None).await.text();
        text.lines().find_map(|l| l.strip_prefix("search_index_cleanings_total ").and_then(|v| v.trim().parse::<f64>().ok()))
    };
    if backend() == "postgres" {
        let mut n = None;
        for _ in 0..100 {
            n = cleanings().await;
            if n.is_some_and(|n| n >= 1.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(n.is_some_and(|n| n >= 1.0), "no merge of the pending list after 1,050 leads: {n:?}");
        let text = app.get("/metrics", None).await.text();
        let pages = text
            .lines()
            .find_map(|l| l.strip_prefix("search_index_pending_pages_merged_total ").and_then(|v| v.trim().parse::<f64>().ok()));
        assert!(pages.is_some_and(|p| p > 0.0), "no pending pages merged: {pages:?}");
    } else {
        assert_eq!(cleanings().await, None);
    }
    let page = app.list("q=%D0%BE%D1%87%D0%B8%D1%81%D1%82%D0%BA%D0%B0%201037").await;
    let names: Vec<&str> = page["items"].as_array().unwrap().iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names, vec!["Очистка 1037"]);
}
