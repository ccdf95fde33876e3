//! Public endpoints that sites post to without a token.

pub mod forms;
pub mod hooks;
pub mod tracker;

use crate::AppState;
use axum::Router;
use axum::http::{Method, header};
use axum::routing::post;
use tower_http::cors::{Any, CorsLayer};

pub fn routes() -> Router<AppState> {
    // A landing page on any domain may post its form here, also with fetch().
    let cors = CorsLayer::new().allow_origin(Any).allow_methods([Method::POST]).allow_headers([header::CONTENT_TYPE, header::ACCEPT]);
    // The explicit OPTIONS route lets the CORS layer answer preflights (the app-wide
    // method-not-allowed fallback would otherwise answer them first).
    Router::new()
        .route(
            "/f/{form_key}",
            post(forms::submit).options(|| async { axum::http::StatusCode::NO_CONTENT }).get(crate::ui::hosted_form::page),
        )
        .layer(cors)
        .route("/t.js", axum::routing::get(tracker::script))
        .route("/hooks/{hook_key}", post(hooks::receive))
}
