//! Leads: intake over the API, one lead, the filtered list, the timeline.

use crate::error::ApiError;
use crate::{AppState, ops};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use voronka_domain::errors::{FieldErrors, Text};
use voronka_domain::lead::{IntakeDefaults, search_needle};
use voronka_domain::{LeadInput, LeadStatus};
use voronka_store::{
    Cursor, ExactContact, IdempotencyKey, IntakeCommand, IntakeOutcome, Lead, LeadFilter, LeadPage, LeadSort, TimelinePage, Ts,
};

const BAD_KEY: Text = Text::new("use 1 to 255 visible ASCII characters", "допустимо от 1 до 255 видимых ASCII-символов");

/// The request body of `POST /api/v1/leads`; every field is optional, but one contact
/// (phone, e-mail or messenger) must be usable. Unknown names are kept as custom fields.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LeadSubmission {
    name: Option<String>,
    #[schema(example = "+7 (921) 555-12-34")]
    phone: Option<String>,
    email: Option<String>,
    #[schema(example = "@victor")]
    messenger: Option<String>,
    company: Option<String>,
    position: Option<String>,
    city: Option<String>,
    interest: Option<String>,
    message: Option<String>,
    budget: Option<f64>,
    #[schema(example = "web_form")]
    channel: Option<String>,
    campaign: Option<String>,
    source: Option<String>,
    utm: Option<voronka_store::leads::Utm>,
    referrer: Option<String>,
    landing_page: Option<String>,
    tracking_number: Option<String>,
    visitor_id: Option<String>,
    external_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    fields: Option<Value>,
    consent: Option<ConsentSubmission>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ConsentSubmission {
    marketing: Option<bool>,
    text: Option<String>,
    #[schema(format = DateTime)]
    at: Option<String>,
}

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Creates a lead, or records a repeat request on the person's open lead. Answers only
/// after the commit is on disk.
#[utoipa::path(post, path = "/api/v1/leads", tag = "leads", request_body = LeadSubmission,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body returns the first answer")),
    responses(
        (status = 201, description = "A new lead", body = Lead),
        (status = 200, description = "A repeat request on the person's open lead", body = Lead),
        (status = 400, description = "Malformed JSON"),
        (status = 401, description = "No valid token"), (status = 403, description = "The token lacks leads:write"),
        (status = 409, description = "Idempotency-Key reused with another body"),
        (status = 413, description = "Body over the limit"), (status = 415, description = "Not JSON"),
        (status = 422, description = "contact_required or invalid_fields, naming each field")),
    security(("bearer" = ["leads:write"])))]
pub async fn create(State(st): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let token = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let body = body?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType("application/json"));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)));
            let key = key.ok_or_else(|| ApiError::invalid("Idempotency-Key", BAD_KEY))?;
            Some(IdempotencyKey { scope_key: format!("{}:{key}", token.id), request_hash: Sha256::digest(&body).into() })
        }
    };
    let defaults = IntakeDefaults { channel: "api".into(), campaign: None, region: st.cfg.region };
    let lead = LeadInput::from_json(value, &defaults).map_err(|r| {
        let e = ApiError::from(r);
        ops::record_intake("api", e.code());
        e
    })?;
    let reply = st
        .store
        .intake()
        .submit(IntakeCommand { lead, idempotency, actor: Some(token.actor()), form_id: None, import: None })
        .await
        .map_err(|e| {
            let e = ApiError::from(e);
            ops::record_intake("api", if e.status() == StatusCode::CONFLICT { "idempotency_conflict" } else { "failed" });
            e
        })?;
    ops::record_intake("api", reply.outcome.as_str());
    // A request of a person who is another manager's lead is added to that lead (nothing is
    // lost, no duplicate is made), but the caller sees only that, not the lead.
    let access = token.access();
    let body = reply.body();
    // A replayed answer names its lead only in the stored body.
    let lead_id =
        reply.lead_id.or_else(|| serde_json::from_slice::<serde_json::Value>(&body).ok()?.get("id")?.as_str()?.parse::<uuid::Uuid>().ok());
    let hidden = reply.status == 200
        && access != voronka_store::users::Access::All
        && match lead_id {
            Some(id) => !st.store.can_see(id, &access).await?,
            None => false,
        };
    let body = if hidden {
        serde_json::to_vec(&serde_json::json!({
            "repeat": true,
            "returning": false,
            "visible": false,
            "message": "The person is already another manager's lead; the request was added to it",
            "message_ru": "Этот человек уже лид другого менеджера; заявка добавлена к его лиду",
        }))
        .unwrap_or_default()
    } else {
        body
    };
    let mut resp = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response();
    if let Some(id) = reply.lead_id.filter(|_| reply.status == 201)
        && let Ok(v) = HeaderValue::from_str(&format!("/api/v1/leads/{id}"))
    {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if reply.outcome == IntakeOutcome::Replayed {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/api/v1/leads/{id}", tag = "leads",
    params(("id" = Uuid, Path, description = "Lead id")),
    responses((status = 200, body = Lead), (status = 404, description = "No such lead")),
    security(("bearer" = ["leads:read"])))]
pub async fn get_one(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<axum::Json<Lead>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    st.store.lead_as(id, &t.access()).await?.map(axum::Json).ok_or(ApiError::NotFound)
}

const BAD_STATUS: Text = Text::new("unknown status", "неизвестный статус");
const BAD_UUID: Text = Text::new("must be a UUID or \"none\"", "нужен UUID или \"none\"");
const BAD_NUMBER: Text = Text::new("must be a number", "должно быть числом");
const BAD_DATE: Text = Text::new("must be a date (2027-03-01) or RFC 3339 time", "нужна дата (2027-03-01) или время в RFC 3339");
const BAD_SORT: Text = Text::new("use created, created_asc, score or priority", "допустимо created, created_asc, score или priority");
const BAD_TEMPERATURE: Text = Text::new("use hot, warm or cold", "допустимо hot, warm или cold");
const BAD_LIMIT: Text = Text::new("must be a whole number from 1 to 500", "нужно целое число от 1 до 500");
const BAD_NUL: Text = Text::new("must not contain a NUL character", "не может содержать символ NUL");
const BAD_CURSOR: Text = Text::new("not a cursor from this list", "курсор не от этого списка");
const UNKNOWN_PARAM: Text = Text::new("unknown parameter", "неизвестный параметр");

fn parse_time(s: &str) -> Option<Ts> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(Ts::from(t.with_timezone(&Utc)));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| Ts::from(d.and_utc()))
}

pub fn parse_list_query(raw: Option<&str>, region: voronka_domain::PhoneRegion) -> Result<LeadFilter, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|_| ApiError::invalid("query", BAD_CURSOR))?;
    let mut f = LeadFilter { limit: 50, ..Default::default() };
    let mut errors = FieldErrors::new();
    for (k, v) in pairs {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        if v.contains('\0') {
            errors.add(&k, BAD_NUL);
            continue;
        }
        match k.as_str() {
            "status" => {
                for s in v.split(',') {
                    match s.trim().parse::<LeadStatus>() {
                        Ok(st) => f.status.push(st),
                        Err(_) => errors.add("status", BAD_STATUS),
                    }
                }
            }
            "owner" => {
                f.owner = if v == "none" {
                    Some(None)
                } else {
                    match Uuid::parse_str(v) {
                        Ok(u) => Some(Some(u)),
                        Err(_) => {
                            errors.add("owner", BAD_UUID);
                            None
                        }
                    }
                }
            }
            "channel" => f.channel.extend(v.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty())),
            "campaign" => f.campaign = Some(v.to_string()),
            "temperature" => {
                for t in v.split(',').map(str::trim) {
                    if ["hot", "warm", "cold"].contains(&t) {
                        f.temperature.push(t.to_string());
                    } else {
                        errors.add("temperature", BAD_TEMPERATURE);
                    }
                }
            }
            "q" => {
                f.q = Some(search_needle(v, region)).filter(|n| !n.is_empty());
                f.q_contact = match (voronka_domain::Phone::parse(v, region), voronka_domain::Email::parse(v)) {
                    (Some(p), _) => Some(ExactContact::Phone(p.as_str().to_string())),
                    (None, Some(e)) => Some(ExactContact::Email(e.as_str().to_string())),
                    _ => None,
                };
            }
            "min_score" => match v.parse::<f64>() {
                Ok(n) if n.is_finite() => f.min_score = Some(n),
                _ => errors.add("min_score", BAD_NUMBER),
            },
            "created_from" => match parse_time(v) {
                Some(t) => f.created_from = Some(t),
                None => errors.add("created_from", BAD_DATE),
            },
            "created_to" => match parse_time(v) {
                Some(t) => f.created_to = Some(t),
                None => errors.add("created_to", BAD_DATE),
            },
            "sort" => match LeadSort::parse(v) {
                Some(s) => f.sort = s,
                None => errors.add("sort", BAD_SORT),
            },
            "limit" => match v.parse::<u32>() {
                Ok(n) if (1..=500).contains(&n) => f.limit = n,
                _ => errors.add("limit", BAD_LIMIT),
            },
            "cursor" => match Cursor::decode(v) {
                Some(c) => f.cursor = Some(c),
                None => errors.add("cursor", BAD_CURSOR),
            },
            other => errors.add(other, UNKNOWN_PARAM),
        }
    }
    if errors.is_empty() { Ok(f) } else { Err(ApiError::InvalidFields(errors)) }
}

/// Leads matching the filters, a page at a time (`next_cursor` fetches the next page).
#[utoipa::path(get, path = "/api/v1/leads", tag = "leads",
    params(
        ("status" = Option<String>, Query, description = "One or more statuses, comma-separated"),
        ("owner" = Option<String>, Query, description = "Owner's user id, or `none`"),
        ("channel" = Option<String>, Query, description = "One or more channels, comma-separated"),
        ("campaign" = Option<String>, Query),
        ("temperature" = Option<String>, Query, description = "hot, warm or cold; several comma-separated"),
        ("q" = Option<String>, Query, description = "Search over name, company, e-mail and phone (a phone in any format)"),
        ("min_score" = Option<f64>, Query),
        ("created_from" = Option<String>, Query, description = "Date or RFC 3339 time, inclusive"),
        ("created_to" = Option<String>, Query, description = "Date or RFC 3339 time, exclusive"),
        ("sort" = Option<String>, Query, description = "created (default, newest first), created_asc, score, priority"),
        ("limit" = Option<u32>, Query, description = "1–500, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = LeadPage), (status = 422, description = "A bad parameter, named")),
    security(("bearer" = ["leads:read"])))]
pub async fn list(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<axum::Json<LeadPage>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let mut filter = parse_list_query(q.as_deref(), st.cfg.region)?;
    filter.access = t.access();
    Ok(axum::Json(st.store.leads(&filter).await?))
}

#[derive(Deserialize)]
pub struct TimelineQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The lead's history, newest first.
#[utoipa::path(get, path = "/api/v1/leads/{id}/timeline", tag = "leads",
    params(("id" = Uuid, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = TimelinePage), (status = 404, description = "No such lead")),
    security(("bearer" = ["leads:read"])))]
pub async fn timeline(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<axum::Json<TimelinePage>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let (limit, before) = timeline_query(q.as_deref())?;
    if !st.store.can_see(id, &t.access()).await? {
        return Err(ApiError::NotFound);
    }
    Ok(axum::Json(st.store.timeline(id, limit, before).await?))
}

/// `limit` and `cursor` of a timeline request.
pub fn timeline_query(q: Option<&str>) -> Result<(u32, Option<(voronka_store::Ts, i64)>), ApiError> {
    let q: TimelineQuery = serde_urlencoded::from_str(q.unwrap_or("")).map_err(|_| ApiError::invalid("limit", BAD_LIMIT))?;
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(voronka_store::decode_timeline_cursor(c).ok_or_else(|| ApiError::invalid("cursor", BAD_CURSOR))?),
    };
    Ok((q.limit.unwrap_or(100), before))
}
