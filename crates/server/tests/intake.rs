//! Lead intake over `POST /api/v1/leads`: normalisation, dedup, idempotency, validation.
//! Runs on the backend named by VORONKA_TEST_BACKEND.

use serde_json::{Value, json};
use voronka_domain::LeadStatus;
use voronka_store::CountOf;
use voronka_testkit::*;

#[tokio::test]
async fn every_phone_format_of_the_spec_reaches_one_lead() {
    let app = spawn_app().await;
    let first = app.lead(json!({"name": "Виктор", "phone": "8 (921) 555-12-34"})).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let id = first.json()["id"].clone();
    assert_eq!(first.json()["phone"], "+79215551234");
    for (i, phone) in ["+7 921 5551234", "89215551234"].iter().enumerate() {
        let r = app.lead(json!({"phone": phone})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let b = r.json();
        assert_eq!(b["id"], id);
        assert_eq!(b["repeat"], true);
        assert_eq!(b["repeat_count"], i as i64 + 1);
    }
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 1);
}

#[tokio::test]
async fn emails_are_normalised_and_match_in_any_case() {
    let app = spawn_app().await;
    let r = app.lead(json!({"email": "  Victor.P@Example.RU "})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["email"], "victor.p@example.ru");
    let again = app.lead(json!({"email": "VICTOR.P@example.ru"})).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], r.json()["id"]);
}

#[tokio::test]
async fn repeat_request_from_same_phone_joins_the_open_lead_and_is_on_its_timeline() {
    let app = spawn_app().await;
    let a = app.lead(json!({"name": "Анна", "phone": "+79001234567", "message": "первый"})).await.json();
    let b = app.lead(json!({"phone": "89001234567", "email": "anna@firma.ru", "message": "второй"})).await;
    assert_eq!(b.status, 200);
    let b = b.json();
    assert_eq!(b["id"], a["id"]);
    // The repeat request filled the e-mail the lead lacked, and the e-mail now finds the lead.
    assert_eq!(b["email"], "anna@firma.ru");
    let c = app.lead(json!({"email": "ANNA@firma.ru"})).await;
    assert_eq!(c.json()["id"], a["id"]);
    let t = app.get(&format!("/api/v1/leads/{}/timeline", a["id"].as_str().unwrap()), Some(&app.token)).await.json();
    let kinds: Vec<&str> = t["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["repeat_request", "repeat_request", "lead_created"]);
    assert_eq!(t["items"][1]["data"]["submission"]["message"], "второй");
}

#[tokio::test]
async fn a_refused_lead_makes_the_next_submission_a_returning_lead_linked_to_it() {
    let app = spawn_app().await;
    let old = app.lead(json!({"phone": "+79001112233"})).await.json();
    let old_id: uuid::Uuid = old["id"].as_str().unwrap().parse().unwrap();
    app.store.set_status(old_id, LeadStatus::Refused, Some("price"), None).await.unwrap();
    let new = app.lead(json!({"phone": "8 900 111 22 33"})).await;
    assert_eq!(new.status, 201, "{}", new.text());
    let new = new.json();
    assert_ne!(new["id"], old["id"]);
    assert_eq!(new["returning"], true);
    assert_eq!(new["returning_of"], old["id"]);
    // Later submissions are repeats on the new, open lead.
    let again = app.lead(json!({"phone": "+79001112233"})).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], new["id"]);
    // The old lead is kept, and says where the person went.
    let old_now = app.get(&format!("/api/v1/leads/{old_id}"), Some(&app.token)).await.json();
    assert_eq!(old_now["status"], "refused");
    let t = app.get(&format!("/api/v1/leads/{old_id}/timeline"), Some(&app.token)).await.json();
    assert_eq!(t["items"][0]["kind"], "lead_returned");
}

#[tokio::test]
async fn a_junk_lead_also_makes_a_returning_lead() {
    let app = spawn_app().await;
    let old = app.lead(json!({"email": "spam@example.ru"})).await.json();
    app.store.set_status(old["id"].as_str().unwrap().parse().unwrap(), LeadStatus::Junk, Some("spam"), None).await.unwrap();
    let new = app.lead(json!({"email": "spam@example.ru"})).await;
    assert_eq!(new.status, 201);
    assert_eq!(new.json()["returning_of"], old["id"]);
}

#[tokio::test]
async fn two_concurrent_submissions_with_one_phone_make_one_lead_and_one_repeat() {
    for _ in 0..5 {
        let app = spawn_app().await;
        let (a, b) =
            tokio::join!(app.lead(json!({"phone": "+79005556677", "name": "A"})), app.lead(json!({"phone": "89005556677", "name": "B"})));
        let mut statuses = vec![a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, vec![200, 201]);
        assert_eq!(a.json()["id"], b.json()["id"]);
        assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn fifty_concurrent_submissions_of_one_person_make_one_lead() {
    let app = spawn_app().await;
    let futs = (0..50).map(|i| {
        let body = if i % 2 == 0 { json!({"phone": "+79007778899"}) } else { json!({"phone": "8 (900) 777-88-99", "email": "p@x.ru"}) };
        app.lead(body)
    });
    let results = futures_util::future::join_all(futs).await;
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 1);
    assert_eq!(results.iter().filter(|r| r.status == 200).count(), 49);
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 1);
    let lead = app.get(&format!("/api/v1/leads/{}", results[0].json()["id"].as_str().unwrap()), Some(&app.token)).await.json();
    assert_eq!(lead["repeat_count"], 49);
}

#[tokio::test]
async fn idempotent_retry_returns_the_first_answer_and_creates_nothing() {
    let app = spawn_app().await;
    let body = json!({"name": "Олег", "phone": "+79001230000"});
    let send = |key: &'static str, body: Value| {
        let r = app
            .req("POST", "/api/v1/leads")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", app.token))
            .header("idempotency-key", key)
            .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        send(app.addr, r)
    };
    let first = send("key-1", body.clone()).await;
    assert_eq!(first.status, 201);
    let second = send("key-1", body.clone()).await;
    assert_eq!(second.status, 201, "the replay has the first answer's status");
    assert_eq!(second.body, first.body, "the replay has the first answer's body");
    assert_eq!(second.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 1);
    assert_eq!(app.store.count(CountOf::Events).await.unwrap(), 1);

    let other = send("key-1", json!({"name": "Другой", "phone": "+79001230000"})).await;
    assert_eq!(other.status, 409);
    assert_eq!(other.json()["error"]["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn a_hundred_concurrent_requests_with_one_key_make_one_lead() {
    let app = spawn_app().await;
    let body = json!({"phone": "+79004445566"}).to_string();
    let futs = (0..100).map(|_| {
        let r = app
            .req("POST", "/api/v1/leads")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", app.token))
            .header("idempotency-key", "same-key")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        send(app.addr, r)
    });
    let results = futures_util::future::join_all(futs).await;
    let odd: Vec<u16> = results.iter().map(|r| r.status).filter(|s| *s != 201).collect();
    assert!(
        odd.is_empty(),
        "statuses other than 201: {odd:?}; first body: {}",
        results.iter().find(|r| r.status != 201).map(|r| r.text()).unwrap_or_default()
    );
    let ids: std::collections::HashSet<String> = results.iter().map(|r| r.json()["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 1);
    assert_eq!(app.store.count(CountOf::Events).await.unwrap(), 1, "no repeat events either");
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_token() {
    let app = spawn_app().await;
    let other = app.token_with(&["leads:write"]).await;
    let mk = |token: String, phone: &str| {
        app.req("POST", "/api/v1/leads")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", "k")
            .body(http_body_util::Full::new(bytes::Bytes::from(json!({"phone": phone}).to_string())))
            .unwrap()
    };
    assert_eq!(send(app.addr, mk(app.token.clone(), "+79001000001")).await.status, 201);
    assert_eq!(send(app.addr, mk(other, "+79001000002")).await.status, 201);
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 2);
}

#[tokio::test]
async fn each_bad_field_is_named_with_422() {
    let app = spawn_app().await;
    let r = app
        .lead(json!({"phone": "+79001234567", "email": "not-an-email", "budget": "много", "utm": {"source": 5, "medium": []},
                     "consent": {"at": "вчера"}, "channel": "Web Form"}))
        .await;
    assert_eq!(r.status, 422);
    let e = r.json();
    assert_eq!(e["error"]["code"], "invalid_fields");
    let fields: Vec<&String> = e["error"]["fields"].as_object().unwrap().keys().collect();
    assert_eq!(fields, vec!["budget", "channel", "consent.at", "email", "utm.medium"]);
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 0, "nothing half-saved");
}

#[tokio::test]
async fn no_usable_contact_is_contact_required() {
    let app = spawn_app().await;
    for body in [json!({"name": "Без контактов"}), json!({"phone": "12"}), json!({"phone": "", "email": " "}), json!({})] {
        let r = app.lead(body.clone()).await;
        assert_eq!(r.status, 422, "{body}");
        assert_eq!(r.json()["error"]["code"], "contact_required", "{body}");
    }
    let r = app.lead(json!({"phone": "12"})).await;
    assert!(r.json()["error"]["fields"]["phone"].is_string());
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 0);
}

#[tokio::test]
async fn errors_speak_russian_when_asked() {
    let app = spawn_app().await;
    let r = app
        .req("POST", "/api/v1/leads")
        .header("content-type", "application/json")
        .header("accept-language", "ru-RU,ru;q=0.9,en;q=0.5")
        .header("authorization", format!("Bearer {}", app.token))
        .body(http_body_util::Full::new(bytes::Bytes::from(r#"{"phone":"1"}"#)))
        .unwrap();
    let r = send(app.addr, r).await;
    assert_eq!(r.json()["error"]["message"], "Нужен корректный телефон, e-mail или мессенджер");
}

#[tokio::test]
async fn malformed_json_and_wrong_content_type_get_json_errors() {
    let app = spawn_app().await;
    let raw = |ct: &str, body: &'static str| {
        app.req("POST", "/api/v1/leads")
            .header("content-type", ct)
            .header("authorization", format!("Bearer {}", app.token))
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    let r = send(app.addr, raw("application/json", "{\"phone\": ")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "malformed_json");
    let r = send(app.addr, raw("text/plain", "phone=1")).await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"]["code"], "unsupported_media_type");
    let r = send(app.addr, raw("application/json", "[1,2,3]")).await;
    assert_eq!(r.status, 422);
    let r = send(app.addr, raw("application/json", "\"phone\"")).await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app().await;
    let big = "я".repeat(70 * 1024);
    let r = app.lead(json!({"phone": "+79001234567", "message": big})).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 0);
}

#[tokio::test]
async fn tokens_and_scopes_are_checked() {
    let app = spawn_app().await;
    let body = json!({"phone": "+79001234567"});
    let r = app.post_json("/api/v1/leads", None, &body).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let r = app.post_json("/api/v1/leads", Some("vk_not_a_token"), &body).await;
    assert_eq!(r.status, 401);
    let reader = app.token_with(&["leads:read"]).await;
    let r = app.post_json("/api/v1/leads", Some(&reader), &body).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "forbidden");
    let writer = app.token_with(&["leads:write"]).await;
    let created = app.post_json("/api/v1/leads", Some(&writer), &body).await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(app.get(&format!("/api/v1/leads/{id}"), Some(&writer)).await.status, 403);
    assert_eq!(app.get(&format!("/api/v1/leads/{id}"), Some(&reader)).await.status, 200);
    assert_eq!(app.get("/api/v1/leads", None).await.status, 401);
    assert_eq!(app.get(&format!("/api/v1/leads/{id}/timeline"), Some(&writer)).await.status, 403);
}

#[tokio::test]
async fn injection_strings_and_unicode_are_stored_and_returned_exactly() {
    let app = spawn_app().await;
    let samples = [
        "Robert'); DROP TABLE leads;--",
        "' OR '1'='1",
        "\" OR 1=1; SELECT * FROM api_tokens --",
        "Ёлка Иванова-Щукина",
        "Zoë 🦊🚀 こんにちは",
        "\u{202e}ytinummoc\u{202c} \u{200f}שלום\u{200e}",
        "back\\slash % _ like",
        "tab\there\nnewline",
    ];
    for (i, s) in samples.iter().enumerate() {
        let r = app
            .lead(json!({"name": s, "company": s, "message": s, "phone": format!("+7900000{:04}", i), "utm": {"term": s}, "fields": {"note": s}}))
            .await;
        assert_eq!(r.status, 201, "{s}: {}", r.text());
        let id = r.json()["id"].as_str().unwrap().to_string();
        let lead = app.get(&format!("/api/v1/leads/{id}"), Some(&app.token)).await.json();
        for field in ["name", "company", "message"] {
            assert_eq!(lead[field], *s, "{field}");
        }
        assert_eq!(lead["utm"]["term"], *s);
        assert_eq!(lead["fields"]["note"], *s);
    }
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), samples.len() as i64);
    // The tables are still there and searchable.
    let page = app.list("q=DROP%20TABLE").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_answer_carries_every_api_field() {
    let app = spawn_app().await;
    let r = app
        .lead(json!({"name":"Виктор","phone":"+7 (921) 555-12-34","email":"v@example.ru","messenger":"@victor",
            "company":"ООО Ромашка","position":"CEO","city":"Москва","interest":"2-комнатная квартира",
            "message":"free text of the request","budget":2000000,
            "channel":"web_form","campaign":"spring-2027","source":"landing-1",
            "utm":{"source":"yandex","medium":"cpc","campaign":"flats","content":"a","term":"купить"},
            "referrer":"https://ya.ru/","landing_page":"https://site.ru/","tracking_number":"+74951234567",
            "visitor_id":"v-123","external_id":"crm-1","fields":{"any":"custom"},
            "consent":{"marketing":true,"text":"Согласен на обработку","at":"2027-03-01T10:00:00Z"}}))
        .await;
    assert_eq!(r.status, 201);
    assert!(r.header("location").unwrap().starts_with("/api/v1/leads/"));
    let l = r.json();
    assert_eq!(l["status"], "new");
    assert_eq!(l["repeat"], false);
    // Profile points of the starter model: phone and e-mail +3, company +2, CEO +3, Moscow +2.
    assert_eq!(l["score"], 10.0);
    assert_eq!(l["temperature"], "warm");
    assert_eq!(l["grade"], "A");
    assert_eq!(l["owner"], Value::Null);
    assert_eq!(l["messenger"], "telegram:victor");
    assert_eq!(l["tracking_number"], "+74951234567");
    assert_eq!(l["utm"]["campaign"], "flats");
    assert_eq!(l["budget"], 2000000.0);
    assert_eq!(l["consent"]["marketing"], true);
    assert_eq!(l["consent"]["at"], "2027-03-01T10:00:00.000000Z");
    assert_eq!(l["contact_id"], Value::Null);
    let stored = app.get(&format!("/api/v1/leads/{}", l["id"].as_str().unwrap()), Some(&app.token)).await.json();
    let mut answered = l.as_object().unwrap().clone();
    answered.remove("repeat");
    answered.remove("returning");
    assert_eq!(Value::Object(answered), stored, "the answer is the stored lead");
}

#[tokio::test]
async fn unknown_lead_ids_are_404() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/leads/0190f5c2-0000-7000-8000-000000000000",
        "/api/v1/leads/not-a-uuid",
        "/api/v1/leads/0190f5c2-0000-7000-8000-000000000000/timeline",
    ] {
        let r = app.get(path, Some(&app.token)).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn anonymous_interest_of_a_visitor_joins_the_lead() {
    let app = spawn_app().await;
    let at = app.store.now();
    app.store.record_interest(Some("vis-42"), None, "page_view", at, &json!({"url": "https://site/prices"})).await.unwrap();
    let r = app.lead(json!({"phone": "+79001234567", "visitor_id": "vis-42"})).await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(app.store.visitor_interest_count("vis-42").await.unwrap(), 0);
    let t = app.get(&format!("/api/v1/leads/{id}/timeline"), Some(&app.token)).await.json();
    let kinds: Vec<&str> = t["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"page_view"), "{kinds:?}");
}

#[tokio::test]
async fn every_lead_gets_an_outbox_row_in_the_same_commit() {
    let app = spawn_app().await;
    app.lead(json!({"phone": "+79001234567"})).await;
    app.lead(json!({"phone": "+79001234567"})).await;
    app.lead(json!({"phone": "+79001234568"})).await;
    assert_eq!(app.store.count(CountOf::Outbox).await.unwrap(), 3);
    assert_eq!(app.store.count(CountOf::Identities).await.unwrap(), 2);
}

#[tokio::test]
async fn idempotency_keys_are_forgotten_after_a_day() {
    let clock = voronka_domain::TestClock::new(chrono::Utc::now());
    let app = spawn_app_with(voronka_server::AppConfig::default(), std::sync::Arc::new(clock.clone())).await;
    let state = voronka_server::AppState::new(app.store.clone(), voronka_server::AppConfig::default());
    let post = |phone: &'static str| {
        let r = app
            .req("POST", "/api/v1/leads")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", app.token))
            .header("idempotency-key", "daily")
            .body(http_body_util::Full::new(bytes::Bytes::from(json!({"phone": phone}).to_string())))
            .unwrap();
        send(app.addr, r)
    };
    assert_eq!(post("+79001110001").await.status, 201);
    clock.advance(chrono::Duration::hours(23));
    voronka_server::jobs::run_upkeep_once(&state).await;
    assert_eq!(post("+79001110002").await.status, 409, "still remembered after 23 hours");
    clock.advance(chrono::Duration::hours(2));
    voronka_server::jobs::run_upkeep_once(&state).await;
    assert_eq!(post("+79001110002").await.status, 201, "forgotten after 25 hours");
}

/// While another connection holds the database's write lock (SQLite) or a lock on the
/// leads table (PostgreSQL), a submission waits and is committed once it is released:
/// it is neither refused nor answered before its commit.
#[tokio::test]
async fn a_submission_waits_for_a_lock_held_elsewhere_and_commits_after_it() {
    let app = spawn_app().await;
    // Background work (the search indexer) yields to recent submissions; none yet.
    let recently = std::time::Duration::from_secs(60);
    assert!(!app.store.intake().active_within(recently));
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = if backend() == "sqlite" {
        let path = app.db.url.strip_prefix("sqlite://").expect("sqlite url").to_string();
        std::thread::spawn(move || {
            let mut c = rusqlite::Connection::open(&path).expect("open");
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).expect("lock");
            let _ = held_tx.send(());
            let _ = release_rx.recv();
            tx.commit().expect("release");
        })
    } else {
        let url = app.db.url.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
                let mut tx = c.begin().await.expect("begin");
                sqlx::query("LOCK TABLE leads IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await.expect("lock");
                let _ = held_tx.send(());
                let _ = release_rx.recv();
                tx.commit().await.expect("release");
            })
        })
    };
    held_rx.await.expect("the lock is held");
    let a = app.addr;
    let token = app.token.clone();
    let submit = tokio::spawn(async move {
        send(a, json_request(a, "POST", "/api/v1/leads", Some(&token), Some(&json!({"name": "Ждёт", "phone": "+79031112233"})))).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(!submit.is_finished(), "answered while the lock was held elsewhere");
    release_tx.send(()).expect("release");
    let r = submit.await.expect("submit");
    assert_eq!(r.status, 201, "{}", r.text());
    holder.join().expect("holder");
    let id = r.json()["id"].as_str().expect("id").to_string();
    let got = app.get(&format!("/api/v1/leads/{id}"), Some(&app.token)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["phone"], "+79031112233");
    assert!(app.store.intake().active_within(recently));
}
