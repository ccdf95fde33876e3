//! The web UI in a real browser: Debian's Chromium through chromedriver (WebDriver).
//! A manager's day — log in, a lead from a site's form, the card, a call, a refusal, a
//! conversion, the kanban, the scoring editor, the language switch — and an XSS corpus that
//! must execute nothing on any page. Screenshots of every page land in
//! `artifacts/screenshots/`.

use axum::response::Html;
use serde_json::{Value, json};
use std::time::Duration;
use voronka_testkit::browser::Browser;
use voronka_testkit::browser::fantoccini::Locator;
use voronka_testkit::browser::fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use voronka_testkit::*;

const PASSWORD: &str = "correct horse battery";

async fn login(b: &Browser, base: &str, email: &str) {
    b.goto(&format!("{base}/login")).await;
    b.fill("#email", email).await;
    b.fill("#password", PASSWORD).await;
    b.click("#login-submit").await;
    b.el("#rows").await;
}

async fn lead_status(app: &TestApp, id: &str) -> String {
    app.get(&format!("/api/v1/leads/{id}"), Some(&app.token)).await.json()["status"].as_str().unwrap_or("").to_string()
}

/// Serves `html` as a page of another site; returns its URL.
async fn site_page(html: String) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let page = axum::Router::new().route("/contacts", axum::routing::get(move || async move { Html(html.clone()) }));
    tokio::spawn(async move { axum::serve(l, page).await.ok() });
    format!("http://{addr}/contacts")
}

async fn drag(b: &Browser, card_css: &str, column_css: &str) {
    let card = b.el(card_css).await;
    let column = b.el(column_css).await;
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement { element: card, duration: None, x: 0.0, y: 10.0 })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::MoveBy { duration: Some(Duration::from_millis(100)), x: 20.0, y: 0.0 })
        .then(PointerAction::MoveToElement { element: column, duration: Some(Duration::from_millis(200)), x: 0.0, y: 0.0 })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    b.client.perform_actions(mouse).await.expect("drag");
}

#[tokio::test]
async fn a_managers_day_in_a_real_browser() {
    let app = spawn_app().await;
    app.user("admin@example.com", "admin", PASSWORD).await;
    let base = format!("http://{}", app.addr);
    let b = Browser::start("day", "en-US,en").await;

    // The login page, then a wrong password, then the right one.
    b.goto(&format!("{base}/login")).await;
    b.shot("01-login").await;
    b.fill("#email", "admin@example.com").await;
    b.fill("#password", "wrong").await;
    b.click("#login-submit").await;
    assert!(b.text(".errors").await.contains("Wrong e-mail or password"));
    login(&b, &base, "admin@example.com").await;

    // Settings: a site and a form; the embed code goes onto the site's page.
    b.goto(&format!("{base}/settings/sources")).await;
    b.fill("#site-form input[name=name]", "Главный сайт").await;
    b.click("#site-form button").await;
    b.el("#sites .sub").await;
    b.fill("#form-form input[name=name]", "Обратная связь").await;
    b.click("#form-form button").await;
    let embed = b.el("#forms textarea").await.prop("value").await.unwrap().unwrap();
    assert!(embed.contains(&format!("action=\"{base}/f/f_")), "{embed}");
    b.shot("02-settings-sources").await;
    let site = site_page(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>ООО Ромашка</title></head><body><h1>Контакты</h1>{embed}</body></html>"
    ))
    .await;

    // A visitor fills the form on the site.
    b.goto(&site).await;
    b.fill("input[name=name]", "Мария Иванова").await;
    b.fill("input[name=phone]", "8 (921) 700-11-22").await;
    b.fill("input[name=email]", "maria@romashka.ru").await;
    b.fill("textarea[name=message]", "Нужен расчёт на 20 рабочих мест").await;
    b.click("button").await;
    b.until(
        "the thank-you page",
        "return document.body.innerText.indexOf('Thank you') >= 0 || document.body.innerText.indexOf('Спасибо') >= 0",
    )
    .await;

    // The lead is in the inbox; a lead arriving now appears without a reload.
    b.goto(&format!("{base}/inbox")).await;
    b.until("the form's lead", "return document.getElementById('rows').innerText.indexOf('Мария Иванова') >= 0").await;
    assert!(b.text("#rows").await.contains("+7 921 700-11-22"), "the phone is shown formatted");
    b.js("window.__sameDocument = true", vec![]).await;
    let r = app.lead(json!({"name": "Денис Новый", "phone": "+79217001133", "channel": "call"})).await;
    assert_eq!(r.status, 201);
    b.until("the live row", "return document.getElementById('rows').innerText.indexOf('Денис Новый') >= 0").await;
    assert_eq!(b.js("return window.__sameDocument === true", vec![]).await, Value::Bool(true), "no reload happened");
    b.fill("#search", "+7 921 700 11 22").await;
    b.click("#apply-filters").await;
    b.until("the search", "return document.getElementById('rows').innerText.indexOf('Денис') < 0 && document.getElementById('rows').innerText.indexOf('Мария') >= 0").await;
    b.shot("03-inbox").await;

    // The card: log a call, then refuse with a reason.
    b.click("#rows a.lead-link").await;
    b.el("#lead-name").await;
    assert_eq!(b.text("#lead-name").await, "Мария Иванова");
    b.select("#activity-kind", "call").await;
    b.fill("#activity-duration", "4").await;
    b.fill("#activity-result", "Просит КП").await;
    b.fill("#activity-text", "Обсудили 20 мест, нужен счёт").await;
    b.click("#activity-submit").await;
    b.until("the call on the timeline", "return document.getElementById('timeline').innerText.indexOf('Обсудили 20 мест') >= 0").await;
    assert!(b.text("#flash").await.contains("Logged"));
    b.shot("04-card").await;
    b.select("#status-select", "refused").await;
    assert!(b.el("#reason-refused").await.is_displayed().await.unwrap(), "the refusal reasons show for a refusal");
    assert!(!b.el("#reason-junk").await.is_displayed().await.unwrap());
    b.click("#status-submit").await;
    assert!(b.text(".errors").await.contains("reason"), "a refusal without a reason is refused");
    b.select("#status-select", "refused").await;
    b.select("#reason-refused", "price").await;
    b.click("#status-submit").await;
    b.until("the refused badge", "return document.getElementById('lead-status').dataset.status === 'refused'").await;
    let maria = b.url().await.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    assert_eq!(lead_status(&app, &maria).await, "refused");

    // Convert the other lead: a bad INN is named, a good one converts.
    let denis = app.list("q=Денис").await["items"][0]["id"].as_str().unwrap().to_string();
    b.goto(&format!("{base}/leads/{denis}")).await;
    b.click("#convert-open").await;
    b.fill("#convert-form input[name=company_name]", "ООО Новый Век").await;
    b.fill("#convert-inn", "7707083890").await;
    b.click("#convert-submit").await;
    assert!(b.text(".errors").await.contains("company.inn"));
    b.fill("#convert-inn", "7707083893").await;
    b.fill("#convert-form input[name=deal_amount]", "250000").await;
    b.click("#convert-submit").await;
    b.until("the converted badge", "return document.getElementById('lead-status').dataset.status === 'converted'").await;
    assert_eq!(lead_status(&app, &denis).await, "converted");
    b.shot("05-card-converted").await;

    // The kanban: a drag moves a lead; a forbidden move is refused with a message.
    let r = app.lead(json!({"name": "Егор Канбан", "phone": "+79217001144"})).await;
    let egor = r.json()["id"].as_str().unwrap().to_string();
    b.goto(&format!("{base}/kanban")).await;
    let card = format!(".kcard[data-id='{egor}']");
    b.el(&card).await;
    drag(&b, &card, "#col-qualified .kcards").await;
    b.until("the refusal message", "return document.getElementById('flash').innerText.indexOf('cannot move from new to qualified') >= 0")
        .await;
    assert_eq!(lead_status(&app, &egor).await, "new");
    assert_eq!(b.count(&format!("#col-new {card}")).await, 1, "the card stays");
    drag(&b, &card, "#col-in_progress .kcards").await;
    b.until("the moved card", &format!("return document.querySelector(\"#col-in_progress .kcard[data-id='{egor}']\") !== null")).await;
    assert_eq!(lead_status(&app, &egor).await, "in_progress");
    b.shot("06-kanban").await;
    // A click on a card's name still opens it.
    b.click(&format!("{card} a")).await;
    b.until("the card page", "return document.getElementById('lead-name') !== null").await;

    // Tasks and the dashboard with its charts.
    b.goto(&format!("{base}/tasks?view=team")).await;
    b.el("#task-list").await;
    b.shot("07-tasks").await;
    b.goto(&format!("{base}/dashboard")).await;
    b.until("the charts", "return document.querySelectorAll('canvas[data-drawn]').length === 3").await;
    assert_eq!(b.text("#dash-total").await, "3");
    b.shot("08-dashboard").await;

    // The scoring editor: a bad rule is named, the typed model stays.
    b.goto(&format!("{base}/settings/scoring")).await;
    let model: Value = serde_json::from_str(&b.el("#json-model").await.prop("value").await.unwrap().unwrap()).unwrap();
    let rule = model["rules"][0]["id"].as_str().unwrap().to_string();
    let mut bad = model.clone();
    bad["rules"][0]["points"] = json!("lots");
    b.js("document.getElementById('json-model').value = arguments[0]", vec![json!(serde_json::to_string_pretty(&bad).unwrap())]).await;
    b.click("#save-model").await;
    let errors = b.text(".errors").await;
    assert!(errors.contains(&rule), "the rule is named: {errors}");
    assert!(b.el("#json-model").await.prop("value").await.unwrap().unwrap().contains("lots"));
    b.shot("09-settings-scoring-error").await;
    for (page, shot) in [
        ("workflow", "10-settings-workflow"),
        ("reasons", "11-settings-reasons"),
        ("users", "12-settings-users"),
        ("tokens", "13-settings-tokens"),
    ] {
        b.goto(&format!("{base}/settings/{page}")).await;
        b.el(".tabs").await;
        b.shot(shot).await;
    }

    // The language switch keeps the page.
    b.goto(&format!("{base}/kanban")).await;
    b.click("#switch-lang").await;
    b.until("Russian", "return document.documentElement.lang === 'ru'").await;
    assert!(b.url().await.ends_with("/kanban"));
    assert!(b.text("header nav").await.contains("Входящие"));
    b.shot("14-kanban-ru").await;

    // Log out: the inbox asks for a login again.
    b.click("#logout").await;
    b.el("#login-form").await;
    b.goto(&format!("{base}/inbox")).await;
    b.el("#login-form").await;
    b.close().await;
}

/// What the public internet may put into a lead.
const XSS: &[&str] = &[
    "<script>window.__xss=1</script>",
    "<img src=x onerror=\"window.__xss=2\">",
    "\"><svg onload=window.__xss=3>",
    "javascript:window.__xss=4",
    "' onmouseover='window.__xss=5' x='",
    "</textarea><script>window.__xss=6</script>",
    "<a href=\"javascript:window.__xss=7\">click</a>",
    "<iframe srcdoc=\"<script>parent.__xss=8</script>\">",
];

#[tokio::test]
async fn an_xss_corpus_in_every_field_executes_nothing() {
    let app = spawn_app().await;
    let admin = app.user("admin@example.com", "admin", PASSWORD).await;
    let form = app.store.create_form(&voronka_store::FormSpec { name: "Форма".into(), ..Default::default() }).await.unwrap();
    // The form's requests wait for triage, so the payloads also fill the unsorted inbox's
    // triage block; webhook settings carry them too.
    app.store.set_channel_triage("web_form", true).await.unwrap();
    app.store
        .create_hook_endpoint(&voronka_store::hooks::NewEndpoint {
            name: XSS[2],
            kind: "generic",
            channel: "web_form",
            campaign: None,
            mapping: &serde_json::json!({"phone": XSS[0]}),
        })
        .await
        .unwrap();
    let fields = [
        "name",
        "company",
        "position",
        "city",
        "message",
        "interest",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
        "referrer",
        "landing_page",
        "custom_field",
    ];
    for (i, payload) in XSS.iter().enumerate() {
        let mut pairs: Vec<(String, String)> = fields.iter().map(|f| (f.to_string(), payload.to_string())).collect();
        pairs.push(("phone".into(), format!("+7921600{:04}", i)));
        pairs.push(("email".into(), format!("x{i}@example.com")));
        let body = serde_urlencoded::to_string(&pairs).unwrap();
        let req = app
            .req("POST", &format!("/f/{}", form.form_key))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        assert!(send(app.addr, req).await.status < 300);
    }
    let items = app.list("limit=50").await["items"].as_array().unwrap().clone();
    let first = items[0]["id"].as_str().unwrap().to_string();
    app.store
        .create_task(
            first.parse().unwrap(),
            &voronka_store::workflow::NewTask { kind: "call", title: XSS[1], due: None, assignee: Some(admin.id) },
            "t",
            &voronka_store::users::Access::All,
        )
        .await
        .unwrap();

    let base = format!("http://{}", app.addr);
    let b = Browser::start("xss", "en-US,en").await;
    login(&b, &base, "admin@example.com").await;
    let mut pages: Vec<String> = [
        "/inbox",
        "/inbox?sort=created",
        "/inbox?tab=unsorted",
        "/kanban",
        "/tasks?view=team",
        "/dashboard",
        "/settings/sources",
        "/settings/webhooks",
    ]
    .iter()
    .map(|p| format!("{base}{p}"))
    .collect();
    pages.extend(items.iter().map(|l| format!("{base}/leads/{}", l["id"].as_str().unwrap())));
    pages.push(format!("{base}/f/{}", form.form_key));
    for (i, url) in pages.iter().enumerate() {
        b.goto(url).await;
        b.el("body").await;
        // Hover and click every payload-bearing element, as a curious manager would.
        for e in b.client.find_all(Locator::Css("td, dd, .kcard, .pre, li")).await.unwrap_or_default().into_iter().take(60) {
            let _ = b
                .client
                .perform_actions(MouseActions::new("m".into()).then(PointerAction::MoveToElement {
                    element: e,
                    duration: None,
                    x: 0.0,
                    y: 0.0,
                }))
                .await;
        }
        let alert = b.client.get_alert_text().await;
        assert!(alert.is_err(), "{url} opened an alert: {alert:?}");
        let ran = b.js("return window.__xss === undefined ? null : window.__xss", vec![]).await;
        assert_eq!(ran, Value::Null, "{url}: payload {ran} executed");
        // Escaping holds on its own, not only the CSP: no element came from a payload.
        let injected = b
            .js(
                "return document.querySelectorAll('script:not([src]), img[onerror], svg[onload], iframe, [onmouseover], a[href^=\"javascript:\"]').length",
                vec![],
            )
            .await;
        assert_eq!(injected, json!(0), "{url} has elements made from a payload");
        if i < 8 || i == pages.len() - 1 {
            b.shot(&format!("{:02}-{}", i, url.trim_start_matches(&base).trim_start_matches('/').replace(['/', '?', '='], "_"))).await;
        }
    }
    // The payloads are on the pages as text.
    b.goto(&format!("{base}/leads/{first}")).await;
    let shown = b.text("#lead-name").await;
    assert!(shown.contains("__xss=") && shown.contains('<'), "the payload is shown as text: {shown}");
    b.close().await;
}
