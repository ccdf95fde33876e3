//! Webhooks and channels over the API (admins): inbound endpoints, outbound subscriptions
//! and their deliveries (the dead letters among them), channels that need triage, and the
//! call and chat response figures the inbound hooks record.

use crate::AppState;
use crate::api::users::{json_body, require_role};
use crate::api::uuid_path;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use voronka_store::Ts;
use voronka_store::hooks::{Delivery, HOOK_KINDS, HookEndpoint, NewEndpoint, ResponseStats, Subscription, WEBHOOK_EVENTS};
use voronka_store::triage::ChannelInfo;

const ADMINS: &[&str] = &["admin"];

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub name: String,
    /// `call_tracking`, `chat`, `lead_ad` or `generic`.
    pub kind: String,
    /// Defaults by kind: call, chat, social, web_form.
    pub channel: Option<String>,
    pub campaign: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub mapping: Option<Value>,
}

/// Checks a new endpoint; the errors name each field.
pub async fn check_endpoint(st: &AppState, spec: &EndpointSpec) -> Result<(String, Value), ApiError> {
    let mut errs: Vec<(String, String, String)> = Vec::new();
    let mut bad = |f: &str, en: &str, ru: &str| errs.push((f.into(), en.into(), ru.into()));
    let name = spec.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        bad("name", "1 to 200 characters", "от 1 до 200 символов");
    }
    if !HOOK_KINDS.contains(&spec.kind.as_str()) {
        bad("kind", "use call_tracking, chat, lead_ad or generic", "допустимо call_tracking, chat, lead_ad или generic");
    }
    let channel = spec.channel.clone().unwrap_or_else(|| {
        match spec.kind.as_str() {
            "call_tracking" => "call",
            "chat" => "chat",
            "lead_ad" => "social",
            _ => "web_form",
        }
        .to_string()
    });
    let channels = st.store.channels().await?;
    if !channels.iter().any(|c| c.code == channel) {
        bad("channel", "no such channel", "нет такого канала");
    }
    if spec.campaign.as_deref().is_some_and(|c| !voronka_domain::lead::is_slug(c)) {
        bad("campaign", "use 1 to 50 of a-z, 0-9, _ and -", "допустимо от 1 до 50 символов a-z, 0-9, _ и -");
    }
    let mapping = spec.mapping.clone().unwrap_or_else(|| json!({}));
    match &mapping {
        Value::Object(m) => {
            if spec.kind == "generic" {
                for (k, v) in m {
                    if !v.as_str().is_some_and(|s| !s.trim().is_empty() && s.len() <= 200) {
                        bad(
                            &format!("mapping.{k}"),
                            "must be a path into the body, like contact.phone",
                            "нужен путь в теле запроса, например contact.phone",
                        );
                    }
                }
                if !m.is_empty() && !["phone", "email", "messenger"].iter().any(|c| m.contains_key(*c)) {
                    bad(
                        "mapping",
                        "map at least one contact: phone, email or messenger",
                        "укажите хотя бы один контакт: phone, email или messenger",
                    );
                }
            }
        }
        _ => bad("mapping", "must be a JSON object", "должен быть объектом JSON"),
    }
    if errs.is_empty() { Ok((channel, mapping)) } else { Err(ApiError::Fields { code: "invalid_fields", fields: errs }) }
}

#[utoipa::path(post, path = "/api/v1/hooks", tag = "webhooks", request_body = EndpointSpec,
    responses((status = 201, body = HookEndpoint), (status = 422)), security(("bearer" = ["admin"])))]
pub async fn create_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, ADMINS)?;
    let spec: EndpointSpec = json_body(body)?;
    let (channel, mapping) = check_endpoint(&st, &spec).await?;
    let ep = st
        .store
        .create_hook_endpoint(&NewEndpoint {
            name: spec.name.trim(),
            kind: &spec.kind,
            channel: &channel,
            campaign: spec.campaign.as_deref(),
            mapping: &mapping,
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(ep)))
}

#[utoipa::path(get, path = "/api/v1/hooks", tag = "webhooks", responses((status = 200, body = Vec<HookEndpoint>)), security(("bearer" = ["admin"])))]
pub async fn list_endpoints(State(st): State<AppState>, headers: HeaderMap) -> Result<axum::Json<Vec<HookEndpoint>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, ADMINS)?;
    Ok(axum::Json(st.store.hook_endpoints().await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    pub active: Option<bool>,
    /// A new secret (the old one stops working at once).
    #[serde(default)]
    pub rotate_secret: bool,
}

#[utoipa::path(patch, path = "/api/v1/hooks/{id}", tag = "webhooks", request_body = EndpointPatch, params(("id" = Uuid, Path)),
    responses((status = 200, body = HookEndpoint), (status = 404)), security(("bearer" = ["admin"])))]
pub async fn patch_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<HookEndpoint>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, ADMINS)?;
    let id = uuid_path(&id)?;
    let p: EndpointPatch = json_body(body)?;
    Ok(axum::Json(st.store.update_hook_endpoint(id, p.active, p.rotate_secret).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    pub name: Option<String>,
    /// http(s); internal addresses are refused in every spelling.
    pub url: String,
    /// Any of lead.created, lead.assigned, lead.state_changed, lead.converted.
    pub events: Vec<String>,
}

/// Checks a subscription: the events, and the address (also after DNS resolution).
pub async fn check_subscription(st: &AppState, spec: &SubscriptionSpec) -> Result<(), ApiError> {
    let mut errs: Vec<(String, String, String)> = Vec::new();
    if spec.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        errs.push(("name".into(), "at most 200 characters".into(), "не более 200 символов".into()));
    }
    if spec.url.len() > 2000 {
        errs.push(("url".into(), "at most 2000 characters".into(), "не более 2000 символов".into()));
    } else if let Err(e) = crate::webhooks::resolve_checked(&spec.url, st.cfg.webhook_allow_loopback).await {
        let (en, ru) = match &e {
            crate::webhooks::SendError::Target(t) => (t.to_string(), t.ru()),
            other => (other.to_string(), format!("адрес недоступен: {other}")),
        };
        errs.push(("url".into(), en, ru));
    }
    if spec.events.is_empty() {
        errs.push(("events".into(), "choose at least one event".into(), "выберите хотя бы одно событие".into()));
    }
    for e in &spec.events {
        if !WEBHOOK_EVENTS.contains(&e.as_str()) {
            errs.push((
                "events".into(),
                format!("unknown event {e}; use {}", WEBHOOK_EVENTS.join(", ")),
                format!("неизвестное событие {e}; допустимо {}", WEBHOOK_EVENTS.join(", ")),
            ));
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(ApiError::Fields { code: "invalid_fields", fields: errs }) }
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = SubscriptionSpec,
    responses((status = 201, body = Subscription), (status = 422, description = "invalid_fields: a bad or internal url, unknown events")), security(("bearer" = ["admin"])))]
pub async fn create_subscription(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, ADMINS)?;
    let spec: SubscriptionSpec = json_body(body)?;
    check_subscription(&st, &spec).await?;
    let name = spec.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).unwrap_or(spec.url.trim());
    let sub = st.store.create_subscription(name, spec.url.trim(), &spec.events).await?;
    Ok((StatusCode::CREATED, axum::Json(sub)))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", responses((status = 200, body = Vec<Subscription>)), security(("bearer" = ["admin"])))]
pub async fn list_subscriptions(State(st): State<AppState>, headers: HeaderMap) -> Result<axum::Json<Vec<Subscription>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, ADMINS)?;
    Ok(axum::Json(st.store.subscriptions().await?))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404)), security(("bearer" = ["admin"])))]
pub async fn delete_subscription(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, ADMINS)?;
    st.store.delete_subscription(uuid_path(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/webhooks/deliveries", tag = "webhooks",
    params(("status" = Option<String>, Query, description = "pending, delivered, dead or cancelled"), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = Vec<Delivery>)), security(("bearer" = ["admin"])))]
pub async fn deliveries(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<axum::Json<Vec<Delivery>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, ADMINS)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let status = get("status");
    if status.is_some_and(|s| !["pending", "delivered", "dead", "cancelled"].contains(&s)) {
        return Err(ApiError::field(
            "status",
            "use pending, delivered, dead or cancelled",
            "допустимо pending, delivered, dead или cancelled",
        ));
    }
    let limit = match get("limit") {
        None => 100,
        Some(l) => {
            l.parse::<i64>().ok().filter(|l| (1..=1000).contains(l)).ok_or_else(|| ApiError::field("limit", "1 to 1000", "от 1 до 1000"))?
        }
    };
    Ok(axum::Json(st.store.deliveries(status, limit).await?))
}

#[utoipa::path(post, path = "/api/v1/webhooks/deliveries/{id}/retry", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Delivery), (status = 404), (status = 409, description = "not dead-lettered")), security(("bearer" = ["admin"])))]
pub async fn retry_delivery(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::Json<Delivery>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, ADMINS)?;
    let id = uuid_path(&id)?;
    st.store.delivery(id).await?.ok_or(ApiError::NotFound)?;
    match st.store.redeliver(id).await {
        Err(voronka_store::StoreError::Invalid(_)) => Err(ApiError::Conflict {
            code: "not_dead",
            en: "Only a dead-lettered delivery can be sent again".into(),
            ru: "Повторно отправить можно только доставку из очереди недоставленных".into(),
        }),
        other => Ok(axum::Json(other?)),
    }
}

#[utoipa::path(get, path = "/api/v1/channels", tag = "webhooks", responses((status = 200, body = Vec<ChannelInfo>)), security(("bearer" = ["leads:read"])))]
pub async fn channels(State(st): State<AppState>, headers: HeaderMap) -> Result<axum::Json<Vec<ChannelInfo>>, ApiError> {
    st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    Ok(axum::Json(st.store.channels().await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatch {
    /// New leads of the channel wait in the unsorted inbox for triage.
    pub needs_triage: bool,
}

#[utoipa::path(patch, path = "/api/v1/channels/{code}", tag = "webhooks", request_body = ChannelPatch, params(("code" = String, Path)),
    responses((status = 200, body = ChannelInfo), (status = 404)), security(("bearer" = ["admin"])))]
pub async fn patch_channel(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(code): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<ChannelInfo>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, &["admin", "head_of_sales"])?;
    let p: ChannelPatch = json_body(body)?;
    Ok(axum::Json(st.store.set_channel_triage(&code, p.needs_triage).await?))
}

#[utoipa::path(get, path = "/api/v1/analytics/responses", tag = "webhooks",
    params(("from" = Option<String>, Query, description = "RFC 3339; default 30 days ago"), ("to" = Option<String>, Query, description = "RFC 3339; default now")),
    responses((status = 200, body = ResponseStats), (status = 422)), security(("bearer" = ["leads:read"])))]
pub async fn response_stats(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<axum::Json<ResponseStats>, ApiError> {
    st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let now = st.store.clock().now();
    let when = |k: &str, default: Ts| -> Result<Ts, ApiError> {
        match pairs.iter().find(|(a, _)| a == k) {
            None => Ok(default),
            Some((_, v)) => chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| Ts::from(t.with_timezone(&chrono::Utc)))
                .map_err(|_| ApiError::field(k, "must be an RFC 3339 time", "нужно время в формате RFC 3339")),
        }
    };
    let from = when("from", Ts::from(now - chrono::Duration::days(30)))?;
    let to = when("to", Ts::from(now + chrono::Duration::seconds(1)))?;
    Ok(axum::Json(st.store.response_stats(from, to).await?))
}
