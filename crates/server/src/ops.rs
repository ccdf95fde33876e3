//! Operations endpoints: liveness, readiness, Prometheus metrics.

use crate::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use std::sync::OnceLock;
use std::time::Duration;

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once.
pub fn install_metrics() {
    METRICS.get_or_init(|| {
        let buckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &buckets)
            .and_then(|b| b.install_recorder())
            .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
            .ok()
    });
}

pub fn record_request(method: String, route: String, status: u16, elapsed: Duration) {
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route).record(elapsed.as_secs_f64());
}

/// Counts an intake outcome: created, repeat, returning, replayed, contact_required,
/// invalid_fields, spam, interest, idempotency_conflict, rate_limited, failed.
pub fn record_intake(channel: &'static str, outcome: &'static str) {
    metrics::counter!("intake_outcomes_total", "endpoint" => channel, "outcome" => outcome).increment(1);
}

/// Outbound webhook attempts by result: delivered, retry, dead.
pub fn record_webhook(result: &'static str) {
    metrics::counter!("webhook_deliveries_total", "result" => result).increment(1);
}

/// Inbound webhook events by kind and outcome.
pub fn record_hook(kind: &'static str, outcome: &'static str) {
    metrics::counter!("hook_events_total", "kind" => kind, "outcome" => outcome).increment(1);
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(prometheus))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "The database answers"), (status = 503, description = "The database does not answer (`reason` `database`), or the intake can no longer acknowledge leads (`intake_stopped`: a flush of the database failed)")))]
pub async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    if !st.store.intake().is_running() {
        tracing::warn!("readiness: the intake stopped acknowledging (see the error logged when it stopped)");
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "unavailable", "reason": "intake_stopped"})));
    }
    match tokio::time::timeout(Duration::from_secs(2), st.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, axum::Json(json!({"status": "ready", "database": st.store.backend().name()}))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database error");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "unavailable", "reason": "database"})))
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "unavailable", "reason": "database"}))),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
pub async fn prometheus() -> impl IntoResponse {
    let body = match METRICS.get().and_then(Option::as_ref) {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
