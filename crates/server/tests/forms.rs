//! The public form endpoint `POST /f/{form_key}`.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use voronka_server::AppConfig;
use voronka_store::{CountOf, FormSpec};
use voronka_testkit::*;

async fn form(app: &TestApp, thank_you: Option<&str>) -> String {
    let spec = FormSpec { name: "Лендинг".into(), thank_you_url: thank_you.map(String::from), ..Default::default() };
    app.store.create_form(&spec).await.unwrap().form_key
}

fn post(app: &TestApp, key: &str, ct: &str, body: impl Into<Bytes>) -> hyper::Request<Full<Bytes>> {
    app.req("POST", &format!("/f/{key}")).header("content-type", ct).body(Full::new(body.into())).unwrap()
}

#[tokio::test]
async fn a_urlencoded_form_makes_a_lead_and_redirects_to_thank_you() {
    let app = spawn_app().await;
    let key = form(&app, Some("https://site.ru/thanks")).await;
    let body = "name=%D0%90%D0%BD%D0%BD%D0%B0&phone=8+921+555-12-34&message=%D0%9F%D0%B5%D1%80%D0%B5%D0%B7%D0%B2%D0%BE%D0%BD%D0%B8%D1%82%D0%B5&utm_source=yandex&utm_campaign=flats&size=L";
    let r = send(app.addr, post(&app, &key, "application/x-www-form-urlencoded", body)).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location").as_deref(), Some("https://site.ru/thanks"));
    let page = app.list("").await;
    let lead = &page["items"][0];
    assert_eq!(lead["name"], "Анна");
    assert_eq!(lead["phone"], "+79215551234");
    assert_eq!(lead["message"], "Перезвоните");
    assert_eq!(lead["channel"], "web_form");
    assert_eq!(lead["utm"]["source"], "yandex");
    assert_eq!(lead["utm"]["campaign"], "flats");
    assert_eq!(lead["fields"]["size"], "L");
}

#[tokio::test]
async fn a_multipart_form_is_read_too() {
    let app = spawn_app().await;
    let key = form(&app, None).await;
    let b = "XyZ";
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nПётр\r\n--{b}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\npetr@mail.ru\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nignored\r\n--{b}--\r\n"
    );
    let r = send(app.addr, post(&app, &key, &format!("multipart/form-data; boundary={b}"), body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Thank you") || r.text().contains("Спасибо"));
    let lead = &app.list("").await["items"][0];
    assert_eq!(lead["name"], "Пётр");
    assert_eq!(lead["email"], "petr@mail.ru");
    assert!(lead["fields"].get("file").is_none(), "files are not lead data");
}

#[tokio::test]
async fn a_json_form_gets_a_json_answer() {
    let app = spawn_app().await;
    let key = form(&app, Some("https://site.ru/thanks")).await;
    let r = send(app.addr, post(&app, &key, "application/json", json!({"phone": "+79001234567", "name": "Ян"}).to_string())).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"ok": true}));
    // A urlencoded form asking for JSON gets JSON as well.
    let req = app
        .req("POST", &format!("/f/{key}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from("phone=%2B79001234568")))
        .unwrap();
    let r = send(app.addr, req).await;
    assert_eq!(r.json(), json!({"ok": true}));
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 2);
}

#[tokio::test]
async fn a_filled_honeypot_is_answered_as_success_and_kept_as_spam() {
    let app = spawn_app().await;
    let key = form(&app, Some("https://site.ru/thanks")).await;
    let r =
        send(app.addr, post(&app, &key, "application/x-www-form-urlencoded", "name=Bot&phone=%2B79001234567&_hp=http%3A%2F%2Fspam")).await;
    assert_eq!(r.status, 303);
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 0);
    assert_eq!(app.store.spam_count().await.unwrap(), 1);
    // An empty honeypot is a human.
    let r = send(app.addr, post(&app, &key, "application/x-www-form-urlencoded", "name=Human&phone=%2B79001234567&_hp=")).await;
    assert_eq!(r.status, 303);
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 1);
}

#[tokio::test]
async fn a_form_without_contacts_keeps_the_interest_and_says_what_is_missing() {
    let app = spawn_app().await;
    let key = form(&app, None).await;
    let r = send(app.addr, post(&app, &key, "application/json", json!({"name": "Аноним", "visitor_id": "v-9"}).to_string())).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "contact_required");
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 0);
    assert_eq!(app.store.visitor_interest_count("v-9").await.unwrap(), 1);
    // A plain HTML form gets a page, in the visitor's language, with the XSS-prone referer escaped.
    let req = app
        .req("POST", &format!("/f/{key}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept-language", "ru")
        .header("referer", "https://site.ru/?q=\"><script>alert(1)</script>")
        .body(Full::new(Bytes::from("name=x&phone=123")))
        .unwrap();
    let r = send(app.addr, req).await;
    assert_eq!(r.status, 422);
    let html = r.text();
    assert!(html.contains("Проверьте форму"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    // And the visitor's later submission with contacts brings that interest along.
    let r = send(app.addr, post(&app, &key, "application/json", json!({"phone": "+79001234567", "visitor_id": "v-9"}).to_string())).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.store.visitor_interest_count("v-9").await.unwrap(), 0);
}

#[tokio::test]
async fn the_form_mapping_is_applied() {
    let app = spawn_app().await;
    let mut map = serde_json::Map::new();
    map.insert("your-phone".into(), json!("phone"));
    map.insert("contact_mail".into(), json!("email"));
    let spec = FormSpec {
        name: "CF7".into(),
        field_map: map,
        channel: Some("callback".into()),
        campaign: Some("autumn".into()),
        ..Default::default()
    };
    let key = app.store.create_form(&spec).await.unwrap().form_key;
    let r = send(app.addr, post(&app, &key, "application/x-www-form-urlencoded", "your-phone=89001234567&contact_mail=a%40b.ru")).await;
    assert_eq!(r.status, 200);
    let lead = &app.list("").await["items"][0];
    assert_eq!(lead["phone"], "+79001234567");
    assert_eq!(lead["email"], "a@b.ru");
    assert_eq!(lead["channel"], "callback");
    assert_eq!(lead["campaign"], "autumn");
}

#[tokio::test]
async fn submissions_over_the_per_ip_limit_get_429_with_retry_after() {
    let cfg = AppConfig { form_rate_per_minute: 3, ..AppConfig::default() };
    let app = spawn_app_with(cfg, std::sync::Arc::new(voronka_domain::SystemClock)).await;
    let key = form(&app, None).await;
    for i in 0..3 {
        let r = send(app.addr, post(&app, &key, "application/json", json!({"phone": format!("+7900123456{i}")}).to_string())).await;
        assert_eq!(r.status, 200);
    }
    let r = send(app.addr, post(&app, &key, "application/json", json!({"phone": "+79001234569"}).to_string())).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 3);
}

#[tokio::test]
async fn unknown_forms_oversized_bodies_and_odd_content_types_are_refused() {
    let app = spawn_app().await;
    let r = send(app.addr, post(&app, "f_nope", "application/json", "{}")).await;
    assert_eq!(r.status, 404);
    let key = form(&app, None).await;
    let r = send(
        app.addr,
        post(&app, &key, "application/x-www-form-urlencoded", format!("phone=%2B79001234567&message={}", "a".repeat(80_000))),
    )
    .await;
    assert_eq!(r.status, 413);
    let r = send(app.addr, post(&app, &key, "text/xml", "<phone>1</phone>")).await;
    assert_eq!(r.status, 415);
    let r = send(app.addr, post(&app, &key, "application/json", "{\"phone\":")).await;
    assert_eq!(r.status, 400);
    assert_eq!(app.store.count(CountOf::Leads).await.unwrap(), 0);
}

#[tokio::test]
async fn forms_answer_cors_preflight_from_any_site() {
    let app = spawn_app().await;
    let key = form(&app, None).await;
    let req = app
        .req("OPTIONS", &format!("/f/{key}"))
        .header("origin", "https://landing.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(app.addr, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("*"));
}
