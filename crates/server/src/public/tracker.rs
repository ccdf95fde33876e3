//! `GET /t.js`: the tracker a site embeds (dependency-free JavaScript, served by the app).

use axum::http::header;
use axum::response::IntoResponse;

pub const TRACKER_JS: &str = include_str!("../../assets/t.js");

pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], TRACKER_JS)
}
