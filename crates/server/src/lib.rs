//! The HTTP server of Voronka: the REST API (`api`), public endpoints that sites post to
//! (`public`), operations endpoints (`ops`), and the middleware they share.

pub mod api;
pub mod auth;
pub mod error;
pub mod import;
pub mod jobs;
pub mod openapi;
pub mod ops;
pub mod public;
pub mod ui;
pub mod webhooks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use voronka_domain::{Lang, PhoneRegion};
use voronka_store::Store;

pub use error::ApiError;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Region for phones written without a country code.
    pub region: PhoneRegion,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Public form submissions allowed per client IP per minute (and as a burst).
    pub form_rate_per_minute: u32,
    /// Take the client IP from `X-Forwarded-For` and the scheme from `X-Forwarded-Proto`
    /// (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Always mark the session cookie `Secure` (the site is served over HTTPS).
    pub secure_cookies: bool,
    /// Largest body of a UI form (settings editors take more than API calls).
    pub ui_body_limit: usize,
    /// Largest file an import upload may be (API and UI).
    pub import_limit: usize,
    /// Let outbound webhooks reach loopback addresses (tests and local development only;
    /// every other internal address stays refused).
    pub webhook_allow_loopback: bool,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            region: PhoneRegion::default(),
            body_limit: 64 * 1024,
            form_rate_per_minute: 20,
            trust_forwarded_for: false,
            secure_cookies: false,
            ui_body_limit: 1024 * 1024,
            import_limit: 256 * 1024 * 1024,
            webhook_allow_loopback: false,
        }
    }
}

pub struct Inner {
    pub store: Store,
    pub cfg: AppConfig,
    pub tokens: auth::TokenCache,
    pub form_limiter: public::forms::Limiter,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Store, cfg: AppConfig) -> AppState {
        ops::install_metrics();
        let form_limiter = public::forms::Limiter::new(cfg.form_rate_per_minute);
        AppState(Arc::new(Inner { store, cfg, tokens: auth::TokenCache::default(), form_limiter }))
    }
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.cfg.body_limit;
    Router::new()
        .merge(api::routes())
        .merge(api::upload_routes().layer(DefaultBodyLimit::max(state.cfg.import_limit)))
        .merge(public::routes())
        .merge(ops::routes())
        .merge(ui::routes(&state).layer(DefaultBodyLimit::max(state.cfg.ui_body_limit)))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Sets the request's language for error texts and records request metrics.
async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let lang = req
        .headers()
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(Lang::from_accept_language)
        .unwrap_or_default();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let resp = error::LANG.scope(lang, next.run(req)).await;
    ops::record_request(method, route, resp.status().as_u16(), start.elapsed());
    resp
}

/// Serves until `shutdown` resolves; in-flight requests finish first. Prints
/// `listening on http://ADDR` once the listener accepts.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(state);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
