//! Sessions and CSRF for the UI.
//!
//! The session cookie is HttpOnly, SameSite=Lax, and Secure when the request came over
//! HTTPS (directly or through a trusted proxy's `X-Forwarded-Proto`). A new session id is
//! issued at every login; logout deletes the session, so the old cookie stops working.
//! Every state-changing request must carry the session's CSRF token, as the
//! `X-CSRF-Token` header (htmx and app.js send it) or the `_csrf` form field; a request
//! whose `Origin` is another site is refused as well.

use super::{Chrome, ErrorPage, render};
use crate::AppState;
use crate::error::{ApiError, LANG};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;
use voronka_domain::Lang;
use voronka_domain::schedule::{Tz, parse_tz};
use voronka_store::users::{Access, User};

pub const SESSION_COOKIE: &str = "vk_session";
/// The login form's own CSRF token (double submit: cookie and field must match).
pub const LOGIN_CSRF_COOKIE: &str = "vk_login_csrf";
pub const LANG_COOKIE: &str = "vk_lang";

/// The logged-in user of a page request.
#[derive(Clone)]
pub struct Viewer {
    pub user: User,
    pub csrf: String,
    pub lang: Lang,
    pub tz: Tz,
    pub session_id: String,
}

impl Viewer {
    pub fn access(&self) -> Access {
        Access::of(Some(&self.user.as_ref()))
    }
    pub fn actor(&self) -> String {
        format!("user:{}", self.user.name)
    }
    pub fn is(&self, roles: &[&str]) -> bool {
        roles.contains(&self.user.role.as_str())
    }
}

pub fn lang_of(code: &str) -> Lang {
    if code == "ru" { Lang::Ru } else { Lang::En }
}

/// The value of a cookie in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// Whether the browser reached us over HTTPS.
pub fn is_https(st: &AppState, headers: &HeaderMap) -> bool {
    st.cfg.secure_cookies
        || (st.cfg.trust_forwarded_for
            && headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https")))
}

/// A `Set-Cookie` value with the flags every UI cookie carries.
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>, secure: bool, http_only: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; SameSite=Lax");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    if let Some(s) = max_age {
        c.push_str(&format!("; Max-Age={s}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1; Max-Age=0"))
}

pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A request from a page of another site (the browser says so) is refused.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|s| s == "cross-site") {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    if origin == "null" {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    !origin_host.eq_ignore_ascii_case(host)
}

/// Loads the session, checks CSRF on state-changing requests, and sets the language.
pub async fn require(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let sid = cookie(req.headers(), SESSION_COOKIE);
    let session = match &sid {
        Some(s) => st.store.session(s).await,
        None => Ok(None),
    };
    let session = match session {
        Ok(Some(s)) => s,
        Ok(None) => return to_login(&req),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let lang = lang_of(&session.user.lang);
    let tz = parse_tz(&session.user.timezone).unwrap_or(chrono_tz_moscow());
    let viewer = Viewer { csrf: session.csrf, lang, tz, user: session.user, session_id: sid.unwrap_or_default() };
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let req = if unsafe_method {
        match check_csrf(&st, req, &viewer.csrf).await {
            Ok(r) => r,
            Err(()) => {
                tracing::warn!(user = %viewer.user.email, "refused a request without a valid CSRF token");
                let mut c = Chrome::new(&viewer, "", super::i18n::Tr(lang).get("error.title"));
                c.errors = vec![super::i18n::Tr(lang).get("error.csrf").to_string()];
                return render(StatusCode::FORBIDDEN, &ErrorPage { c, status: 403 });
            }
        }
    } else {
        req
    };
    let mut req = req;
    req.extensions_mut().insert(viewer);
    LANG.scope(lang, next.run(req)).await
}

fn chrono_tz_moscow() -> Tz {
    parse_tz("Europe/Moscow").unwrap_or(Tz::UTC)
}

/// Sends a visitor without a session to the login page (htmx follows `HX-Redirect`).
fn to_login(req: &Request) -> Response {
    let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/inbox");
    let target =
        if req.method() == Method::GET && safe_next(next) { format!("/login?next={}", urlencode(next)) } else { "/login".to_string() };
    if super::is_htmx(req.headers()) {
        // A fragment's URL is no page to return to.
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut().insert("hx-redirect", HeaderValue::from_static("/login"));
        return r;
    }
    Redirect::to(&target).into_response()
}

pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).map(|x| x.trim_start_matches('=').to_string()).unwrap_or_default()
}

/// Only a path on this site may be a place to return to after login.
pub fn safe_next(next: &str) -> bool {
    next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") && !next.contains(['\r', '\n'])
}

/// The token from the header, or from the `_csrf` field of an urlencoded body (the body is
/// put back for the handler).
async fn check_csrf(st: &AppState, req: Request, expected: &str) -> Result<Request, ()> {
    if cross_site(req.headers()) {
        return Err(());
    }
    if let Some(h) = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()) {
        return if same(h, expected) { Ok(req) } else { Err(()) };
    }
    let urlencoded = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if !urlencoded {
        return Err(());
    }
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, st.cfg.ui_body_limit).await.map_err(|_| ())?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|_| ())?;
    let given = pairs.iter().find(|(k, _)| k == "_csrf").map(|(_, v)| v.as_str()).ok_or(())?;
    if !same(given, expected) {
        return Err(());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}
