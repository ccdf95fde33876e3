//! `POST /f/{form_key}`: the endpoint a landing page's plain HTML form posts to. Accepts
//! urlencoded, multipart and JSON bodies; maps the fields through the form's mapping;
//! answers with a 303 to the thank-you URL, or JSON when asked.

use crate::error::{ApiError, current_lang};
use crate::{AppState, ops};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use voronka_domain::Lang;
use voronka_domain::LeadInput;
use voronka_domain::lead::{IntakeDefaults, Rejection};
use voronka_store::{Form, IntakeCommand};

/// Per-IP limit on public form submissions.
pub struct Limiter {
    inner: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Limiter {
    pub fn new(per_minute: u32) -> Limiter {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Limiter { inner: RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)), clock: DefaultClock::default() }
    }

    /// `Err(seconds to wait)` when the address is over its limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.inner.len() > 100_000 {
            self.inner.retain_recent();
        }
        self.inner.check_key(&ip).map_err(|nu| nu.wait_time_from(self.clock.now()).as_secs_f64().ceil() as u64)
    }
}

/// Fields of the request that steer the answer, not the lead.
const CONTROL_FIELDS: &[&str] = &["_format", "_lang"];

pub fn client_ip(headers: &HeaderMap, peer: SocketAddr, trust_forwarded: bool) -> IpAddr {
    if trust_forwarded
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|s| s.trim().parse().ok())
    {
        return ip;
    }
    peer.ip()
}

fn wants_json(headers: &HeaderMap, pairs: &[(String, String)]) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.contains("application/json") || crate::api::leads::is_json(headers) || pairs.iter().any(|(k, v)| k == "_format" && v == "json")
}

fn mime(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads the submitted fields from any of the three encodings, in order.
async fn read_fields(headers: &HeaderMap, req: Request) -> Result<Vec<(String, String)>, ApiError> {
    let kind = mime(headers);
    if kind == "multipart/form-data" {
        let mut mp = Multipart::from_request(req, &()).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE { ApiError::PayloadTooLarge } else { ApiError::MalformedJson(e.body_text()) }
        })?;
        let mut out = Vec::new();
        loop {
            match mp.next_field().await {
                Ok(Some(field)) => {
                    let name = field.name().unwrap_or("").to_string();
                    let is_file = field.file_name().is_some();
                    let text = field.text().await.map_err(|e| {
                        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                            ApiError::PayloadTooLarge
                        } else {
                            ApiError::MalformedJson(e.body_text())
                        }
                    })?;
                    if !is_file && !name.is_empty() {
                        out.push((name, text));
                    }
                }
                Ok(None) => break,
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(ApiError::PayloadTooLarge),
                Err(e) => return Err(ApiError::MalformedJson(e.body_text())),
            }
        }
        return Ok(out);
    }
    let body = Bytes::from_request(req, &()).await?;
    if kind == "application/x-www-form-urlencoded" || (kind.is_empty() && !body.is_empty() && !body.starts_with(b"{")) {
        return serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body).map_err(|e| ApiError::MalformedJson(e.to_string()));
    }
    if crate::api::leads::is_json(headers) || (kind.is_empty() && body.starts_with(b"{")) {
        let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        let Value::Object(o) = v else {
            return Err(ApiError::MalformedJson("expected a JSON object".into()));
        };
        return Ok(o
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k, s)
            })
            .collect());
    }
    if body.is_empty() {
        return Ok(Vec::new());
    }
    Err(ApiError::UnsupportedMediaType("application/x-www-form-urlencoded, multipart/form-data or application/json"))
}

pub async fn submit(
    State(st): State<AppState>,
    Path(form_key): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    let form = st.store.form_by_key(&form_key).await?.ok_or(ApiError::NotFound)?;
    let ip = client_ip(&headers, peer, st.cfg.trust_forwarded_for);
    if let Err(wait) = st.form_limiter.check(ip) {
        ops::record_intake("form", "rate_limited");
        return Err(ApiError::RateLimited { retry_after_secs: wait });
    }
    let pairs = read_fields(&headers, req).await?;
    let json_answer = wants_json(&headers, &pairs);
    let lang = current_lang();

    // A bot fills every field, including the one humans never see.
    if pairs.iter().any(|(k, v)| *k == form.honeypot_field && !v.trim().is_empty()) {
        let data = json!({ "fields": pairs_json(&pairs), "user_agent": header_str(&headers, header::USER_AGENT) });
        st.store.record_spam(Some(form.id), Some(&ip.to_string()), "honeypot", &data).await?;
        ops::record_intake("form", "spam");
        return Ok(success(&form, json_answer, lang));
    }

    let mut skip: Vec<&str> = CONTROL_FIELDS.to_vec();
    skip.push(form.honeypot_field.as_str());
    let defaults = IntakeDefaults { channel: form.channel.clone(), campaign: form.campaign.clone(), region: st.cfg.region };
    match LeadInput::from_form(&pairs, &form.field_map, &skip, &defaults) {
        Ok(mut lead) => {
            if lead.referrer.is_none() {
                lead.referrer = header_str(&headers, header::REFERER).map(|r| r.chars().take(2048).collect());
            }
            let cmd =
                IntakeCommand { lead, idempotency: None, actor: Some(format!("form:{}", form.name)), form_id: Some(form.id), import: None };
            let reply = st.store.intake().submit(cmd).await?;
            ops::record_intake("form", reply.outcome.as_str());
            Ok(success(&form, json_answer, lang))
        }
        Err(rejection) => {
            if let Rejection::ContactRequired(_) = &rejection {
                // Not a lead, but not nothing: the visitor's interest is kept.
                let visitor = pairs
                    .iter()
                    .find(|(k, _)| voronka_domain::lead::default_form_name(k) == "visitor_id")
                    .map(|(_, v)| v.trim())
                    .filter(|v| !v.is_empty() && v.len() <= 100);
                let data = json!({ "form_id": form.id, "fields": pairs_json(&pairs) });
                st.store.record_interest(visitor, form.site_id, "form_without_contact", st.store.now(), &data).await?;
                ops::record_intake("form", "interest");
            } else {
                ops::record_intake("form", "invalid_fields");
            }
            let err = ApiError::from(rejection);
            if json_answer { Err(err) } else { Ok(error_page(&err, lang, header_str(&headers, header::REFERER))) }
        }
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

fn pairs_json(pairs: &[(String, String)]) -> Value {
    Value::Array(pairs.iter().map(|(k, v)| json!([k, v])).collect())
}

fn success(form: &Form, json_answer: bool, lang: Lang) -> Response {
    if json_answer {
        return (StatusCode::OK, axum::Json(json!({"ok": true}))).into_response();
    }
    match form.thank_you_url.as_deref().and_then(|u| HeaderValue::from_str(u).ok()) {
        Some(loc) => (StatusCode::SEE_OTHER, [(header::LOCATION, loc)]).into_response(),
        None => {
            let (title, text) = match lang {
                Lang::Ru => ("Спасибо!", "Заявка принята. Мы скоро свяжемся с вами."),
                Lang::En => ("Thank you!", "Your request has been received. We will be in touch soon."),
            };
            Html(page(lang, title, text, None)).into_response()
        }
    }
}

fn error_page(err: &ApiError, lang: Lang, referer: Option<String>) -> Response {
    let mut text = escape(&err.message(lang));
    if let Some(fields) = err.fields() {
        text.push_str("<ul>");
        for (k, v) in fields.localized(lang) {
            text.push_str(&format!("<li><b>{}</b>: {}</li>", escape(&k), escape(&v)));
        }
        text.push_str("</ul>");
    }
    let back = referer.filter(|r| r.starts_with("https://") || r.starts_with("http://"));
    let title = if lang == Lang::Ru { "Проверьте форму" } else { "Please check the form" };
    (err.status(), Html(page(lang, title, &text, back.as_deref()))).into_response()
}

fn page(lang: Lang, title: &str, body_html: &str, back: Option<&str>) -> String {
    let back_link = back
        .map(|b| {
            let label = if lang == Lang::Ru { "Вернуться к форме" } else { "Back to the form" };
            format!("<p><a href=\"{}\">{label}</a></p>", escape(b))
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title></head><body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{}</h1><p>{}</p>{}</body></html>",
        lang.code(),
        escape(title),
        escape(title),
        body_html,
        back_link
    )
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
