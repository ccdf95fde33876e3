//! The REST API under `/api/v1`.

pub mod events;
pub mod leads;
pub mod scoring;

use crate::AppState;
use axum::Router;
use axum::routing::get;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/leads", get(leads::list).post(leads::create))
        .route("/api/v1/leads/{id}", get(leads::get_one))
        .route("/api/v1/leads/{id}/timeline", get(leads::timeline))
        .route("/api/v1/leads/{id}/score", get(scoring::lead_score))
        .route("/api/v1/events", axum::routing::post(events::submit).options(events::preflight))
        .route("/api/v1/scoring/model", get(scoring::get_model).put(scoring::put_model))
        .route("/api/v1/openapi.json", get(crate::openapi::document))
}
