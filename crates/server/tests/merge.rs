//! Merge and unmerge of two leads (unmerge gives back the original two leads with their own
//! history), and the unsorted inbox: a channel that needs triage, accept, decline, link.

use serde_json::{Value, json};
use voronka_testkit::{TestApp, spawn_app};

async fn lead(app: &TestApp, body: Value) -> String {
    let r = app.lead(body).await;
    assert!(r.status == 201, "{}", r.text());
    r.json()["id"].as_str().expect("id").to_string()
}

async fn get(app: &TestApp, path: &str) -> Value {
    let r = app.get(path, Some(&app.token)).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app.post_json(path, Some(&app.token), &body).await;
    let v = if r.body.is_empty() { Value::Null } else { r.json() };
    (r.status, v)
}

/// A lead as compared before and after: everything but when it was last touched.
async fn state(app: &TestApp, id: &str) -> (Value, Vec<(String, String, String)>, Vec<String>, Value) {
    let mut l = get(app, &format!("/api/v1/leads/{id}")).await;
    l.as_object_mut().expect("object").remove("updated_at");
    let tl = get(app, &format!("/api/v1/leads/{id}/timeline?limit=200")).await;
    let events: Vec<(String, String, String)> = tl["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| !matches!(i["kind"].as_str(), Some("merged" | "merged_into" | "unmerged")))
        .map(|i| (i["at"].to_string(), i["kind"].to_string(), i["data"].to_string()))
        .collect();
    let tasks = get(app, &format!("/api/v1/leads/{id}/tasks")).await;
    let mut task_ids: Vec<String> = tasks.as_array().expect("tasks").iter().filter_map(|t| t["id"].as_str().map(str::to_string)).collect();
    task_ids.sort();
    let score = get(app, &format!("/api/v1/leads/{id}/score")).await;
    (l, events, task_ids, score["score"].clone())
}

#[tokio::test]
async fn merge_then_unmerge_gives_back_the_original_two_leads() {
    let app = spawn_app().await;
    // A chat first (e-mail only), then a call (phone only): one person, two leads.
    let a = lead(&app, json!({"name": "Анна Чатова", "email": "anna@example.ru", "channel": "chat", "message": "Хочу узнать цены"})).await;
    let b = lead(&app, json!({"phone": "8 (921) 555-77-88", "company": "ООО Ромашка", "position": "Директор", "channel": "call"})).await;
    // Each has its own history: behaviour, an activity, a task, a repeat request.
    let r = app.post_json("/api/v1/events", Some(&app.token), &json!({"lead_id": b, "events": [{"type": "page_view", "url": "https://site.example/prices"}, {"type": "video_view", "name": "tour"}]})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = app
        .post_json("/api/v1/events", Some(&app.token), &json!({"lead_id": a, "events": [{"type": "download", "name": "catalog"}]}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let (s, _) = post(
        &app,
        &format!("/api/v1/leads/{b}/activities"),
        json!({"kind": "call", "direction": "out", "duration_seconds": 60, "result": "перезвонить"}),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = post(&app, &format!("/api/v1/leads/{b}/tasks"), json!({"kind": "call", "title": "Перезвонить Ромашке"})).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = post(&app, &format!("/api/v1/leads/{a}/tasks"), json!({"kind": "email", "title": "Отправить прайс"})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(app.lead(json!({"phone": "+79215557788"})).await.status, 200, "a repeat request on b");

    let before_a = state(&app, &a).await;
    let before_b = state(&app, &b).await;
    assert_eq!(before_b.0["repeat_count"], 1);

    // Merge b into a.
    let (s, m) = post(&app, &format!("/api/v1/leads/{a}/merge"), json!({"merged_id": b})).await;
    assert_eq!(s, 200, "{m}");
    let merge_id = m["merge"]["id"].as_str().expect("merge id").to_string();
    let survivor = &m["lead"];
    assert_eq!(survivor["email"], "anna@example.ru");
    assert_eq!(survivor["phone"], "+79215557788", "the survivor took the other's phone");
    assert_eq!(survivor["company"], "ООО Ромашка");
    assert_eq!(survivor["name"], "Анна Чатова", "its own values stay");
    assert_eq!(survivor["repeat_count"], 2, "the other's request and its repeat count");
    let merged = get(&app, &format!("/api/v1/leads/{b}")).await;
    assert_eq!(merged["status"], "junk");
    assert_eq!(merged["status_reason"], "duplicate");
    let during_a = state(&app, &a).await;
    for e in &before_b.1 {
        assert!(during_a.1.contains(e), "b's event {e:?} did not move to a");
    }
    assert_eq!(during_a.2.len(), 2, "both tasks are a's now");
    assert!(
        during_a.3.as_f64().unwrap_or(0.0) > before_a.3.as_f64().unwrap_or(0.0),
        "a's score counts b's behaviour: {} → {}",
        before_a.3,
        during_a.3
    );
    // The phone now finds a; the merge log shows what happened.
    let r = app.get("/api/v1/leads?q=89215557788", Some(&app.token)).await.json();
    let found: Vec<&str> = r["items"].as_array().expect("items").iter().filter_map(|l| l["id"].as_str()).collect();
    assert!(found.contains(&a.as_str()), "{found:?}");
    let log = get(&app, &format!("/api/v1/leads/{b}/merges")).await;
    assert_eq!(log[0]["survivor_id"], a.as_str());
    assert!(log[0]["undone_at"].is_null());
    // Refusals: into itself, twice, a converted lead.
    let (s, v) = post(&app, &format!("/api/v1/leads/{a}/merge"), json!({"merged_id": a})).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"]["fields"]["merged_id"].is_string());
    let (s, v) = post(&app, &format!("/api/v1/leads/{a}/merge"), json!({"merged_id": b})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "already_merged");
    let (s, v) = post(&app, &format!("/api/v1/leads/{a}/merge"), json!({"merged_id": "nope"})).await;
    assert_eq!(s, 422, "{v}");

    // Unmerge: both leads as they were.
    let (s, u) = post(&app, &format!("/api/v1/merges/{merge_id}/undo"), json!({})).await;
    assert_eq!(s, 200, "{u}");
    assert!(u["undone_at"].is_string());
    let after_a = state(&app, &a).await;
    let after_b = state(&app, &b).await;
    assert_eq!(after_a.0, before_a.0, "lead a differs after unmerge");
    assert_eq!(after_b.0, before_b.0, "lead b differs after unmerge");
    assert_eq!(after_a.1, before_a.1, "a's timeline differs after unmerge");
    assert_eq!(after_b.1, before_b.1, "b's timeline differs after unmerge");
    assert_eq!(after_a.2, before_a.2, "a's tasks differ");
    assert_eq!(after_b.2, before_b.2, "b's tasks differ");
    assert_eq!(after_a.3, before_a.3, "a's score differs");
    assert_eq!(after_b.3, before_b.3, "b's score differs");
    // The phone belongs to b again: a new request with it is b's repeat request.
    let r = app.lead(json!({"phone": "+7 921 555 77 88"})).await;
    assert_eq!(r.json()["id"], b.as_str());
    let (s, v) = post(&app, &format!("/api/v1/merges/{merge_id}/undo"), json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "already_unmerged");

    // A converted lead is not merged.
    let c = lead(&app, json!({"name": "Клиент", "email": "client@example.ru"})).await;
    let (s, v) = post(&app, &format!("/api/v1/leads/{c}/convert"), json!({"contact": {}, "deal": {"title": "Сделка"}})).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = post(&app, &format!("/api/v1/leads/{a}/merge"), json!({"merged_id": c})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "merge_converted");
}

#[tokio::test]
async fn unsorted_inbox_accept_decline_and_link() {
    let app = spawn_app().await;
    let r = app.call("PATCH", "/api/v1/channels/chat", &app.token, Some(&json!({"needs_triage": true}))).await;
    let (s, v) = (r.status, r.json());
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["needs_triage"], true);
    assert_eq!(app.call("PATCH", "/api/v1/channels/pigeon", &app.token, Some(&json!({"needs_triage": true}))).await.status, 404);

    let existing = lead(&app, json!({"name": "Постоянный", "phone": "+79210000001", "channel": "web_form"})).await;
    let t1 = lead(&app, json!({"name": "Чат 1", "email": "one@example.ru", "channel": "chat"})).await;
    let t2 = lead(&app, json!({"name": "Чат 2", "email": "two@example.ru", "channel": "chat"})).await;
    let t3 = lead(&app, json!({"name": "Чат 3", "messenger": "@three", "channel": "chat"})).await;
    let list = get(&app, "/api/v1/triage").await;
    let ids: Vec<&str> = list.as_array().expect("list").iter().filter_map(|l| l["id"].as_str()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids.contains(&existing.as_str()), "a web-form lead needs no triage");

    // Accept: out of the inbox, into the workflow (routed like a new lead).
    let (s, v) = post(&app, &format!("/api/v1/leads/{t1}/triage"), json!({"action": "accept"})).await;
    assert_eq!(s, 200, "{v}");
    let topics = app.store.outbox_topics().await.expect("topics");
    assert!(topics.iter().any(|t| t == "lead.accepted"), "{topics:?}");
    let (s, v) = post(&app, &format!("/api/v1/leads/{t1}/triage"), json!({"action": "accept"})).await;
    assert_eq!(s, 409, "accepted twice: {v}");
    assert_eq!(v["error"]["code"], "not_in_triage");

    // Decline: junk with a reason from the list.
    let (s, v) = post(&app, &format!("/api/v1/leads/{t2}/triage"), json!({"action": "decline"})).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "reason_required");
    let (s, v) = post(&app, &format!("/api/v1/leads/{t2}/triage"), json!({"action": "decline", "reason": "spam"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "junk");
    assert_eq!(v["status_reason"], "spam");

    // Link: the request belongs to the person's existing lead.
    let (s, v) = post(&app, &format!("/api/v1/leads/{t3}/triage"), json!({"action": "link"})).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"]["fields"]["lead_id"].is_string());
    let (s, v) = post(&app, &format!("/api/v1/leads/{t3}/triage"), json!({"action": "link", "lead_id": existing})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], existing.as_str());
    assert_eq!(v["messenger"], "telegram:three");
    let linked = get(&app, &format!("/api/v1/leads/{t3}")).await;
    assert_eq!(linked["status"], "junk");
    assert_eq!(linked["status_reason"], "duplicate");
    let (s, v) = post(&app, &format!("/api/v1/leads/{t3}/triage"), json!({"action": "shred"})).await;
    assert_eq!(s, 422, "{v}");

    let timeline = get(&app, &format!("/api/v1/leads/{t1}/timeline")).await;
    assert!(timeline["items"].as_array().expect("items").iter().any(|i| i["kind"] == "triage_accepted"));
    assert!(get(&app, "/api/v1/triage").await.as_array().expect("list").is_empty());
    let channels = get(&app, "/api/v1/channels").await;
    assert!(channels.as_array().expect("channels").iter().any(|c| c["code"] == "chat" && c["needs_triage"] == true));
}

/// Sets a lead's stored score row to nothing (as a re-score that failed after a merge would
/// leave it: the score from before the merge).
async fn spoil_score(app: &TestApp, id: &str) {
    let sql = format!("UPDATE lead_scores SET score = 0, priority = 0, profile = 0, ledger = '\\x01'::bytea WHERE lead_id = '{id}'");
    if voronka_testkit::backend() == "sqlite" {
        // SQLite keeps UUIDs as 16-byte blobs.
        let c = rusqlite::Connection::open(app.db.url.trim_start_matches("sqlite://")).expect("open");
        let blob = uuid::Uuid::parse_str(id).expect("uuid");
        let n = c
            .execute(
                "UPDATE lead_scores SET score = 0, priority = 0, profile = 0, ledger = X'01' WHERE lead_id = ?1",
                [blob.as_bytes().as_slice()],
            )
            .expect("update");
        assert_eq!(n, 1);
    } else {
        let pg = sqlx::PgPool::connect(&app.db.url).await.expect("connect");
        let n = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pg).await.expect("update").rows_affected();
        assert_eq!(n, 1);
        pg.close().await;
    }
}

/// What a score shows, but for the dates of its entries (a lead scored whole dates the profile
/// entries it had no earlier date for at its arrival).
fn points(score: &Value) -> (Value, Value, Value, Value, Vec<(String, String)>) {
    let mut entries: Vec<(String, String)> =
        score["explanation"].as_array().expect("explanation").iter().map(|e| (e["rule"].to_string(), e["earned"].to_string())).collect();
    entries.sort();
    (score["score"].clone(), score["priority"].clone(), score["temperature"].clone(), score["grade"].clone(), entries)
}

/// The merge re-scores both leads at once, and also queues a `lead.rescore` message for each
/// in its transaction: a score the immediate re-score failed to write is put right by the
/// dispatcher, after the merge and after its undo.
#[tokio::test]
async fn a_merge_queues_a_rescore_that_puts_a_stale_score_right() {
    let app = spawn_app().await;
    let a = lead(&app, json!({"name": "Олег Дубль", "email": "oleg@example.ru", "position": "Директор"})).await;
    let b = lead(&app, json!({"phone": "+79217770011", "company": "ООО Дубль"})).await;
    let r = app
        .post_json(
            "/api/v1/events",
            Some(&app.token),
            &json!({"lead_id": b, "events": [{"type": "video_view", "name": "tour"}, {"type": "download", "name": "price"}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    app.dispatch().await;
    let (s, m) = post(&app, &format!("/api/v1/leads/{a}/merge"), json!({"merged_id": b})).await;
    assert_eq!(s, 200, "{m}");
    let merged = get(&app, &format!("/api/v1/leads/{a}/score")).await;
    assert!(merged["score"].as_f64().expect("score") > 0.0, "{merged}");

    spoil_score(&app, &a).await;
    let spoiled = get(&app, &format!("/api/v1/leads/{a}/score")).await;
    assert_ne!(spoiled["score"], merged["score"], "the score row was not spoiled: {spoiled}");
    app.dispatch().await;
    assert_eq!(
        points(&get(&app, &format!("/api/v1/leads/{a}/score")).await),
        points(&merged),
        "the lead.rescore message did not re-score the survivor"
    );

    // The undo queues the same for both leads.
    let merge_id = m["merge"]["id"].as_str().expect("merge id").to_string();
    let (s, u) = post(&app, &format!("/api/v1/merges/{merge_id}/undo"), json!({})).await;
    assert_eq!(s, 200, "{u}");
    let back = get(&app, &format!("/api/v1/leads/{b}/score")).await;
    spoil_score(&app, &b).await;
    app.dispatch().await;
    assert_eq!(points(&get(&app, &format!("/api/v1/leads/{b}/score")).await), points(&back));
}
