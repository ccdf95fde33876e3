//! `GET /f/{form_key}`: a page with the form itself, for a link in an ad, a QR code or a
//! message when the company has no site. It posts to the same `POST /f/{form_key}` as an
//! embedded form, through the same intake pipeline.

use super::i18n::Tr;
use super::render;
use crate::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use voronka_domain::Lang;

#[derive(Template)]
#[template(path = "ui/hosted_form.html")]
struct HostedForm {
    t: Tr,
    name: String,
    key: String,
    honeypot: String,
}

impl HostedForm {
    fn lang(&self) -> &'static str {
        self.t.0.code()
    }
}

pub async fn page(State(st): State<AppState>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let lang = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).map(Lang::from_accept_language).unwrap_or_default();
    let form = match st.store.form_by_key(&key).await {
        Ok(Some(f)) => f,
        Ok(None) => return (StatusCode::NOT_FOUND, Tr(lang).get("form.unknown")).into_response(),
        Err(e) => return crate::ApiError::from(e).into_response(),
    };
    let mut r = render(StatusCode::OK, &HostedForm { t: Tr(lang), name: form.name, key: form.form_key, honeypot: form.honeypot_field });
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(super::CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    r
}
