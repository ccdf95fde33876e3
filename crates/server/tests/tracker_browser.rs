//! The tracker in a real browser: headless Chromium (Debian's `chromium`) loads a page on
//! another origin that embeds `/t.js`; the page view and a named action arrive as the
//! visitor's interest, and the form on the page carries the visitor id.

use axum::response::Html;
use std::time::Duration;
use voronka_testkit::*;

fn chromium() -> String {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"] {
        if std::path::Path::new(c).exists() {
            return c.to_string();
        }
    }
    panic!("Chromium is required for the browser tests (Debian package `chromium`; scripts/test installs it)");
}

#[tokio::test]
async fn the_tracker_reports_page_views_and_actions_from_a_real_browser() {
    let app = spawn_app().await;
    // The site's page, on an origin of its own.
    let page_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_addr = page_listener.local_addr().unwrap();
    let site = app.store.create_site("Лендинг", &[format!("http://{page_addr}")]).await.unwrap();
    let form = app.store.create_form(&voronka_store::FormSpec { name: "Заявка".into(), ..Default::default() }).await.unwrap();
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Цены</title></head><body>
<form id="lead" action="http://{app}/f/{form}" method="post"><input name="phone"></form>
<script src="http://{app}/t.js" data-site-key="{site}" async></script>
<script>window.addEventListener("load", function () {{ voronka.track("video_view", {{name: "tour"}}); voronka.flush(); }});</script>
</body></html>"#,
        app = app.addr,
        form = form.form_key,
        site = site.site_key
    );
    let page = axum::Router::new().route("/prices", axum::routing::get(move || async move { Html(html.clone()) }));
    tokio::spawn(async move { axum::serve(page_listener, page).await.ok() });

    let profile = TempDir::new();
    let out = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.0.display()),
            "--virtual-time-budget=5000",
            "--dump-dom",
            &format!("http://{page_addr}/prices"),
        ])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("chromium finished").expect("chromium ran");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let dom = String::from_utf8_lossy(&out.stdout);

    // The form now carries the visitor id.
    let marker = r#"name="visitor_id""#;
    let at = dom.find(marker).unwrap_or_else(|| panic!("no visitor_id input in the page: {dom}"));
    let tag_start = dom[..at].rfind('<').unwrap();
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>').unwrap()];
    let vid = tag.split(r#"value=""#).nth(1).and_then(|v| v.split('"').next()).expect("a visitor id value").to_string();
    assert!(vid.len() >= 16, "{vid}");

    // The page view and the action arrived as the visitor's interest.
    let mut n = 0;
    for _ in 0..100 {
        n = app.store.visitor_interest_count(&vid).await.unwrap();
        if n >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n >= 2, "{n} events arrived for visitor {vid}");

    // When the visitor leaves contacts, the interest becomes the lead's score.
    let r = app.lead(serde_json::json!({"phone": "+79004440000", "visitor_id": vid})).await;
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let s = app.get(&format!("/api/v1/leads/{id}/score"), Some(&app.token)).await.json();
    let rules: Vec<&str> = s["explanation"].as_array().unwrap().iter().map(|e| e["rule"].as_str().unwrap()).collect();
    assert!(rules.contains(&"page_view") && rules.contains(&"page_view_pricing") && rules.contains(&"video_view"), "{rules:?}");
}
