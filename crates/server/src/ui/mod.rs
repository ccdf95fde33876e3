//! The web UI: server-rendered pages (askama templates in `templates/ui`), htmx where a
//! page changes in place, sessions with a CSRF token each, Russian and English.
//!
//! Every page goes through `session::require` (login, CSRF on state-changing requests,
//! the user's language and time zone) and `security_headers` (a Content-Security-Policy
//! that allows no inline script or style). Pages read and write through the same store
//! functions as the API, with the viewer's access, so a manager sees only own leads here too.

mod assets;
mod auth;
mod card;
mod dashboard;
pub mod fmt;
pub mod hosted_form;
pub mod i18n;
mod imports;
mod inbox;
mod kanban;
pub mod session;
mod settings;
mod tasks;
mod webhooks;

use crate::AppState;
use crate::error::ApiError;
use askama::Template;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use i18n::Tr;
pub use session::Viewer;
use voronka_domain::Lang;

/// The policy every UI page is served with: scripts, styles and connections only from this
/// origin, no inline code, no framing, forms post only here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub fn routes(state: &AppState) -> Router<AppState> {
    let private = Router::new()
        .route("/inbox", get(inbox::page))
        .route("/inbox/rows", get(inbox::rows))
        .route("/inbox/export.csv", get(inbox::export_csv))
        .route("/inbox/export.xlsx", get(inbox::export_xlsx))
        .route("/leads/{id}", get(card::page))
        .route("/leads/{id}/activity", post(card::activity))
        .route("/leads/{id}/status", post(card::status))
        .route("/leads/{id}/task", post(card::task))
        .route("/leads/{id}/edit", post(card::edit))
        .route("/leads/{id}/assign", post(card::assign))
        .route("/leads/{id}/convert", post(card::convert))
        .route("/leads/{id}/merge", post(card::merge))
        .route("/leads/{id}/triage", post(inbox::triage))
        .route("/merges/{id}/undo", post(card::unmerge))
        .route("/tasks", get(tasks::page))
        .route("/tasks/{id}/done", post(tasks::complete))
        .route("/kanban", get(kanban::page))
        .route("/kanban/move", post(kanban::move_card))
        .route("/dashboard", get(dashboard::page))
        .route("/settings", get(settings::index))
        .route("/settings/sources", get(settings::sources))
        .route("/settings/sites", post(settings::create_site))
        .route("/settings/forms", post(settings::create_form))
        .route("/settings/scoring", get(settings::scoring).post(settings::save_scoring))
        .route("/settings/workflow", get(settings::workflow).post(settings::save_workflow))
        .route("/settings/reasons", get(settings::reasons).post(settings::save_reasons))
        .route("/settings/users", get(settings::users).post(settings::create_user))
        .route("/settings/users/{id}", get(settings::user).post(settings::save_user))
        .route(
            "/settings/import",
            get(imports::show).post(imports::upload).layer(axum::extract::DefaultBodyLimit::max(state.cfg.import_limit)),
        )
        .route("/settings/import/{id}/report.csv", get(imports::report))
        .route("/settings/import/{id}/undo", post(imports::undo))
        .route("/settings/tokens", get(settings::tokens).post(settings::create_token))
        .route("/settings/webhooks", get(webhooks::page))
        .route("/settings/webhooks/channels", post(webhooks::save_channels))
        .route("/settings/webhooks/endpoints", post(webhooks::create_endpoint))
        .route("/settings/webhooks/endpoints/{id}/{action}", post(webhooks::endpoint_action))
        .route("/settings/webhooks/subscriptions", post(webhooks::create_subscription))
        .route("/settings/webhooks/subscriptions/{id}/delete", post(webhooks::delete_subscription))
        .route("/settings/webhooks/deliveries/{id}/retry", post(webhooks::retry_delivery))
        .route("/settings/tokens/{id}/revoke", post(settings::revoke_token))
        .route("/me/lang", post(auth::set_lang))
        .route("/logout", post(auth::logout))
        .layer(middleware::from_fn_with_state(state.clone(), session::require));
    Router::new()
        .route("/", get(root))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/ui/assets/{name}", get(assets::serve))
        .merge(private)
        .layer(middleware::from_fn(security_headers))
}

async fn root(headers: axum::http::HeaderMap) -> Redirect {
    if session::cookie(&headers, session::SESSION_COOKIE).is_some() { Redirect::to("/inbox") } else { Redirect::to("/login") }
}

/// Adds the security headers to every UI response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// What every page's frame shows: navigation, the user, the language, the CSRF token,
/// a message after an action, errors.
pub struct Chrome {
    pub t: Tr,
    pub csrf: String,
    pub user_name: String,
    pub role: String,
    pub nav: &'static str,
    pub title: String,
    pub flash: Option<&'static str>,
    pub errors: Vec<String>,
}

impl Chrome {
    pub fn new(v: &Viewer, nav: &'static str, title: impl Into<String>) -> Chrome {
        Chrome {
            t: Tr(v.lang),
            csrf: v.csrf.clone(),
            user_name: v.user.name.clone(),
            role: v.user.role.clone(),
            nav,
            title: title.into(),
            flash: None,
            errors: Vec::new(),
        }
    }
    /// The text of a key in the page's language.
    pub fn t(&self, key: &str) -> &'static str {
        self.t.get(key)
    }
    pub fn lang(&self) -> &'static str {
        self.t.0.code()
    }
    pub fn other_lang(&self) -> &'static str {
        match self.t.0 {
            Lang::Ru => "en",
            Lang::En => "ru",
        }
    }
    pub fn can_settings(&self) -> bool {
        matches!(self.role.as_str(), "admin" | "head_of_sales" | "marketer")
    }
    /// Shows a flash message named by a known key (`?done=KEY`); unknown keys show nothing.
    pub fn with_flash(mut self, key: Option<&str>) -> Chrome {
        self.flash = key.and_then(i18n::flash_key);
        self
    }
    pub fn with_error(mut self, e: &ApiError) -> Chrome {
        self.errors = error_lines(e, self.t.0);
        self
    }
}

/// An API error as lines a person reads: the message, then each field's problem.
pub fn error_lines(e: &ApiError, lang: Lang) -> Vec<String> {
    let mut out = vec![e.message(lang)];
    out.extend(e.field_messages(lang).into_iter().map(|(f, m)| format!("{f}: {m}")));
    out
}

/// Renders a template into a response with the given status.
pub fn render<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Html("<!doctype html><title>Error</title><p>Internal error / Внутренняя ошибка</p>"))
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
pub struct ErrorPage {
    pub c: Chrome,
    pub status: u16,
}

/// The failures of a page handler, rendered as a page in the viewer's language.
pub struct UiError {
    pub err: ApiError,
    pub viewer: Option<Box<Viewer>>,
}

impl UiError {
    pub fn new(err: impl Into<ApiError>, v: &Viewer) -> UiError {
        UiError { err: err.into(), viewer: Some(Box::new(v.clone())) }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.err.status();
        if let ApiError::Internal(e) = &self.err {
            tracing::error!(error = ?e, "internal error in a page");
        }
        let Some(v) = self.viewer else {
            return (status, self.err.message(crate::error::current_lang())).into_response();
        };
        let c = Chrome::new(&v, "", Tr(v.lang).get("error.title")).with_error(&self.err);
        render(status, &ErrorPage { c, status: status.as_u16() })
    }
}

/// `Result` of page handlers.
pub type Page = Result<Response, UiError>;

/// Pairs of an urlencoded body, with helpers for fields.
pub struct FormData(pub Vec<(String, String)>);

impl FormData {
    pub fn parse(body: &[u8]) -> FormData {
        FormData(serde_urlencoded::from_bytes(body).unwrap_or_default())
    }
    /// The trimmed value, when given and not blank.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }
    pub fn all(&self, k: &str) -> Vec<&str> {
        self.0.iter().filter(|(a, _)| a == k).map(|(_, v)| v.trim()).filter(|v| !v.is_empty()).collect()
    }
    pub fn string(&self, k: &str) -> Option<String> {
        self.get(k).map(String::from)
    }
    pub fn checked(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| v == "on" || v == "1" || v == "true")
    }
}

/// A redirect after a successful POST, with a message key for the next page.
pub fn done(to: &str, flash: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}done={flash}")).into_response()
}

pub fn is_htmx(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key("hx-request")
}
