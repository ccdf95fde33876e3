//! Login, logout and the language switch.

use super::i18n::Tr;
use super::session::{
    LANG_COOKIE, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Viewer, cookie, cross_site, is_https, lang_of, safe_next, same, set_cookie,
};
use super::{FormData, render};
use crate::AppState;
use crate::public::forms::client_ip;
use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use std::net::SocketAddr;
use voronka_domain::Lang;
use voronka_store::users::UserSpec;

#[derive(Template)]
#[template(path = "ui/login.html")]
struct LoginPage {
    t: Tr,
    csrf: String,
    email: String,
    next: String,
    error: Option<String>,
}

impl LoginPage {
    fn lang(&self) -> &'static str {
        self.t.0.code()
    }
}

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    serde_urlencoded::from_str(q.unwrap_or("")).unwrap_or_default()
}

/// The language before login: `?lang=`, then the cookie, then `Accept-Language`.
fn anon_lang(headers: &HeaderMap, q: &[(String, String)]) -> (Lang, bool) {
    if let Some((_, l)) = q.iter().find(|(k, _)| k == "lang")
        && (l == "ru" || l == "en")
    {
        return (lang_of(l), true);
    }
    if let Some(l) = cookie(headers, LANG_COOKIE) {
        return (lang_of(&l), false);
    }
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    (Lang::from_accept_language(accept), false)
}

fn login_response(st: &AppState, headers: &HeaderMap, page: LoginPage, status: StatusCode, remember_lang: bool) -> Response {
    let secure = is_https(st, headers);
    let mut r = render(status, &page);
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(LOGIN_CSRF_COOKIE, &page.csrf, Some(3600), secure, true));
    if remember_lang {
        h.append(header::SET_COOKIE, set_cookie(LANG_COOKIE, page.t.0.code(), Some(365 * 86400), secure, true));
    }
    r
}

pub async fn login_page(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let q = query_pairs(q.as_deref());
    let (lang, remember) = anon_lang(&headers, &q);
    let next = q.iter().find(|(k, _)| k == "next").map(|(_, v)| v.clone()).filter(|n| safe_next(n)).unwrap_or_default();
    let csrf = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_else(|| voronka_store::random_key("", 24));
    login_response(&st, &headers, LoginPage { t: Tr(lang), csrf, email: String::new(), next, error: None }, StatusCode::OK, remember)
}

pub async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, super::UiError> {
    let f = FormData::parse(&body);
    let (lang, _) = anon_lang(&headers, &[]);
    let t = Tr(lang);
    let email = f.string("email").unwrap_or_default();
    let next = f.get("next").filter(|n| safe_next(n)).unwrap_or("/inbox").to_string();
    let fresh_csrf = voronka_store::random_key("", 24);
    let page = |error: &str| LoginPage {
        t,
        csrf: fresh_csrf.clone(),
        email: email.clone(),
        next: if next == "/inbox" { String::new() } else { next.clone() },
        error: Some(error.to_string()),
    };
    let internal = |e: voronka_store::StoreError| super::UiError { err: e.into(), viewer: None };
    // Login CSRF: the form's token must match the cookie set with the form.
    let token_ok = match (cookie(&headers, LOGIN_CSRF_COOKIE), f.get("_csrf")) {
        (Some(c), Some(given)) => same(&c, given),
        _ => false,
    };
    if !token_ok || cross_site(&headers) {
        return Ok(login_response(&st, &headers, page(t.get("login.expired")), StatusCode::FORBIDDEN, false));
    }
    let ip = client_ip(&headers, peer, st.cfg.trust_forwarded_for).to_string();
    if let Some(wait) = st.store.login_throttled(&email, &ip).await.map_err(internal)? {
        let msg = t.get("login.throttled").replace("{s}", &wait.to_string());
        let mut r = login_response(&st, &headers, page(&msg), StatusCode::TOO_MANY_REQUESTS, false);
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return Ok(r);
    }
    let password = f.0.iter().find(|(k, _)| k == "password").map(|(_, v)| v.as_str()).unwrap_or("");
    let Some(user) = st.store.check_password(&email, password).await.map_err(internal)? else {
        st.store.record_login_failure(&email, &ip).await.map_err(internal)?;
        tracing::info!(email = %email, ip = %ip, "failed login");
        return Ok(login_response(&st, &headers, page(t.get("login.failed")), StatusCode::UNAUTHORIZED, false));
    };
    st.store.clear_login_failures(&email).await.map_err(internal)?;
    // A new id at every login: a session id planted before login is never used after it.
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        st.store.delete_session(&old).await.map_err(internal)?;
    }
    let sid = st.store.create_session(user.id).await.map_err(internal)?;
    let secure = is_https(&st, &headers);
    let mut r = Redirect::to(&next).into_response();
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &sid, None, secure, true));
    h.append(header::SET_COOKIE, set_cookie(LOGIN_CSRF_COOKIE, "", Some(0), secure, true));
    tracing::info!(user = %user.email, "logged in");
    Ok(r)
}

pub async fn logout(State(st): State<AppState>, Extension(v): Extension<Viewer>, headers: HeaderMap) -> super::Page {
    st.store.delete_session(&v.session_id).await.map_err(|e| super::UiError::new(e, &v))?;
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0), is_https(&st, &headers), true));
    Ok(r)
}

/// Switches the user's language (kept on the user) and returns to the page.
pub async fn set_lang(State(st): State<AppState>, Extension(v): Extension<Viewer>, headers: HeaderMap, body: Bytes) -> super::Page {
    let f = FormData::parse(&body);
    let lang = match f.get("lang") {
        Some(l @ ("ru" | "en")) => l.to_string(),
        _ => return Err(super::UiError::new(crate::ApiError::field("lang", "use ru or en", "допустимо ru или en"), &v)),
    };
    let spec = UserSpec { lang: Some(lang.clone()), ..UserSpec::default() };
    st.store.update_user(v.user.id, &spec).await.map_err(|e| super::UiError::new(e, &v))?;
    let back = f.get("back").filter(|b| safe_next(b)).unwrap_or("/inbox");
    let mut r = Redirect::to(back).into_response();
    r.headers_mut().append(header::SET_COOKIE, set_cookie(LANG_COOKIE, &lang, Some(365 * 86400), is_https(&st, &headers), true));
    Ok(r)
}
