//! `POST /api/v1/events`: tracker events of a site's visitor (public, by site key; CORS
//! limited to the site's origins), or events of a lead sent with a token.

use crate::error::ApiError;
use crate::{AppState, ops};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;
use voronka_domain::errors::{FieldErrors, Text};
use voronka_store::{EventsCommand, Site, TrackedEvent, Ts};

/// Events in one request.
pub const MAX_EVENTS: usize = 100;

const NOT_LIST: Text = Text::new("must be a list of 1 to 100 events", "нужен список из 1–100 событий");
const BAD_TYPE: Text = Text::new(
    "use lower-case latin letters, digits, '-' and '_' (at most 50)",
    "допустимы строчные латинские буквы, цифры, '-' и '_' (не более 50)",
);
const TOO_LONG: Text = Text::new("too long", "слишком длинное значение");
const NOT_STRING: Text = Text::new("must be a string", "должно быть строкой");
const BAD_TIME: Text = Text::new("must be an RFC 3339 time, not in the future", "нужно время в RFC 3339, не в будущем");
const NOT_OBJECT: Text = Text::new("must be an object of at most 4 KB", "должно быть объектом не более 4 КБ");
const BAD_VISITOR: Text = Text::new(
    "use at most 100 latin letters, digits, '-', '_', '.' or ':'",
    "допустимо до 100 латинских букв, цифр, '-', '_', '.' или ':'",
);
const NEEDS_TOKEN: Text = Text::new("events of a lead need an API token", "для событий лида нужен API-токен");
const NEEDS_WHO: Text = Text::new("give visitor_id or lead_id", "укажите visitor_id или lead_id");
const BAD_UUID: Text = Text::new("must be a lead id", "нужен идентификатор лида");

fn string(v: Option<&Value>, field: String, max: usize, errors: &mut FieldErrors) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.contains('\0') => {
            errors.add(field, NOT_STRING);
            None
        }
        Some(Value::String(s)) if s.chars().count() > max => {
            errors.add(field, TOO_LONG);
            None
        }
        Some(Value::String(s)) => Some(s.clone()).filter(|s| !s.trim().is_empty()),
        Some(_) => {
            errors.add(field, NOT_STRING);
            None
        }
    }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Reads the events of a request, naming every bad field (`events[3].type`…).
pub fn parse_events(v: &Value, now: DateTime<Utc>, errors: &mut FieldErrors) -> Vec<TrackedEvent> {
    let Some(list) = v.get("events").and_then(Value::as_array).filter(|l| (1..=MAX_EVENTS).contains(&l.len())) else {
        errors.add("events", NOT_LIST);
        return Vec::new();
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let at = |f: &str| format!("events[{i}].{f}");
        let kind = match e.get("type").and_then(Value::as_str).map(str::trim) {
            Some(t) if voronka_domain::lead::is_slug(t) => t.to_string(),
            _ => {
                errors.add(at("type"), BAD_TYPE);
                continue;
            }
        };
        let url = string(e.get("url"), at("url"), 2048, errors);
        let name = string(e.get("name"), at("name"), 200, errors);
        let when = match e.get("at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) if t.with_timezone(&Utc) <= now + chrono::Duration::minutes(5) => Some(Ts::from(t.with_timezone(&Utc))),
                _ => {
                    errors.add(at("at"), BAD_TIME);
                    None
                }
            },
            Some(_) => {
                errors.add(at("at"), BAD_TIME);
                None
            }
        };
        let data = match e.get("data") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(d @ Value::Object(_)) if d.to_string().len() <= 4096 && !has_nul(d) => d.clone(),
            Some(_) => {
                errors.add(at("data"), NOT_OBJECT);
                Value::Null
            }
        };
        out.push(TrackedEvent { kind, url, name, at: when, data });
    }
    out
}

fn visitor_ok(v: &str) -> bool {
    !v.is_empty() && v.len() <= 100 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

fn site_key_of<'a>(body: &'a Value, query: Option<&'a str>) -> Option<String> {
    body.get("site_key").and_then(Value::as_str).map(String::from).or_else(|| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "site_key")
            .map(|(_, v)| v)
    })
}

/// Whether a browser on `origin` may send this site's events; a site without configured
/// origins accepts any.
fn origin_allowed(site: &Site, origin: Option<&str>) -> bool {
    match origin {
        None => true,
        Some(o) => site.origins.is_empty() || site.origins.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o)),
    }
}

fn cors(resp: &mut Response, origin: Option<&str>) {
    if let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[utoipa::path(post, path = "/api/v1/events", tag = "events",
    request_body(content = Object, description = "{\"site_key\":\"s_…\",\"visitor_id\":\"…\",\"events\":[{\"type\":\"page_view\",\"url\":\"…\",\"at\":\"…\"},{\"type\":\"video_view\",\"name\":\"tour\"}]}; or lead_id with a token"),
    responses((status = 202, description = "Accepted: {\"accepted\": N}"), (status = 401, description = "Unknown site key or token"),
        (status = 403, description = "The Origin is not one of the site's"), (status = 404, description = "Unknown lead_id"),
        (status = 422, description = "Bad fields, each named")))]
pub async fn submit(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let tokened = headers.contains_key(header::AUTHORIZATION);
    let mut access = voronka_store::users::Access::All;
    let (site, actor) = if tokened {
        let t = st.tokens.authorize_any(&st.store, &headers, &["events:write", "leads:write"]).await?;
        access = t.access();
        (None, t.actor())
    } else {
        let key = site_key_of(&v, q.as_deref()).ok_or(ApiError::UnknownSiteKey)?;
        let site = st.store.site_by_key(&key).await?.ok_or(ApiError::UnknownSiteKey)?;
        if !origin_allowed(&site, origin) {
            return Err(ApiError::OriginNotAllowed);
        }
        let actor = format!("site:{}", site.name);
        (Some(site), actor)
    };
    let mut errors = FieldErrors::new();
    let events = parse_events(&v, st.store.clock().now(), &mut errors);
    let visitor_id = match v.get("visitor_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if visitor_ok(s) => Some(s.clone()),
        Some(_) => {
            errors.add("visitor_id", BAD_VISITOR);
            None
        }
    };
    let lead_id = match v.get("lead_id") {
        None | Some(Value::Null) => None,
        Some(_) if !tokened => {
            errors.add("lead_id", NEEDS_TOKEN);
            None
        }
        Some(l) => match l.as_str().and_then(|s| Uuid::parse_str(s).ok()) {
            Some(id) => Some(id),
            None => {
                errors.add("lead_id", BAD_UUID);
                None
            }
        },
    };
    if visitor_id.is_none() && lead_id.is_none() && !errors.contains("visitor_id") && !errors.contains("lead_id") {
        errors.add("visitor_id", NEEDS_WHO);
    }
    if !errors.is_empty() {
        return Err(ApiError::InvalidFields(errors));
    }
    if let Some(l) = lead_id
        && !st.store.can_see(l, &access).await?
    {
        return Err(ApiError::NotFound);
    }
    let n = events.len();
    let cmd = EventsCommand { site_id: site.as_ref().map(|s| s.id), visitor_id, lead_id, events, actor: Some(actor) };
    let reply = st.store.intake().track(cmd).await?;
    metrics::counter!("tracked_events_total").increment(n as u64);
    ops::record_intake("events", if reply.lead_id.is_some() { "scored" } else { "interest" });
    let body = if tokened { json!({"accepted": reply.accepted, "lead_id": reply.lead_id}) } else { json!({"accepted": reply.accepted}) };
    let mut resp = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if site.is_some() {
        cors(&mut resp, origin);
    }
    Ok(resp)
}

/// CORS preflight: allowed when the page's origin is one of the site's (`?site_key=`).
pub async fn preflight(State(st): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Result<Response, ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let key = site_key_of(&Value::Null, q.as_deref()).ok_or(ApiError::UnknownSiteKey)?;
    let site = st.store.site_by_key(&key).await?.ok_or(ApiError::UnknownSiteKey)?;
    if origin.is_none() || !origin_allowed(&site, origin) {
        return Err(ApiError::OriginNotAllowed);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    cors(&mut resp, origin);
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    Ok(resp)
}
