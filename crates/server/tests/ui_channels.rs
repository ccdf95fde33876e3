//! The web UI for channels: Settings → Webhooks (triage channels, inbound endpoints,
//! outbound subscriptions with internal addresses refused, dead letters sent again), the
//! unsorted inbox's accept / decline / link, and merge and unmerge from the lead card.

use serde_json::json;
use voronka_testkit::{TestApp, UiSession, spawn_app};

async fn admin(app: &TestApp) -> UiSession {
    app.user("admin@example.ru", "admin", "correct horse battery").await;
    app.ui_login("admin@example.ru", "correct horse battery").await
}

async fn lead(app: &TestApp, body: serde_json::Value) -> String {
    let r = app.lead(body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn webhook_settings_page() {
    let app = spawn_app().await;
    let s = admin(&app).await;
    let page = app.ui_get(&s, "/settings/webhooks").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("id=\"endpoint-form\""));

    // Triage channels.
    let r = app.ui_post(&s, "/settings/webhooks/channels", &[("triage", "chat"), ("triage", "social")]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let channels = app.get("/api/v1/channels", Some(&app.token)).await.json();
    let on: Vec<&str> =
        channels.as_array().expect("list").iter().filter(|c| c["needs_triage"] == true).filter_map(|c| c["code"].as_str()).collect();
    assert_eq!(on, vec!["chat", "social"]);

    // An inbound endpoint: its address and secret are shown.
    let r =
        app.ui_post(&s, "/settings/webhooks/endpoints", &[("name", "Calltouch"), ("kind", "call_tracking"), ("campaign", "calls")]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let eps = app.get("/api/v1/hooks", Some(&app.token)).await.json();
    let ep = &eps[0];
    assert_eq!(ep["channel"], "call");
    let page = app.ui_get(&s, "/settings/webhooks").await.text();
    assert!(page.contains(&format!("/hooks/{}", ep["hook_key"].as_str().unwrap_or("?"))), "address not shown");
    assert!(page.contains(ep["secret"].as_str().unwrap_or("?")), "secret not shown");
    // Bad ones are refused with the field named, and what was typed stays.
    let r = app.ui_post(&s, "/settings/webhooks/endpoints", &[("name", "Лендинг"), ("kind", "generic"), ("mapping", "{not json")]).await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("not JSON") && r.text().contains("{not json"), "{}", r.text());
    // Rotate the secret.
    let id = ep["id"].as_str().expect("id");
    assert_eq!(app.ui_post(&s, &format!("/settings/webhooks/endpoints/{id}/rotate"), &[]).await.status, 303);
    let after = app.get("/api/v1/hooks", Some(&app.token)).await.json();
    assert_ne!(after[0]["secret"], ep["secret"]);
    assert_eq!(app.ui_post(&s, &format!("/settings/webhooks/endpoints/{id}/disable"), &[]).await.status, 303);
    assert_eq!(app.get("/api/v1/hooks", Some(&app.token)).await.json()[0]["active"], false);

    // Outbound: internal addresses are refused on the page too.
    for url in ["http://169.254.169.254/latest", "http://2130706433/", "http://[::ffff:10.0.0.1]/"] {
        let r = app.ui_post(&s, "/settings/webhooks/subscriptions", &[("url", url), ("event", "lead.created")]).await;
        assert_eq!(r.status, 422, "{url}");
        assert!(r.text().contains("internal address"), "{url}: no message");
    }
    let r = app
        .ui_post(
            &s,
            "/settings/webhooks/subscriptions",
            &[("url", "https://93.184.216.34/voronka"), ("event", "lead.created"), ("event", "lead.converted")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let subs = app.get("/api/v1/webhooks", Some(&app.token)).await.json();
    assert_eq!(subs[0]["events"], json!(["lead.converted", "lead.created"]));
    let sid = subs[0]["id"].as_str().expect("id");
    assert_eq!(app.ui_post(&s, &format!("/settings/webhooks/subscriptions/{sid}/delete"), &[]).await.status, 303);
    assert!(app.get("/api/v1/webhooks", Some(&app.token)).await.json().as_array().is_some_and(|a| a.is_empty()));

    // Managers do not see the page.
    app.user("m@example.ru", "manager", "correct horse battery").await;
    let m = app.ui_login("m@example.ru", "correct horse battery").await;
    assert_eq!(app.ui_get(&m, "/settings/webhooks").await.status, 403);
    assert_eq!(app.ui_post(&m, "/settings/webhooks/channels", &[("triage", "call")]).await.status, 403);
}

#[tokio::test]
async fn unsorted_inbox_actions_and_card_merge() {
    let app = spawn_app().await;
    let s = admin(&app).await;
    app.ui_post(&s, "/settings/webhooks/channels", &[("triage", "chat")]).await;
    let existing = lead(&app, json!({"name": "Клиент Старый", "phone": "+79210000077"})).await;
    let a = lead(&app, json!({"name": "Чат Принять", "email": "accept@example.ru", "channel": "chat"})).await;
    let b = lead(&app, json!({"name": "Чат Спам", "email": "spam@example.ru", "channel": "chat"})).await;
    let c = lead(&app, json!({"name": "Чат Привязать", "email": "link@example.ru", "channel": "chat"})).await;

    let page = app.ui_get(&s, "/inbox?tab=unsorted").await.text();
    for id in [&a, &b, &c] {
        assert!(page.contains(&format!("id=\"triage-{id}\"")), "{id} not in the triage block");
    }
    assert!(!page.contains(&format!("id=\"triage-{existing}\"")));
    // Listed once: in the triage block, not again among the leads not taken yet.
    assert_eq!(page.matches(&format!("/leads/{a}\"")).count(), 1, "listed twice");

    assert_eq!(app.ui_post(&s, &format!("/leads/{a}/triage"), &[("action", "accept")]).await.status, 303);
    // Decline needs a reason; the page says so.
    let r = app.ui_post(&s, &format!("/leads/{b}/triage"), &[("action", "decline"), ("reason", "")]).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("a reason from the list is required"), "{}", r.text());
    assert_eq!(app.ui_post(&s, &format!("/leads/{b}/triage"), &[("action", "decline"), ("reason", "spam")]).await.status, 303);
    // Link by the existing lead's phone, typed as people type it.
    let r = app.ui_post(&s, &format!("/leads/{c}/triage"), &[("action", "link"), ("other", "8 921 000-00-77")]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let r = app.ui_post(&s, &format!("/leads/{existing}/triage"), &[("action", "accept")]).await;
    assert_eq!(r.status, 409, "not waiting: {}", r.text());

    let page = app.ui_get(&s, "/inbox?tab=unsorted").await.text();
    assert!(!page.contains("id=\"triage\""), "the triage block should be empty");
    let linked = app.get(&format!("/api/v1/leads/{c}"), Some(&app.token)).await.json();
    assert_eq!(linked["status"], "junk");
    let survivor = app.get(&format!("/api/v1/leads/{existing}"), Some(&app.token)).await.json();
    assert_eq!(survivor["email"], "link@example.ru");

    // The card shows the merge with an Undo button; undo splits them again.
    let card = app.ui_get(&s, &format!("/leads/{existing}")).await.text();
    assert!(card.contains("id=\"merges\""), "no merge log on the card");
    let merges = app.get(&format!("/api/v1/leads/{existing}/merges"), Some(&app.token)).await.json();
    let mid = merges[0]["id"].as_str().expect("merge id");
    let r = app.ui_post(&s, &format!("/merges/{mid}/undo"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(app.get(&format!("/api/v1/leads/{existing}"), Some(&app.token)).await.json()["email"], serde_json::Value::Null);
    assert_eq!(app.get(&format!("/api/v1/leads/{c}"), Some(&app.token)).await.json()["status"], "new");

    // Merge from the card, naming the other lead by e-mail; an unknown one is refused.
    let r = app.ui_post(&s, &format!("/leads/{existing}/merge"), &[("other", "nobody@example.ru")]).await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("no lead with this id, phone or e-mail"));
    let r = app.ui_post(&s, &format!("/leads/{existing}/merge"), &[("other", "ACCEPT@example.ru")]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(app.get(&format!("/api/v1/leads/{a}"), Some(&app.token)).await.json()["status_reason"], "duplicate");
    let card = app.ui_get(&s, &format!("/leads/{a}")).await.text();
    assert!(card.contains("this lead was merged into"), "the merged lead's card says where it went");
}
