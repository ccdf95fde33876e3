//! The sales workflow over the API: users and access, the state machine, routing by duty
//! schedule and seniority, the queue, SLA escalation, tasks and activities, field audit,
//! completeness and scripts, conversion.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;
use voronka_domain::TestClock;
use voronka_domain::schedule::WeekHours;
use voronka_server::AppConfig;
use voronka_store::users::UserSpec;
use voronka_testkit::*;

/// Monday 2027-03-01, 10:00 in Moscow.
const MONDAY_10_MSK: &str = "2027-03-01T07:00:00Z";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn app_at(t: &str) -> (TestApp, TestClock) {
    let clock = TestClock::new(at(t));
    (spawn_app_with(AppConfig::default(), Arc::new(clock.clone())).await, clock)
}

struct Person {
    id: Uuid,
    token: String,
}

async fn person(app: &TestApp, email: &str, role: &str, level: &str, team: Option<Uuid>, hours: Option<WeekHours>) -> Person {
    let spec = UserSpec {
        email: Some(email.into()),
        name: Some(email.split('@').next().unwrap().into()),
        role: Some(role.into()),
        level: Some(level.into()),
        team_id: team,
        hours,
        timezone: Some("Europe/Moscow".into()),
        ..Default::default()
    };
    let u = app.store.create_user(&spec).await.unwrap();
    let scopes = if role == "admin" { vec!["admin".to_string()] } else { vec!["leads:read".to_string(), "leads:write".to_string()] };
    let (_, token) = app.store.create_user_token(u.id, "t", &scopes).await.unwrap();
    Person { id: u.id, token }
}

async fn lead(app: &TestApp, phone: &str) -> String {
    let r = app.lead(json!({"phone": phone, "name": "Клиент"})).await;
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// A lead that reaches the sales-ready threshold (and so is routed).
async fn hot_lead(app: &TestApp, phone: &str) -> String {
    let id = lead(app, phone).await;
    let events: Vec<Value> = ["callback_request", "callback_request", "calculator", "calculator", "presentation_request"]
        .iter()
        .map(|k| json!({"type": k}))
        .collect();
    let r = app.post_json("/api/v1/events", Some(&app.token), &json!({"lead_id": id, "events": events})).await;
    assert_eq!(r.status, 202);
    id
}

async fn owner(app: &TestApp, id: &str) -> Option<String> {
    app.get(&format!("/api/v1/leads/{id}"), Some(&app.token)).await.json()["owner"]["id"].as_str().map(String::from)
}

#[tokio::test]
async fn hot_leads_go_to_a_senior_manager_on_duty_with_a_deadline() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let junior = person(&app, "junior@firm.ru", "manager", "junior", None, None).await;
    let senior = person(&app, "senior@firm.ru", "manager", "senior", None, None).await;
    let id = hot_lead(&app, "+79005550001").await;
    app.dispatch().await;
    let l = app.get(&format!("/api/v1/leads/{id}"), Some(&app.token)).await.json();
    assert_eq!(l["owner"]["id"], senior.id.to_string());
    assert_eq!(l["status"], "assigned");
    // A cold lead is not routed automatically; a junior gets it when assigned by hand.
    let cold = lead(&app, "+79005550002").await;
    app.dispatch().await;
    assert_eq!(owner(&app, &cold).await, None);
    let t = app.get(&format!("/api/v1/leads/{id}/timeline"), Some(&app.token)).await.json();
    let assigned = t["items"].as_array().unwrap().iter().find(|i| i["kind"] == "assigned").unwrap();
    assert_eq!(assigned["actor"], "routing");
    // Hot web-form lead: 15 working minutes.
    assert!(assigned["data"]["deadline"].as_str().unwrap().starts_with("2027-03-01T07:15:00"));
    let n = app.call("GET", "/api/v1/notifications", &senior.token, None).await.json();
    assert_eq!(n[0]["kind"], "lead_assigned");
    let _ = junior;
}

#[tokio::test]
async fn round_robin_shares_leads_evenly() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(person(&app, &format!("s{n}@firm.ru"), "manager", "senior", None, None).await.id.to_string());
    }
    for i in 0..12 {
        hot_lead(&app, &format!("+7900556{:04}", i)).await;
        app.dispatch().await;
    }
    let mut counts = std::collections::HashMap::new();
    let page = app.list("limit=100").await;
    for l in page["items"].as_array().unwrap() {
        *counts.entry(l["owner"]["id"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|c| *c == 4), "{counts:?}");
}

#[tokio::test]
async fn nobody_on_duty_queues_the_lead_and_it_is_assigned_when_a_shift_starts() {
    // Monday 07:00 Moscow: before office hours.
    let (app, clock) = app_at("2027-03-01T04:00:00Z").await;
    let head = person(&app, "head@firm.ru", "head_of_sales", "senior", None, None).await;
    let m = person(&app, "m@firm.ru", "manager", "senior", None, None).await;
    let id = hot_lead(&app, "+79005550100").await;
    app.dispatch().await;
    assert_eq!(owner(&app, &id).await, None);
    let q = app.call("GET", "/api/v1/queue", &head.token, None).await.json();
    assert_eq!(q.as_array().unwrap().len(), 1);
    let n = app.call("GET", "/api/v1/notifications", &head.token, None).await.json();
    assert_eq!(n[0]["kind"], "lead_queued");
    // Still early: nothing moves.
    clock.set(at("2027-03-01T05:30:00Z"));
    voronka_server::jobs::timers_once(&app.state).await.unwrap();
    assert_eq!(owner(&app, &id).await, None);
    // 09:00 Moscow: the shift starts and the queue is drained.
    clock.set(at("2027-03-01T06:00:00Z"));
    let (assigned, _) = voronka_server::jobs::timers_once(&app.state).await.unwrap();
    assert_eq!(assigned, 1);
    assert_eq!(owner(&app, &id).await, Some(m.id.to_string()));
    assert_eq!(app.call("GET", "/api/v1/queue", &head.token, None).await.json().as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn vacations_and_night_shifts_decide_who_is_on_duty() {
    // Tuesday 03:00 Moscow.
    let (app, _) = app_at("2027-03-02T00:00:00Z").await;
    let night = WeekHours { mon: vec![["22:00".into(), "06:00".into()]], ..Default::default() };
    // Created first, the one on vacation would win every tie if vacations were ignored.
    let away = person(
        &app,
        "away@firm.ru",
        "manager",
        "senior",
        None,
        Some(WeekHours { tue: vec![["00:00".into(), "23:59".into()]], ..Default::default() }),
    )
    .await;
    let owl = person(&app, "owl@firm.ru", "manager", "senior", None, Some(night)).await;
    let _day = person(&app, "day@firm.ru", "manager", "senior", None, None).await;
    app.store
        .update_user(away.id, &UserSpec { vacations: Some(vec![["2027-03-01".into(), "2027-03-05".into()]]), ..Default::default() })
        .await
        .unwrap();
    let id = hot_lead(&app, "+79005550200").await;
    app.dispatch().await;
    assert_eq!(owner(&app, &id).await, Some(owl.id.to_string()), "only the night shift of Monday is on duty");
}

#[tokio::test]
async fn an_untouched_lead_escalates_exactly_at_its_deadline() {
    let (app, clock) = app_at(MONDAY_10_MSK).await;
    let head = person(&app, "head@firm.ru", "head_of_sales", "senior", None, None).await;
    let a = person(&app, "a@firm.ru", "manager", "senior", None, None).await;
    let b = person(&app, "b@firm.ru", "manager", "senior", None, None).await;
    let id = hot_lead(&app, "+79005550300").await;
    app.dispatch().await;
    let first = owner(&app, &id).await.unwrap();
    let (first_tok, other) = if first == a.id.to_string() { (&a.token, b.id) } else { (&b.token, a.id) };
    // One second before the deadline nothing happens.
    clock.advance(Duration::minutes(15) - Duration::seconds(1));
    let (_, escalated) = voronka_server::jobs::timers_once(&app.state).await.unwrap();
    assert_eq!(escalated, 0);
    clock.advance(Duration::seconds(1));
    let (_, escalated) = voronka_server::jobs::timers_once(&app.state).await.unwrap();
    assert_eq!(escalated, 1);
    assert_eq!(owner(&app, &id).await, Some(other.to_string()));
    assert_eq!(app.store.escalations().await.unwrap().len(), 1);
    let n = app.call("GET", "/api/v1/notifications", &head.token, None).await.json();
    assert!(n.as_array().unwrap().iter().any(|x| x["kind"] == "lead_escalated"));
    // The former owner no longer sees it.
    assert_eq!(app.call("GET", &format!("/api/v1/leads/{id}"), first_tok, None).await.status, 404);
    // A touch by the new owner stops the clock.
    let new_tok = if other == a.id { &a.token } else { &b.token };
    let r = app
        .call(
            "POST",
            &format!("/api/v1/leads/{id}/activities"),
            new_tok,
            Some(&json!({"kind": "call", "direction": "out", "duration_seconds": 95, "result": "interested"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["status"], "in_progress");
    clock.advance(Duration::hours(5));
    assert_eq!(voronka_server::jobs::timers_once(&app.state).await.unwrap().1, 0);
}

#[tokio::test]
async fn deadlines_count_working_hours_only() {
    // Friday 17:55 Moscow.
    let (app, clock) = app_at("2027-03-05T14:55:00Z").await;
    let _a = person(
        &app,
        "a@firm.ru",
        "manager",
        "senior",
        None,
        Some(WeekHours { fri: vec![["09:00".into(), "23:00".into()]], mon: vec![["09:00".into(), "18:00".into()]], ..Default::default() }),
    )
    .await;
    let id = hot_lead(&app, "+79005550400").await;
    app.dispatch().await;
    assert!(owner(&app, &id).await.is_some());
    // 5 minutes left on Friday, 10 on Monday morning: due Monday 09:10 Moscow.
    clock.set(at("2027-03-08T06:09:00Z"));
    assert_eq!(voronka_server::jobs::timers_once(&app.state).await.unwrap().1, 0);
    clock.set(at("2027-03-08T06:10:00Z"));
    let escalations = app.store.escalate_due().await.unwrap();
    assert_eq!(escalations.len(), 1, "the deadline is Monday 09:10");
    assert_eq!(escalations[0].to_user, None, "nobody else to give it to: the heads are told");
}

#[tokio::test]
async fn a_manager_never_sees_another_managers_lead() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let a = person(&app, "a@firm.ru", "manager", "junior", None, None).await;
    let b = person(&app, "b@firm.ru", "manager", "junior", None, None).await;
    let admin_tok = app.token.clone();
    let mine = lead(&app, "+79005550500").await;
    let theirs = lead(&app, "+79005550501").await;
    let their_double = lead(&app, "+79005550503").await;
    let their_client = lead(&app, "+79005550504").await;
    for (id, who) in [(&mine, a.id), (&theirs, b.id), (&their_double, b.id), (&their_client, b.id)] {
        let r = app.call("POST", &format!("/api/v1/leads/{id}/assign"), &admin_tok, Some(&json!({"user_id": who}))).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // B's lead has a merge to undo and B's client a contact.
    let r = app.call("POST", &format!("/api/v1/leads/{theirs}/merge"), &admin_tok, Some(&json!({"merged_id": their_double}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let merge_id = r.json()["merge"]["id"].as_str().unwrap().to_string();
    let r = app.call("POST", &format!("/api/v1/leads/{their_client}/convert"), &admin_tok, Some(&json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let contact_id = r.json()["contact_id"].as_str().unwrap().to_string();
    let r = app
        .call("POST", &format!("/api/v1/leads/{theirs}/tasks"), &admin_tok, Some(&json!({"kind": "call", "title": "перезвонить"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let task_id = r.json()["id"].as_str().unwrap().to_string();
    let tok = &a.token;
    let body = |v: Value| Some(v);
    let probes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/api/v1/leads/{theirs}"), None),
        ("PATCH", format!("/api/v1/leads/{theirs}"), body(json!({"name": "x"}))),
        ("GET", format!("/api/v1/leads/{theirs}/timeline"), None),
        ("GET", format!("/api/v1/leads/{theirs}/score"), None),
        ("GET", format!("/api/v1/leads/{theirs}/card"), None),
        ("GET", format!("/api/v1/leads/{theirs}/tasks"), None),
        ("POST", format!("/api/v1/leads/{theirs}/tasks"), body(json!({"kind": "call", "title": "x"}))),
        ("POST", format!("/api/v1/leads/{theirs}/status"), body(json!({"status": "in_progress"}))),
        ("POST", format!("/api/v1/leads/{theirs}/activities"), body(json!({"kind": "note", "text": "x"}))),
        ("POST", format!("/api/v1/leads/{theirs}/convert"), body(json!({}))),
        ("POST", "/api/v1/events".to_string(), body(json!({"lead_id": theirs, "events": [{"type": "page_view"}]}))),
        ("POST", format!("/api/v1/leads/{theirs}/assign"), body(json!({"user_id": a.id}))),
        ("POST", format!("/api/v1/leads/{theirs}/merge"), body(json!({"merged_id": mine}))),
        ("GET", format!("/api/v1/leads/{theirs}/merges"), None),
        ("POST", format!("/api/v1/merges/{merge_id}/undo"), None),
        ("POST", format!("/api/v1/leads/{theirs}/triage"), body(json!({"action": "accept"}))),
        ("POST", format!("/api/v1/leads/{theirs}/triage"), body(json!({"action": "decline", "reason": "spam"}))),
        ("GET", format!("/api/v1/leads/{their_client}"), None),
        ("GET", format!("/api/v1/contacts/{contact_id}"), None),
        ("GET", format!("/api/v1/contacts/{contact_id}/timeline"), None),
        ("POST", format!("/api/v1/tasks/{task_id}/complete"), body(json!({"result": "x"}))),
    ];
    for (method, path, b) in &probes {
        let r = app.call(method, path, tok, b.as_ref()).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
    }
    // Naming B's lead from A's own is answered as if there were no such lead.
    for (path, field) in [(format!("/api/v1/leads/{mine}/triage"), "lead_id"), (format!("/api/v1/leads/{mine}/merge"), "merged_id")] {
        let mut answers = Vec::new();
        for other in [theirs.clone(), Uuid::now_v7().to_string()] {
            let mut b = json!({field: other});
            if field == "lead_id" {
                b["action"] = json!("link");
            }
            let r = app.call("POST", &path, tok, Some(&b)).await;
            answers.push((r.status, r.text()));
        }
        assert_eq!(answers[0], answers[1], "{path}");
    }
    // B's tasks are in none of A's task lists.
    for q in ["", "?assignee=all", &format!("?assignee={}", b.id), "?overdue=true"] {
        let t = app.call("GET", &format!("/api/v1/tasks{q}"), tok, None).await;
        assert_eq!(t.status, 200, "{q}");
        assert!(!t.text().contains(&task_id) && !t.text().contains(&theirs), "{q}: {}", t.text());
    }
    // A submitting B's client's phone adds a repeat request to B's lead (no duplicate) and
    // learns only that.
    let repeats = app.get(&format!("/api/v1/leads/{theirs}"), Some(&admin_tok)).await.json()["repeat_count"].as_i64().unwrap();
    let r = app.call("POST", "/api/v1/leads", tok, Some(&json!({"phone": "8 900 555 05 01", "message": "снова звонит"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!((answer["repeat"].as_bool(), answer["visible"].as_bool()), (Some(true), Some(false)), "{answer}");
    assert!(!r.text().contains(&theirs) && !r.text().contains("Клиент") && answer.get("id").is_none(), "{answer}");
    assert_eq!(app.get(&format!("/api/v1/leads/{theirs}"), Some(&admin_tok)).await.json()["repeat_count"], repeats + 1);
    // Sent with an Idempotency-Key, and again: the replayed answer does not show it either.
    for _ in 0..2 {
        let req = app
            .req("POST", "/api/v1/leads")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {tok}"))
            .header("idempotency-key", "a-retry")
            .body(http_body_util::Full::new(axum::body::Bytes::from(json!({"phone": "+79005550501"}).to_string())))
            .unwrap();
        let r = send(app.addr, req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["visible"], false, "{}", r.text());
        assert!(!r.text().contains(&theirs) && !r.text().contains("Клиент"), "{}", r.text());
    }
    assert_eq!(app.get(&format!("/api/v1/leads/{theirs}"), Some(&admin_tok)).await.json()["repeat_count"], repeats + 2);
    // Nor in lists or searches.
    for q in ["", "q=79005550501", "q=8%20900%20555%2005%2001", "status=assigned", "sort=priority", "owner=none"] {
        let page = app.call("GET", &format!("/api/v1/leads?{q}"), tok, None).await.json();
        let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
        assert!(!ids.contains(&theirs.as_str()), "{q}: {ids:?}");
    }
    assert_eq!(app.call("GET", &format!("/api/v1/leads/{mine}"), tok, None).await.status, 200);
    // Nothing changed on B's leads: same state, owner and name, the merge still in force.
    let l = app.get(&format!("/api/v1/leads/{theirs}"), Some(&admin_tok)).await.json();
    assert_eq!(l["status"], "assigned");
    assert_eq!(l["name"], "Клиент");
    assert_eq!(l["owner"]["id"], b.id.to_string());
    let t = app.call("GET", &format!("/api/v1/leads/{theirs}/tasks"), &admin_tok, None).await.json();
    assert_eq!(t[0]["status"], "open", "{t}");
    let m = app.get(&format!("/api/v1/leads/{theirs}/merges"), Some(&admin_tok)).await.json();
    assert!(m[0]["undone_at"].is_null(), "{m}");
    assert_eq!(app.get(&format!("/api/v1/leads/{mine}"), Some(&admin_tok)).await.json()["status"], "assigned");
    // B sees all of it.
    assert_eq!(app.call("GET", &format!("/api/v1/contacts/{contact_id}"), &b.token, None).await.status, 200);
    assert_eq!(app.call("GET", &format!("/api/v1/leads/{theirs}/merges"), &b.token, None).await.status, 200);
}

#[tokio::test]
async fn a_head_of_sales_sees_the_team_and_the_queue() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let north = app.store.create_team("Север").await.unwrap();
    let south = app.store.create_team("Юг").await.unwrap();
    let head = person(&app, "head@firm.ru", "head_of_sales", "senior", Some(north.id), None).await;
    let ours = person(&app, "ours@firm.ru", "manager", "junior", Some(north.id), None).await;
    let other = person(&app, "other@firm.ru", "manager", "junior", Some(south.id), None).await;
    let a = lead(&app, "+79005550600").await;
    let b = lead(&app, "+79005550601").await;
    let unassigned = lead(&app, "+79005550602").await;
    app.call("POST", &format!("/api/v1/leads/{a}/assign"), &app.token, Some(&json!({"user_id": ours.id}))).await;
    app.call("POST", &format!("/api/v1/leads/{b}/assign"), &app.token, Some(&json!({"user_id": other.id}))).await;
    let page = app.call("GET", "/api/v1/leads", &head.token, None).await.json();
    let ids: std::collections::HashSet<String> =
        page["items"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, [a.clone(), unassigned.clone()].into_iter().collect());
    assert_eq!(app.call("GET", &format!("/api/v1/leads/{b}"), &head.token, None).await.status, 404);
    // The head may move the team's leads within the team, not to another team.
    let r = app.call("POST", &format!("/api/v1/leads/{unassigned}/assign"), &head.token, Some(&json!({"user_id": ours.id}))).await;
    assert_eq!(r.status, 200);
    let r = app.call("POST", &format!("/api/v1/leads/{a}/assign"), &head.token, Some(&json!({"user_id": other.id}))).await;
    assert_eq!(r.status, 422);
    // Managers cannot reassign.
    assert_eq!(app.call("POST", &format!("/api/v1/leads/{a}/assign"), &ours.token, Some(&json!({"user_id": ours.id}))).await.status, 403);
}

#[tokio::test]
async fn the_state_machine_over_the_api() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let id = lead(&app, "+79005550700").await;
    let path = format!("/api/v1/leads/{id}/status");
    let post = |body: Value| {
        let (app, path) = (&app, path.clone());
        async move { app.call("POST", &path, &app.token, Some(&body)).await }
    };
    // Forbidden moves are 409 and change nothing.
    for to in ["qualified", "converted"] {
        let r = post(json!({"status": to})).await;
        assert_eq!(r.status, 409, "{to}");
        assert_eq!(r.json()["error"]["code"], "invalid_transition");
    }
    // Refused and junk need a reason from the list.
    let r = post(json!({"status": "refused"})).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (422, json!("reason_required")));
    let r = post(json!({"status": "refused", "reason": "too_expensive_for_me"})).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["fields"].get("reason").is_some());
    assert_eq!(post(json!({"status": "in_progress"})).await.status, 200);
    assert_eq!(post(json!({"status": "qualified"})).await.status, 200);
    let r = post(json!({"status": "refused", "reason": "price", "comment": "дорого"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status_reason"], "price");
    // A refused lead can only go back to nurturing; nothing is deleted.
    assert_eq!(post(json!({"status": "in_progress"})).await.status, 409);
    assert_eq!(post(json!({"status": "nurturing"})).await.status, 200);
    let t = app.get(&format!("/api/v1/leads/{id}/timeline"), Some(&app.token)).await.json();
    let moves: Vec<(String, String)> = t["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "status_changed")
        .map(|i| (i["data"]["to"].as_str().unwrap().to_string(), i["actor"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(moves.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(), vec!["nurturing", "refused", "qualified", "in_progress"]);
    assert!(moves.iter().all(|m| m.1 == "token:test"));
    // Reasons are editable.
    let r = app
        .call("PUT", "/api/v1/reasons/refused", &app.token, Some(&json!([{"code": "too_far", "name_en": "Too far", "name_ru": "Далеко"}])))
        .await;
    assert_eq!(r.status, 200);
    let id2 = lead(&app, "+79005550701").await;
    let r =
        app.call("POST", &format!("/api/v1/leads/{id2}/status"), &app.token, Some(&json!({"status": "refused", "reason": "price"}))).await;
    assert_eq!(r.status, 422, "price is no longer on the list");
    let r = app
        .call("POST", &format!("/api/v1/leads/{id2}/status"), &app.token, Some(&json!({"status": "refused", "reason": "too_far"})))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn postponing_creates_a_reminder_task_for_the_day() {
    let (app, clock) = app_at(MONDAY_10_MSK).await;
    let m = person(&app, "m@firm.ru", "manager", "junior", None, None).await;
    let id = lead(&app, "+79005550800").await;
    app.call("POST", &format!("/api/v1/leads/{id}/assign"), &app.token, Some(&json!({"user_id": m.id}))).await;
    let r = app
        .call(
            "POST",
            &format!("/api/v1/leads/{id}/status"),
            &m.token,
            Some(&json!({"status": "postponed", "until": "2027-03-15T07:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app
        .call(
            "POST",
            &format!("/api/v1/leads/{id}/status"),
            &m.token,
            Some(&json!({"status": "postponed", "until": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, 409, "already postponed");
    let tasks = app.call("GET", &format!("/api/v1/leads/{id}/tasks"), &m.token, None).await.json();
    assert_eq!(tasks[0]["due_at"], "2027-03-15T07:00:00.000000Z");
    assert_eq!(tasks[0]["assignee_id"], m.id.to_string());
    assert!(app.call("GET", "/api/v1/tasks?overdue=true", &m.token, None).await.json().as_array().unwrap().is_empty());
    // No reminder before the day; one, to the manager, when it comes.
    let reminders = |tok: String| {
        let app = &app;
        async move {
            let n = app.call("GET", "/api/v1/notifications", &tok, None).await.json();
            n.as_array().unwrap().iter().filter(|x| x["kind"] == "task_due").cloned().collect::<Vec<_>>()
        }
    };
    clock.set(at("2027-03-15T06:59:59Z"));
    voronka_server::jobs::timers_once(&app.state).await.unwrap();
    assert!(reminders(m.token.clone()).await.is_empty());
    clock.set(at("2027-03-15T07:00:01Z"));
    let overdue = app.call("GET", "/api/v1/tasks?overdue=true", &m.token, None).await.json();
    assert_eq!(overdue.as_array().unwrap().len(), 1);
    assert_eq!(overdue[0]["overdue"], true);
    voronka_server::jobs::timers_once(&app.state).await.unwrap();
    voronka_server::jobs::timers_once(&app.state).await.unwrap();
    let r = reminders(m.token.clone()).await;
    assert_eq!(r.len(), 1, "reminded once: {r:?}");
    assert_eq!(r[0]["lead_id"], id.as_str());
    assert_eq!(r[0]["data"]["task_id"], tasks[0]["id"]);

    // A lead postponed with no owner: the heads of sales are reminded.
    let head = person(&app, "head@firm.ru", "head_of_sales", "senior", None, None).await;
    let unowned = lead(&app, "+79005550801").await;
    let r = app
        .call(
            "POST",
            &format!("/api/v1/leads/{unowned}/status"),
            &app.token,
            Some(&json!({"status": "postponed", "until": "2027-03-16T07:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    clock.set(at("2027-03-16T07:00:00Z"));
    voronka_server::jobs::timers_once(&app.state).await.unwrap();
    let r = reminders(head.token.clone()).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["lead_id"], unowned.as_str());
    assert_eq!(reminders(m.token.clone()).await.len(), 1, "not the manager's");
}

#[tokio::test]
async fn tasks_and_overdue_lists_for_managers_and_their_head() {
    let (app, clock) = app_at(MONDAY_10_MSK).await;
    let team = app.store.create_team("Продажи").await.unwrap();
    let head = person(&app, "h@firm.ru", "head_of_sales", "senior", Some(team.id), None).await;
    let m = person(&app, "m@firm.ru", "manager", "junior", Some(team.id), None).await;
    let id = lead(&app, "+79005550900").await;
    app.call("POST", &format!("/api/v1/leads/{id}/assign"), &app.token, Some(&json!({"user_id": m.id}))).await;
    let r = app
        .call(
            "POST",
            &format!("/api/v1/leads/{id}/tasks"),
            &m.token,
            Some(&json!({"kind": "proposal", "title": "Отправить КП", "due_at": "2027-03-01T12:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let task = r.json();
    assert_eq!(task["assignee_id"], m.id.to_string());
    let bad = app.call("POST", &format!("/api/v1/leads/{id}/tasks"), &m.token, Some(&json!({"kind": "dance", "title": ""}))).await;
    assert_eq!(bad.status, 422);
    clock.advance(Duration::hours(6));
    assert_eq!(app.call("GET", "/api/v1/tasks?overdue=true", &m.token, None).await.json().as_array().unwrap().len(), 1);
    assert_eq!(app.call("GET", "/api/v1/tasks?assignee=all&overdue=true", &head.token, None).await.json().as_array().unwrap().len(), 1);
    let done = app
        .call("POST", &format!("/api/v1/tasks/{}/complete", task["id"].as_str().unwrap()), &m.token, Some(&json!({"result": "отправлено"})))
        .await;
    assert_eq!(done.json()["status"], "done");
    assert_eq!(app.call("GET", "/api/v1/tasks?assignee=all&overdue=true", &head.token, None).await.json().as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn field_changes_are_audited_and_rescored() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let id = lead(&app, "+79005551000").await;
    let r = app
        .call(
            "PATCH",
            &format!("/api/v1/leads/{id}"),
            &app.token,
            Some(&json!({"company": "ООО Ромашка", "position": "CEO", "email": "ceo@romashka.ru"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let l = r.json();
    // phone+e-mail 3, company 2, decision maker 3.
    assert_eq!(l["score"], 8.0);
    assert_eq!(l["grade"], "A");
    let t = app.get(&format!("/api/v1/leads/{id}/timeline"), Some(&app.token)).await.json();
    let changes: Vec<&Value> = t["items"].as_array().unwrap().iter().filter(|i| i["kind"] == "field_changed").collect();
    assert_eq!(changes.len(), 3);
    let company = changes.iter().find(|c| c["data"]["field"] == "company").unwrap();
    assert_eq!(company["data"]["old"], Value::Null);
    assert_eq!(company["data"]["new"], "ООО Ромашка");
    assert_eq!(company["actor"], "token:test");
    // The new e-mail now finds the lead; another lead's phone is refused.
    assert_eq!(app.lead(json!({"email": "CEO@romashka.ru"})).await.json()["id"], id.as_str());
    let other = lead(&app, "+79005551001").await;
    let r = app.call("PATCH", &format!("/api/v1/leads/{other}"), &app.token, Some(&json!({"phone": "+79005551000"}))).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "contact_taken");
    let r = app.call("PATCH", &format!("/api/v1/leads/{other}"), &app.token, Some(&json!({"status": "won", "phone": "12"}))).await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn the_card_shows_completeness_and_the_matching_script() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let scripts = json!([
        {"name": "B2B звонок", "segment": "b2b", "channel": "call", "body": "Здравствуйте! Удобно говорить?"},
        {"name": "Общий", "body": "Добрый день!"}
    ]);
    assert_eq!(app.call("PUT", "/api/v1/settings/scripts", &app.token, Some(&scripts)).await.status, 200);
    let r = app.lead(json!({"phone": "+79005551100", "name": "Анна", "channel": "call", "fields": {"segment": "B2B"}})).await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    let card = app.get(&format!("/api/v1/leads/{id}/card"), Some(&app.token)).await.json();
    assert_eq!(card["script"]["name"], "B2B звонок");
    assert_eq!(card["completeness"]["filled"], 2);
    assert_eq!(card["completeness"]["of"], 5);
    assert_eq!(card["completeness"]["normal"], false);
    app.call("PATCH", &format!("/api/v1/leads/{id}"), &app.token, Some(&json!({"interest": "квартира"}))).await;
    let card = app.get(&format!("/api/v1/leads/{id}/card"), Some(&app.token)).await.json();
    assert_eq!(card["completeness"]["normal"], true);
    let other = lead(&app, "+79005551101").await;
    assert_eq!(app.get(&format!("/api/v1/leads/{other}/card"), Some(&app.token)).await.json()["script"]["name"], "Общий");
    // A script for a state: the lead gets it once it is in that state.
    let scripts = json!([
        {"name": "Квалификация", "status": "in_progress", "body": "Уточните бюджет и сроки."},
        {"name": "Общий", "body": "Добрый день!"}
    ]);
    assert_eq!(app.call("PUT", "/api/v1/settings/scripts", &app.token, Some(&scripts)).await.status, 200);
    assert_eq!(app.get(&format!("/api/v1/leads/{other}/card"), Some(&app.token)).await.json()["script"]["name"], "Общий");
    let r = app.call("POST", &format!("/api/v1/leads/{other}/status"), &app.token, Some(&json!({"status": "in_progress"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.get(&format!("/api/v1/leads/{other}/card"), Some(&app.token)).await.json()["script"]["name"], "Квалификация");
    // A client's card is measured against the client fields, normal at 10.
    let client_fields = json!({"lead": ["name", "phone"], "client": ["name", "phone", "email", "company", "position", "city", "interest", "budget", "fields.inn", "fields.site", "fields.address"]});
    assert_eq!(app.call("PUT", "/api/v1/settings/completeness", &app.token, Some(&client_fields)).await.status, 200);
    let patch = json!({"email": "a@firm.ru", "company": "ООО Ромашка", "position": "CEO", "city": "Тверь", "budget": 100000,
        "fields": {"segment": "B2B", "inn": "7707083893", "site": "firm.ru"}});
    assert_eq!(app.call("PATCH", &format!("/api/v1/leads/{id}"), &app.token, Some(&patch)).await.status, 200);
    let r = app.call("POST", &format!("/api/v1/leads/{id}/convert"), &app.token, Some(&json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let card = app.get(&format!("/api/v1/leads/{id}/card"), Some(&app.token)).await.json();
    let c = &card["completeness"];
    assert_eq!((c["filled"].as_u64(), c["of"].as_u64(), c["normal"].as_bool()), (Some(10), Some(11), Some(true)), "{c}");
    assert_eq!(c["missing"], json!(["fields.address"]));
    let bad = app.call("PUT", "/api/v1/settings/slas", &app.token, Some(&json!([{"channel": "call"}]))).await;
    assert_eq!(bad.status, 422);
}

#[tokio::test]
async fn conversion_checks_numbers_links_records_and_happens_once() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let id = lead(&app, "+79005551200").await;
    let app = &app;
    let convert =
        |id: String, body: Value| async move { app.call("POST", &format!("/api/v1/leads/{id}/convert"), &app.token, Some(&body)).await };
    for (field, company) in [
        ("company.inn", json!({"name": "Ромашка", "inn": "7707083890"})),
        ("company.ogrn", json!({"name": "Ромашка", "inn": "7707083893", "ogrn": "1027700132194"})),
        ("company.kpp", json!({"name": "Ромашка", "inn": "7707083893", "kpp": "77360100"})),
        ("company.okpo", json!({"name": "Ромашка", "okpo": "00032536"})),
    ] {
        let r = convert(id.clone(), json!({"company": company})).await;
        assert_eq!(r.status, 422, "{field}");
        assert!(r.json()["error"]["fields"].get(field).is_some(), "{field}: {}", r.text());
    }
    let body = json!({"contact": {"name": "Виктор Петров", "position": "CEO"},
        "company": {"name": "ПАО Сбербанк", "inn": "7707083893", "kpp": "773601001", "ogrn": "1027700132195", "okpo": "00032537", "employees": 200, "industry": "банки"},
        "deal": {"title": "Первый заказ", "amount": 150000}});
    let r = convert(id.clone(), body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let c = r.json();
    assert!(c["company_id"].is_string() && c["deal_id"].is_string());
    assert_eq!(c["contact_linked"], false);
    let l = app.get(&format!("/api/v1/leads/{id}"), Some(&app.token)).await.json();
    assert_eq!(l["status"], "converted");
    assert_eq!(l["contact_id"], c["contact_id"]);
    let contact = app.get(&format!("/api/v1/contacts/{}", c["contact_id"].as_str().unwrap()), Some(&app.token)).await.json();
    assert_eq!(contact["lead_ids"], json!([id]));
    assert_eq!(contact["company"]["size"], "medium");
    assert_eq!(contact["company"]["inn"], "7707083893");
    // Twice: 409.
    assert_eq!(convert(id.clone(), body.clone()).await.status, 409);
    // Another lead of the same company links to it; the same person's phone links the contact.
    let second = lead(app, "+79005551201").await;
    let r = convert(second.clone(), json!({"contact": {"phone": "+79005551200"}, "company": {"inn": "7707083893"}})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["company_id"], c["company_id"]);
    assert_eq!(r.json()["company_linked"], true);
    assert_eq!(r.json()["contact_id"], c["contact_id"]);
    assert_eq!(r.json()["contact_linked"], true);
    // A new request from the client: a new lead linked to the contact, marked as returning.
    let again = app.lead(json!({"phone": "8 900 555 12 00", "message": "ещё заказ"})).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.json()["contact_id"], c["contact_id"]);
    assert_eq!(again.json()["returning_of"], id.as_str());
    let contact = app.get(&format!("/api/v1/contacts/{}", c["contact_id"].as_str().unwrap()), Some(&app.token)).await.json();
    assert_eq!(contact["lead_ids"].as_array().unwrap().len(), 3);
    let t = app.get(&format!("/api/v1/leads/{id}/timeline"), Some(&app.token)).await.json();
    let converted = t["items"].as_array().unwrap().iter().find(|i| i["kind"] == "converted").unwrap();
    assert!(converted["data"]["time_to_client_seconds"].is_number());
}

#[tokio::test]
async fn users_are_managed_by_admins_and_checked() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let r = app
        .call(
            "POST",
            "/api/v1/users",
            &app.token,
            Some(&json!({"email": "new@firm.ru", "role": "pilot", "timezone": "Mars/Olympus", "hours": {"mon": [["9", "18:00"]]}})),
        )
        .await;
    assert_eq!(r.status, 422);
    let e = r.json();
    let fields: Vec<&String> = e["error"]["fields"].as_object().unwrap().keys().collect();
    assert_eq!(fields.len(), 3, "{fields:?}");
    let r = app
        .call(
            "POST",
            "/api/v1/users",
            &app.token,
            Some(&json!({"email": "new@firm.ru", "role": "manager", "password": "correct horse", "level": "senior", "capacity": 3})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let u = r.json();
    assert!(u.get("password").is_none() && u.get("password_hash").is_none());
    assert!(app.store.check_password("new@firm.ru", "correct horse").await.unwrap().is_some());
    assert!(app.store.check_password("new@firm.ru", "wrong").await.unwrap().is_none());
    let m = person(&app, "m@firm.ru", "manager", "junior", None, None).await;
    assert_eq!(app.call("POST", "/api/v1/users", &m.token, Some(&json!({"email": "x@firm.ru", "role": "admin"}))).await.status, 403);
    // A deactivated user's token stops working (the server's token cache forgets it within seconds).
    let hash = voronka_store::hash_token(&m.token);
    assert!(app.store.token_by_hash(&hash).await.unwrap().is_some());
    app.store.update_user(m.id, &UserSpec { active: Some(false), ..Default::default() }).await.unwrap();
    assert!(app.store.token_by_hash(&hash).await.unwrap().is_none());
}

#[tokio::test]
async fn requests_waiting_for_triage_are_not_routed_until_accepted() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let senior = person(&app, "senior@firm.ru", "manager", "senior", None, None).await;
    let r = app.call("PATCH", "/api/v1/channels/chat", &app.token, Some(&json!({"needs_triage": true}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.lead(json!({"phone": "+79005550999", "name": "Из чата", "channel": "chat"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let events: Vec<Value> = ["callback_request", "callback_request", "calculator", "calculator", "presentation_request"]
        .iter()
        .map(|k| json!({"type": k}))
        .collect();
    assert_eq!(app.post_json("/api/v1/events", Some(&app.token), &json!({"lead_id": id, "events": events})).await.status, 202);
    app.dispatch().await;
    let l = app.get(&format!("/api/v1/leads/{id}"), Some(&app.token)).await.json();
    assert_eq!(l["status"], "sales_ready", "{l}");
    assert!(owner(&app, &id).await.is_none(), "a request waiting for triage was routed");
    assert!(app.get("/api/v1/queue", Some(&app.token)).await.json().as_array().is_some_and(|q| q.is_empty()), "nor queued");

    let r = app.post_json(&format!("/api/v1/leads/{id}/triage"), Some(&app.token), &json!({"action": "accept"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.dispatch().await;
    assert_eq!(owner(&app, &id).await, Some(senior.id.to_string()), "accepted, it is routed as usual");
}

/// A merged lead that was assigned with a response deadline, and one waiting in the queue,
/// come back from an unmerge as they were: the deadline still escalates, the queue still
/// holds it, and subscribers hear that its state changed back.
#[tokio::test]
async fn unmerge_restores_deadlines_and_the_queue() {
    let (app, clock) = app_at(MONDAY_10_MSK).await;
    let senior = person(&app, "senior@firm.ru", "manager", "senior", None, None).await;
    let other = person(&app, "other@firm.ru", "manager", "senior", None, None).await;
    let survivor = lead(&app, "+79005551001").await;
    let merged = hot_lead(&app, "+79005551002").await;
    app.dispatch().await;
    let before = app.get(&format!("/api/v1/leads/{merged}"), Some(&app.token)).await.json();
    assert_eq!(before["status"], "assigned");
    let owner_before = before["owner"]["id"].as_str().unwrap().to_string();
    assert!(owner_before == senior.id.to_string() || owner_before == other.id.to_string());

    let r = app.post_json(&format!("/api/v1/leads/{survivor}/merge"), Some(&app.token), &json!({"merged_id": merged})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mid = r.json()["merge"]["id"].as_str().unwrap().to_string();
    let r = app.post_json(&format!("/api/v1/merges/{mid}/undo"), Some(&app.token), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = app.get(&format!("/api/v1/leads/{merged}"), Some(&app.token)).await.json();
    assert_eq!(after["status"], "assigned");
    assert_eq!(after["owner"]["id"], owner_before.as_str());
    let topics = app.store.outbox_topics().await.unwrap();
    assert!(topics.iter().filter(|t| *t == "lead.state_changed").count() >= 2, "{topics:?}");
    // Untouched past the hot lead's 15-minute deadline: escalated to the other senior.
    clock.advance(Duration::minutes(16));
    let (_, escalated) = voronka_server::jobs::timers_once(&app.state).await.unwrap();
    assert_eq!(escalated, 1, "the restored deadline did not escalate");
    assert_ne!(owner(&app, &merged).await.as_deref(), Some(owner_before.as_str()));
}

#[tokio::test]
async fn a_clients_consents_and_timeline_are_seen_from_the_contact() {
    let (app, clock) = app_at(MONDAY_10_MSK).await;
    let m = person(&app, "m@firm.ru", "manager", "senior", None, None).await;
    let r = app
        .lead(json!({"phone": "+79005551300", "name": "Анна",
            "consent": {"marketing": true, "text": "Согласна на рассылку", "at": "2027-03-01T06:55:00Z"}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let first = r.json()["id"].as_str().unwrap().to_string();
    let r = app
        .call("POST", &format!("/api/v1/leads/{first}/activities"), &app.token, Some(&json!({"kind": "note", "text": "звонила сама"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    clock.advance(Duration::minutes(5));
    let r = app.call("POST", &format!("/api/v1/leads/{first}/convert"), &app.token, Some(&json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let contact_id = r.json()["contact_id"].as_str().unwrap().to_string();
    // The client comes back a day later, this time refusing mailings.
    clock.advance(Duration::days(1));
    let r = app.lead(json!({"phone": "8 900 555 13 00", "consent": {"marketing": false, "text": "Без рассылок"}})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let second = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["contact_id"], contact_id.as_str());

    let c = app.get(&format!("/api/v1/contacts/{contact_id}"), Some(&app.token)).await.json();
    assert_eq!(c["lead_ids"], json!([first, second]));
    let consents = c["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 2, "{c}");
    assert_eq!((consents[0]["lead_id"].as_str(), consents[0]["marketing"].as_bool()), (Some(first.as_str()), Some(true)));
    assert_eq!(consents[0]["text"], "Согласна на рассылку");
    assert!(consents[0]["at"].as_str().unwrap().starts_with("2027-03-01T06:55:00"));
    assert_eq!((consents[1]["lead_id"].as_str(), consents[1]["marketing"].as_bool()), (Some(second.as_str()), Some(false)));

    // The contact's timeline is both leads' timelines, newest first, each entry naming its lead;
    // read two at a time it gives every entry once.
    let whole = app.get(&format!("/api/v1/contacts/{contact_id}/timeline?limit=500"), Some(&app.token)).await.json();
    let items = whole["items"].as_array().unwrap().clone();
    let mut expected = 0;
    for l in [&first, &second] {
        let t = app.get(&format!("/api/v1/leads/{l}/timeline?limit=500"), Some(&app.token)).await.json();
        let t = t["items"].as_array().unwrap().clone();
        assert!(t.iter().all(|i| i.get("lead_id").is_none()), "a lead's own timeline does not repeat its id");
        assert_eq!(items.iter().filter(|i| i["lead_id"] == l.as_str()).count(), t.len());
        expected += t.len();
    }
    assert_eq!(items.len(), expected);
    let ats: Vec<&str> = items.iter().map(|i| i["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] >= w[1]), "{ats:?}");
    assert_eq!(items[0]["lead_id"], second.as_str(), "the newest request comes first");
    for kind in ["note", "converted"] {
        let i = items.iter().find(|i| i["kind"] == kind).unwrap_or_else(|| panic!("{kind} in {whole}"));
        assert_eq!(i["lead_id"], first.as_str());
    }
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let p = app.get(&format!("/api/v1/contacts/{contact_id}/timeline?limit=2&cursor={cursor}"), Some(&app.token)).await.json();
        paged.extend(p["items"].as_array().unwrap().iter().cloned());
        match p["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(paged, items);
    assert_eq!(app.get(&format!("/api/v1/contacts/{contact_id}/timeline?cursor=zz"), Some(&app.token)).await.status, 422);

    // A manager who holds only the new lead sees the contact through it alone.
    let r = app.call("POST", &format!("/api/v1/leads/{second}/assign"), &app.token, Some(&json!({"user_id": m.id}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = app.call("GET", &format!("/api/v1/contacts/{contact_id}"), &m.token, None).await.json();
    assert_eq!(c["lead_ids"], json!([second]));
    assert_eq!(c["consents"].as_array().unwrap().len(), 1);
    let t = app.call("GET", &format!("/api/v1/contacts/{contact_id}/timeline?limit=500"), &m.token, None).await.json();
    assert!(!t["items"].as_array().unwrap().is_empty());
    assert!(t["items"].as_array().unwrap().iter().all(|i| i["lead_id"] == second.as_str()), "{t}");
}

#[tokio::test]
async fn completeness_per_manager_counts_open_cards_by_the_configured_fields() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let north = app.store.create_team("Север").await.unwrap();
    let south = app.store.create_team("Юг").await.unwrap();
    let head = person(&app, "head@firm.ru", "head_of_sales", "senior", Some(north.id), None).await;
    let anna = person(&app, "anna@firm.ru", "manager", "senior", Some(north.id), None).await;
    let boris = person(&app, "boris@firm.ru", "manager", "senior", Some(north.id), None).await;
    let vera = person(&app, "vera@firm.ru", "manager", "senior", Some(south.id), None).await;
    // A field that is not a lead's is refused, naming the entry; the list is saved and read back.
    let r = app.call("PUT", "/api/v1/settings/completeness", &app.token, Some(&json!({"lead": ["name", "shoe_size"], "client": []}))).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("lead[1]"), "{}", r.text());
    let fields = json!({"lead": ["name", "phone", "email", "company", "fields.industry"], "client": ["name", "phone"]});
    let r = app.call("PUT", "/api/v1/settings/completeness", &app.token, Some(&fields)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.get("/api/v1/settings/completeness", Some(&app.token)).await.json(), fields);

    let mut n = 0;
    let mut make = |who: Uuid, body: Value| {
        n += 1;
        let (app, k) = (&app, n);
        async move {
            let mut body = body;
            body["phone"] = json!(format!("+7900555140{k}"));
            let r = app.lead(body).await;
            assert_eq!(r.status, 201, "{}", r.text());
            let id = r.json()["id"].as_str().unwrap().to_string();
            let r = app.call("POST", &format!("/api/v1/leads/{id}/assign"), &app.token, Some(&json!({"user_id": who}))).await;
            assert_eq!(r.status, 200, "{}", r.text());
            id
        }
    };
    // Anna: 5 of 5 and 2 of 5 (phone, and a blank company that does not count).
    let a1 =
        make(anna.id, json!({"name": "Ольга", "email": "o@firm.ru", "company": "ООО Ромашка", "fields": {"industry": "retail"}})).await;
    let a2 = make(anna.id, json!({"name": "Пётр", "company": "   ", "fields": {"industry": null}})).await;
    // Boris: 1 of 5 (phone only) and a refused lead that no longer counts.
    let b1 = make(boris.id, json!({})).await;
    let b2 = make(boris.id, json!({"name": "Отказник", "email": "no@firm.ru", "company": "X"})).await;
    let r =
        app.call("POST", &format!("/api/v1/leads/{b2}/status"), &app.token, Some(&json!({"status": "refused", "reason": "price"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Vera, in the other team: 3 of 5.
    make(vera.id, json!({"name": "Вера", "email": "v@firm.ru"})).await;

    // Each card's own completeness agrees with the manager's average.
    for (id, percent) in [(&a1, 100), (&a2, 40), (&b1, 20)] {
        let c = app.call("GET", &format!("/api/v1/leads/{id}/card"), &app.token, None).await.json();
        assert_eq!(c["completeness"]["percent"], percent, "{id}: {c}");
    }
    let line = |v: &Value, who: Uuid| v.as_array().unwrap().iter().find(|l| l["user_id"] == who.to_string()).cloned();
    let all = app.get("/api/v1/analytics/completeness", Some(&app.token)).await.json();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    let a = line(&all, anna.id).unwrap();
    assert_eq!((a["open_leads"].as_i64(), a["average_percent"].as_f64(), a["normal_cards"].as_i64()), (Some(2), Some(70.0), Some(1)));
    assert_eq!(a["name"], "anna");
    let b = line(&all, boris.id).unwrap();
    assert_eq!((b["open_leads"].as_i64(), b["average_percent"].as_f64(), b["normal_cards"].as_i64()), (Some(1), Some(20.0), Some(0)));
    let v = line(&all, vera.id).unwrap();
    assert_eq!((v["open_leads"].as_i64(), v["average_percent"].as_f64(), v["normal_cards"].as_i64()), (Some(1), Some(60.0), Some(1)));
    // The head sees the team; a manager only their own line.
    let team = app.call("GET", "/api/v1/analytics/completeness", &head.token, None).await.json();
    assert_eq!(team.as_array().unwrap().len(), 2, "{team}");
    assert!(line(&team, vera.id).is_none());
    let own = app.call("GET", "/api/v1/analytics/completeness", &boris.token, None).await.json();
    assert_eq!(own.as_array().unwrap().len(), 1);
    assert_eq!(line(&own, boris.id).unwrap()["open_leads"], 1);
    // Filling a field moves the average.
    let r = app.call("PATCH", &format!("/api/v1/leads/{b1}"), &boris.token, Some(&json!({"fields": {"industry": "банки"}}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let own = app.call("GET", "/api/v1/analytics/completeness", &boris.token, None).await.json();
    assert_eq!(line(&own, boris.id).unwrap()["average_percent"], 40.0);
    // A list saved before lists were checked, naming a column that is not a lead field:
    // never filled, on the card and in the average alike.
    app.store.put_setting("completeness", &json!({"lead": ["name", "phone", "channel", "status"], "client": []})).await.unwrap();
    let card = app.call("GET", &format!("/api/v1/leads/{a1}/card"), &app.token, None).await.json();
    assert_eq!((card["completeness"]["filled"].as_u64(), card["completeness"]["of"].as_u64()), (Some(2), Some(4)), "{card}");
    let all = app.get("/api/v1/analytics/completeness", Some(&app.token)).await.json();
    assert_eq!(line(&all, anna.id).unwrap()["average_percent"], 50.0, "{all}");
}

/// Rules and deadlines saved over the API drive routing: a thousand leads in turn give every
/// manager on duty the same share, in strict rotation; a least-loaded rule always picks
/// someone with the fewest open leads.
#[tokio::test]
async fn saved_rules_share_a_thousand_leads_in_turn_and_by_load() {
    use futures_util::StreamExt;
    use voronka_store::routing::RouteOutcome;
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let mut managers = Vec::new();
    for n in 0..7 {
        let spec = UserSpec {
            email: Some(format!("m{n}@firm.ru")),
            name: Some(format!("m{n}")),
            role: Some("manager".into()),
            level: Some(if n % 2 == 0 { "senior" } else { "junior" }.into()),
            capacity: Some(1000),
            ..Default::default()
        };
        managers.push(app.store.create_user(&spec).await.unwrap().id);
    }
    // One more who is away: never chosen.
    let away = app
        .store
        .create_user(&UserSpec {
            email: Some("away@firm.ru".into()),
            name: Some("away".into()),
            role: Some("manager".into()),
            active: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let rules = json!([
        {"name": "Москва — по загрузке", "condition": {"regions": ["Москва"]}, "strategy": {"kind": "least_loaded"}},
        {"name": "Все по очереди", "condition": {}, "strategy": {"kind": "round_robin"}}
    ]);
    let r = app.call("PUT", "/api/v1/settings/assignment_rules", &app.token, Some(&rules)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.get("/api/v1/settings/assignment_rules", Some(&app.token)).await.json(), rules);
    let bad = json!([{"name": "x", "strategy": {"kind": "by_mood"}}]);
    let r = app.call("PUT", "/api/v1/settings/assignment_rules", &app.token, Some(&bad)).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(app.get("/api/v1/settings/assignment_rules", Some(&app.token)).await.json(), rules, "a refused list changes nothing");
    let slas = json!([{"channel": "*", "temperature": "*", "seconds": 600}]);
    let r = app.call("PUT", "/api/v1/settings/slas", &app.token, Some(&slas)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.call("PUT", "/api/v1/settings/slas", &app.token, Some(&json!([{"channel": "*", "temperature": "*", "seconds": -1}]))).await;
    assert_eq!(r.status, 422);

    let make = |i: usize, city: &'static str| {
        let app = &app;
        async move {
            let r = app.lead(json!({"phone": format!("+7901{:07}", i), "city": city})).await;
            assert_eq!(r.status, 201, "{}", r.text());
            Uuid::parse_str(r.json()["id"].as_str().unwrap()).unwrap()
        }
    };
    let leads: Vec<Uuid> = futures_util::stream::iter(0..1000).map(|i| make(i, "Тверь")).buffered(16).collect().await;
    let mut owners = Vec::new();
    for id in &leads {
        match app.store.route_lead(*id).await.unwrap() {
            RouteOutcome::Assigned { user_id, rule } => {
                assert_eq!(rule, "Все по очереди");
                owners.push(user_id);
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert!(!owners.contains(&away.id));
    let mut counts: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
    for o in &owners {
        *counts.entry(*o).or_default() += 1;
    }
    assert_eq!(counts.len(), 7, "{counts:?}");
    assert!(counts.values().all(|c| *c == 142 || *c == 143), "{counts:?}");
    for w in owners.chunks(7).filter(|w| w.len() == 7) {
        let distinct: std::collections::HashSet<_> = w.iter().collect();
        assert_eq!(distinct.len(), 7, "every turn gives each manager one lead");
    }
    // The saved deadline: ten minutes from the assignment.
    let t = app.get(&format!("/api/v1/leads/{}/timeline", leads[0]), Some(&app.token)).await.json();
    let assigned = t["items"].as_array().unwrap().iter().find(|i| i["kind"] == "assigned").unwrap().clone();
    assert!(assigned["data"]["deadline"].as_str().unwrap().starts_with("2027-03-01T07:10:00"), "{assigned}");

    // Make the loads uneven: the first manager closes 40 leads, the second 20.
    let mut loads: std::collections::HashMap<Uuid, i64> = counts.iter().map(|(k, v)| (*k, *v as i64)).collect();
    for (who, n) in [(managers[0], 40), (managers[1], 20)] {
        let theirs: Vec<Uuid> = leads.iter().zip(&owners).filter(|(_, o)| **o == who).map(|(l, _)| *l).take(n).collect();
        for l in theirs {
            let r = app
                .call("POST", &format!("/api/v1/leads/{l}/status"), &app.token, Some(&json!({"status": "junk", "reason": "spam"})))
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        *loads.get_mut(&who).unwrap() -= n as i64;
    }
    let moscow: Vec<Uuid> = futures_util::stream::iter(1000..1100).map(|i| make(i, "Москва")).buffered(16).collect().await;
    for id in &moscow {
        let RouteOutcome::Assigned { user_id, rule } = app.store.route_lead(*id).await.unwrap() else { panic!("{id} not assigned") };
        assert_eq!(rule, "Москва — по загрузке");
        let least = *loads.values().min().unwrap();
        assert_eq!(loads[&user_id], least, "{user_id} had {} open leads, the least was {least}", loads[&user_id]);
        *loads.get_mut(&user_id).unwrap() += 1;
    }
    // The first sixty went to fill the gaps; the rest evened out.
    let (lo, hi) = (loads.values().min().unwrap(), loads.values().max().unwrap());
    assert!(hi - lo <= 1, "{loads:?}");
}

#[tokio::test]
async fn leads_escalated_in_one_pass_go_round_and_each_escalation_counts() {
    let (app, clock) = app_at(MONDAY_10_MSK).await;
    let a = person(&app, "a@firm.ru", "manager", "senior", None, None).await;
    let b = person(&app, "b@firm.ru", "manager", "senior", None, None).await;
    let c = person(&app, "c@firm.ru", "manager", "senior", None, None).await;
    let mut leads = Vec::new();
    for i in 0..2 {
        let id = lead(&app, &format!("+7900555170{i}")).await;
        let r = app.call("POST", &format!("/api/v1/leads/{id}/assign"), &app.token, Some(&json!({"user_id": a.id}))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        leads.push(id);
    }
    // Both of A's deadlines pass (2 working hours for a cold lead); one pass hands them on,
    // one to B and one to C.
    clock.advance(Duration::hours(2));
    let (_, escalated) = voronka_server::jobs::timers_once(&app.state).await.unwrap();
    assert_eq!(escalated, 2);
    let mut owners = vec![owner(&app, &leads[0]).await.unwrap(), owner(&app, &leads[1]).await.unwrap()];
    owners.sort();
    let mut want = vec![b.id.to_string(), c.id.to_string()];
    want.sort();
    assert_eq!(owners, want);
}

#[tokio::test]
async fn an_escalation_with_nobody_to_take_the_lead_counts_as_missed() {
    use voronka_store::users::Access;
    let (app, clock) = app_at(MONDAY_10_MSK).await;
    let only = person(&app, "only@firm.ru", "manager", "senior", None, None).await;
    let head = person(&app, "head@firm.ru", "head_of_sales", "senior", None, None).await;
    let touched = lead(&app, "+79005551800").await;
    let missed = lead(&app, "+79005551801").await;
    for id in [&touched, &missed] {
        let r = app.call("POST", &format!("/api/v1/leads/{id}/assign"), &app.token, Some(&json!({"user_id": only.id}))).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = app
        .call("POST", &format!("/api/v1/leads/{touched}/activities"), &only.token, Some(&json!({"kind": "call", "direction": "out"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    clock.advance(Duration::hours(2));
    let escalations = app.store.escalate_due().await.unwrap();
    assert_eq!(escalations.len(), 1);
    assert_eq!(escalations[0].to_user, None, "nobody else on duty");
    assert_eq!(owner(&app, &missed).await, Some(only.id.to_string()), "the lead stays, the heads are told");
    let n = app.call("GET", "/api/v1/notifications", &head.token, None).await.json();
    assert!(n.as_array().unwrap().iter().any(|x| x["kind"] == "lead_escalated"), "{n}");
    // It is not escalated again, and it counts: two measured, one within, one escalation.
    clock.advance(Duration::hours(1));
    assert!(app.store.escalate_due().await.unwrap().is_empty());
    let from = voronka_store::Ts::from(at(MONDAY_10_MSK) - Duration::days(1));
    let to = voronka_store::Ts::from(at(MONDAY_10_MSK) + Duration::days(1));
    let share = app.store.sla_share(&Access::All, from, to).await.unwrap();
    assert_eq!((share.measured, share.within, share.escalated), (2, 1, 1), "{share:?}");
}

/// Routing starts from two signals, each enough on its own: a new lead that is hot, and a
/// lead that reaches the sales-ready threshold.
#[tokio::test]
async fn hot_on_arrival_and_sales_ready_each_route_a_lead() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let m = person(&app, "m@firm.ru", "manager", "senior", None, None).await;
    let mut model = app.get("/api/v1/scoring/model", Some(&app.token)).await.json();
    let mut put = |warm: i64, hot: i64, ready: i64| {
        model["thresholds"]["warm"] = json!(warm);
        model["thresholds"]["hot"] = json!(hot);
        model["thresholds"]["sales_ready"] = json!(ready);
        let body = model.clone();
        let app = &app;
        async move {
            let r = app.call("PUT", "/api/v1/scoring/model", &app.token, Some(&body)).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    // Hot at 10 points, sales-ready out of reach: routed as a hot new lead.
    put(5, 10, 100_000).await;
    let hot = hot_lead(&app, "+79005551900").await;
    let l = app.get(&format!("/api/v1/leads/{hot}"), Some(&app.token)).await.json();
    assert_eq!((l["temperature"].as_str(), l["status"].as_str()), (Some("hot"), Some("new")), "{l}");
    app.dispatch().await;
    assert_eq!(owner(&app, &hot).await, Some(m.id.to_string()));
    // Sales-ready at 10 points, hot out of reach: routed when it becomes sales-ready.
    put(50_000, 100_000, 10).await;
    let ready = hot_lead(&app, "+79005551901").await;
    let l = app.get(&format!("/api/v1/leads/{ready}"), Some(&app.token)).await.json();
    assert_eq!((l["temperature"].as_str(), l["status"].as_str()), (Some("cold"), Some("sales_ready")), "{l}");
    app.dispatch().await;
    assert_eq!(owner(&app, &ready).await, Some(m.id.to_string()));
    // Neither: a cold lead that is not sales-ready waits.
    let cold = lead(&app, "+79005551902").await;
    app.dispatch().await;
    assert_eq!(owner(&app, &cold).await, None);
}

#[tokio::test]
async fn users_get_their_own_api_tokens_that_carry_their_access() {
    let (app, _) = app_at(MONDAY_10_MSK).await;
    let a = person(&app, "a@firm.ru", "manager", "senior", None, None).await;
    let b = person(&app, "b@firm.ru", "manager", "senior", None, None).await;
    let mine = lead(&app, "+79005552000").await;
    let theirs = lead(&app, "+79005552001").await;
    for (id, who) in [(&mine, a.id), (&theirs, b.id)] {
        let r = app.call("POST", &format!("/api/v1/leads/{id}/assign"), &app.token, Some(&json!({"user_id": who}))).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let ask = |tok: String, user: Uuid, scopes: Value| {
        let app = &app;
        async move {
            app.call("POST", &format!("/api/v1/users/{user}/tokens"), &tok, Some(&json!({"name": "crm sync", "scopes": scopes}))).await
        }
    };
    // An admin issues one for A; A issues another for themself; neither for B by A.
    let r = ask(app.token.clone(), a.id, json!(["leads:read", "leads:write"])).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let issued = r.json()["token"].as_str().unwrap().to_string();
    let r = ask(a.token.clone(), a.id, json!(["leads:read"])).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let read_only = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(ask(a.token.clone(), b.id, json!(["leads:read"])).await.status, 403);
    // The admin scope only for admins.
    let r = ask(app.token.clone(), a.id, json!(["admin"])).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["fields"].get("scopes").is_some(), "{}", r.text());
    // The tokens act as A: A's leads only, and only what their scopes allow.
    for tok in [&issued, &read_only] {
        let page = app.call("GET", "/api/v1/leads", tok, None).await.json();
        let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![mine.as_str()]);
        assert_eq!(app.call("GET", &format!("/api/v1/leads/{theirs}"), tok, None).await.status, 404);
    }
    let note = json!({"kind": "note", "text": "из интеграции"});
    assert_eq!(app.call("POST", &format!("/api/v1/leads/{mine}/activities"), &issued, Some(&note)).await.status, 201);
    assert_eq!(app.call("POST", &format!("/api/v1/leads/{mine}/activities"), &read_only, Some(&note)).await.status, 403);
    let t = app.get(&format!("/api/v1/leads/{mine}/timeline"), Some(&app.token)).await.json();
    let logged = t["items"].as_array().unwrap().iter().find(|i| i["kind"] == "note").unwrap().clone();
    assert_eq!(logged["actor"], "user:a", "the timeline names A as the actor");
}

/// Two processes on one database run the timers at once: every queued lead is assigned
/// once, every escalation and every reminder happens once.
#[tokio::test]
async fn two_stores_running_the_timers_at_once_do_each_thing_once() {
    use voronka_store::routing::RouteOutcome;
    // Monday 07:00 Moscow: nobody on duty yet.
    let (app, clock) = app_at("2027-03-01T04:00:00Z").await;
    let other = voronka_store::Store::open(&voronka_store::StoreConfig::new(&app.db.url), Arc::new(clock.clone())).await.unwrap();
    for n in 0..3 {
        person(&app, &format!("m{n}@firm.ru"), "manager", "senior", None, None).await;
    }
    let mut leads = Vec::new();
    for i in 0..12 {
        let id = lead(&app, &format!("+790055521{i:02}")).await;
        assert_eq!(app.store.route_lead(Uuid::parse_str(&id).unwrap()).await.unwrap(), RouteOutcome::Queued);
        leads.push(id);
    }
    let count = |id: String, kind: &'static str| {
        let app = &app;
        async move {
            let t = app.get(&format!("/api/v1/leads/{id}/timeline?limit=500"), Some(&app.token)).await.json();
            t["items"].as_array().unwrap().iter().filter(|i| i["kind"] == kind).count()
        }
    };
    // 10:00: the shift starts; both drain the queue.
    clock.set(at(MONDAY_10_MSK));
    let (x, y) = tokio::join!(app.store.drain_queue(), other.drain_queue());
    assert_eq!(x.unwrap() + y.unwrap(), 12);
    for id in &leads {
        assert_eq!(count(id.clone(), "assigned").await, 1, "{id}");
    }
    let r = app
        .call(
            "POST",
            &format!("/api/v1/leads/{}/tasks", leads[0]),
            &app.token,
            Some(&json!({"kind": "call", "title": "перезвонить", "due_at": "2027-03-01T08:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Two hours on, nobody touched anything: both escalate and remind.
    clock.advance(Duration::hours(2));
    let (x, y) = tokio::join!(app.store.escalate_due(), other.escalate_due());
    assert_eq!(x.unwrap().len() + y.unwrap().len(), 12);
    assert_eq!(app.store.escalations().await.unwrap().len(), 12);
    for id in &leads {
        assert_eq!(count(id.clone(), "escalated").await, 1, "{id}");
    }
    let (x, y) = tokio::join!(app.store.remind_due_tasks(), other.remind_due_tasks());
    assert_eq!(x.unwrap() + y.unwrap(), 1);
}

#[tokio::test]
async fn a_saved_working_calendar_sets_the_deadlines() {
    // Monday 11:00 Moscow.
    let (app, _) = app_at("2027-03-01T08:00:00Z").await;
    let m = person(&app, "m@firm.ru", "manager", "senior", None, None).await;
    let day = || json!([["10:00", "12:00"]]);
    let cal = json!({"timezone": "Europe/Moscow", "hours": {"mon": day(), "tue": day(), "wed": day(), "thu": day(), "fri": day()}, "holidays": ["2027-03-02"]});
    let r = app.call("PUT", "/api/v1/settings/calendar", &app.token, Some(&cal)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A cold lead: 2 working hours — one on Monday, none on the Tuesday holiday, one on Wednesday.
    let id = lead(&app, "+79005552200").await;
    let r = app.call("POST", &format!("/api/v1/leads/{id}/assign"), &app.token, Some(&json!({"user_id": m.id}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = app.get(&format!("/api/v1/leads/{id}/timeline"), Some(&app.token)).await.json();
    let assigned = t["items"].as_array().unwrap().iter().find(|i| i["kind"] == "assigned").unwrap().clone();
    assert!(assigned["data"]["deadline"].as_str().unwrap().starts_with("2027-03-03T08:00:00"), "{assigned}");
    let bad = json!({"timezone": "Europe/Nowhere", "hours": {}});
    assert_eq!(app.call("PUT", "/api/v1/settings/calendar", &app.token, Some(&bad)).await.status, 422);
}

#[tokio::test]
async fn conversion_times_the_way_to_a_client_and_links_the_person_by_e_mail() {
    let (app, clock) = app_at(MONDAY_10_MSK).await;
    let r = app.lead(json!({"email": "Olga.K@Firm.ru", "name": "Ольга"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let first = r.json()["id"].as_str().unwrap().to_string();
    clock.advance(Duration::days(3) + Duration::hours(2) + Duration::seconds(5));
    let r = app.call("POST", &format!("/api/v1/leads/{first}/convert"), &app.token, Some(&json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["time_to_client_seconds"], 3 * 86_400 + 7_200 + 5);
    let contact = r.json()["contact_id"].clone();
    // Another lead of hers, with a phone and her e-mail spelled otherwise, links to the contact.
    let r = app.lead(json!({"phone": "+79005552300", "name": "Ольга К."})).await;
    let second = r.json()["id"].as_str().unwrap().to_string();
    let r = app
        .call("POST", &format!("/api/v1/leads/{second}/convert"), &app.token, Some(&json!({"contact": {"email": "olga.k@firm.ru"}})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!((r.json()["contact_id"].clone(), r.json()["contact_linked"].as_bool()), (contact.clone(), Some(true)));
    // A new request by e-mail alone opens a new lead linked to her contact.
    let r = app.lead(json!({"email": "OLGA.K@firm.ru", "message": "нужен ещё один заказ"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["contact_id"], contact);
    assert_eq!(r.json()["returning_of"], first.as_str());
}

#[tokio::test]
async fn the_first_touch_is_kept_and_notes_do_not_count() {
    let (app, clock) = app_at(MONDAY_10_MSK).await;
    let m = person(&app, "m@firm.ru", "manager", "senior", None, None).await;
    let id = lead(&app, "+79005552400").await;
    let r = app.call("POST", &format!("/api/v1/leads/{id}/assign"), &app.token, Some(&json!({"user_id": m.id}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let l = r.json();
    assert!(l["assigned_at"].as_str().unwrap().starts_with("2027-03-01T07:00:00"), "{l}");
    assert!(l["sla_due_at"].as_str().unwrap().starts_with("2027-03-01T09:00:00"), "cold: 2 working hours; {l}");
    assert!(l["first_touch_at"].is_null());
    let log = |body: Value| {
        let (app, tok, id) = (&app, m.token.clone(), id.clone());
        async move {
            let r = app.call("POST", &format!("/api/v1/leads/{id}/activities"), &tok, Some(&body)).await;
            assert_eq!(r.status, 201, "{}", r.text());
            app.get(&format!("/api/v1/leads/{id}"), Some(&app.token)).await.json()
        }
    };
    clock.advance(Duration::minutes(5));
    for kind in ["note", "proposal"] {
        assert!(log(json!({"kind": kind, "text": "x"})).await["first_touch_at"].is_null(), "{kind} is not a touch");
    }
    clock.advance(Duration::minutes(5));
    let l = log(json!({"kind": "email", "text": "Добрый день"})).await;
    assert!(l["first_touch_at"].as_str().unwrap().starts_with("2027-03-01T07:10:00"), "{l}");
    clock.advance(Duration::minutes(30));
    let l = log(json!({"kind": "call", "direction": "out", "duration_seconds": 60})).await;
    assert!(l["first_touch_at"].as_str().unwrap().starts_with("2027-03-01T07:10:00"), "the first stays: {l}");
    // Touched in time: never escalated.
    clock.advance(Duration::hours(3));
    assert!(app.store.escalate_due().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_reminder_without_an_assignee_goes_to_the_leads_owner() {
    let (app, clock) = app_at(MONDAY_10_MSK).await;
    let north = app.store.create_team("Север").await.unwrap();
    let south = app.store.create_team("Юг").await.unwrap();
    let head_n = person(&app, "hn@firm.ru", "head_of_sales", "senior", Some(north.id), None).await;
    let head_s = person(&app, "hs@firm.ru", "head_of_sales", "senior", Some(south.id), None).await;
    let m = person(&app, "m@firm.ru", "manager", "senior", Some(north.id), None).await;
    // Postponed while nobody owned it: the reminder task has no assignee; then North takes it.
    let id = lead(&app, "+79005552500").await;
    let r = app
        .call(
            "POST",
            &format!("/api/v1/leads/{id}/status"),
            &app.token,
            Some(&json!({"status": "postponed", "until": "2027-03-02T07:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.call("POST", &format!("/api/v1/leads/{id}/assign"), &app.token, Some(&json!({"user_id": m.id}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    clock.set(at("2027-03-02T07:00:00Z"));
    assert_eq!(app.store.remind_due_tasks().await.unwrap(), 1);
    let due = |tok: String| {
        let app = &app;
        async move {
            let n = app.call("GET", "/api/v1/notifications", &tok, None).await.json();
            n.as_array().unwrap().iter().filter(|x| x["kind"] == "task_due").count()
        }
    };
    assert_eq!(due(m.token.clone()).await, 1, "the manager who now owns the lead");
    assert_eq!(due(head_n.token.clone()).await + due(head_s.token.clone()).await, 0, "no head");
}

/// The dispatcher decides "hot on arrival" from the temperature stored in the new lead's
/// score row, read for a whole claim at once: it is the temperature the API shows.
#[tokio::test]
async fn the_dispatcher_reads_new_leads_temperatures_from_their_score_rows() {
    let app = spawn_app().await;
    let cold = lead(&app, "+79005559001").await;
    let warm = hot_lead(&app, "+79005559002").await;
    let ids: Vec<uuid::Uuid> = [&cold, &warm].iter().map(|s| s.parse().expect("uuid")).collect();
    let got = app.store.stored_temperatures(&ids).await.expect("temperatures");
    assert_eq!(got.len(), 2, "{got:?}");
    for (id, s) in ids.iter().zip([&cold, &warm]) {
        let api = app.get(&format!("/api/v1/leads/{s}"), Some(&app.token)).await.json();
        assert_eq!(got.get(id).map(String::as_str), api["temperature"].as_str(), "{s}");
    }
    assert_ne!(got[&ids[0]], got[&ids[1]], "the events warmed the second lead");
}
