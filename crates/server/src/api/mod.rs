//! The REST API under `/api/v1`.

pub mod leads;

use crate::AppState;
use axum::Router;
use axum::routing::get;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/leads", get(leads::list).post(leads::create))
        .route("/api/v1/leads/{id}", get(leads::get_one))
        .route("/api/v1/leads/{id}/timeline", get(leads::timeline))
        .route("/api/v1/openapi.json", get(crate::openapi::document))
}
