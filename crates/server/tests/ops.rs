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
