//! Settings → Webhooks (admins): channels that need triage, inbound endpoints with their
//! address and secret, outbound subscriptions, and recent deliveries with the dead letters
//! and a button to send one again. Every change goes through the same checks as the API.

use super::i18n::Tr;
use super::settings::{ADMIN, Tab, allow, base_url, flash, tabs};
use super::{Chrome, FormData, Page, UiError, Viewer, done, fmt, render};
use crate::AppState;
use crate::api::hooks::{EndpointSpec, SubscriptionSpec, check_endpoint, check_subscription};
use crate::api::uuid_path;
use crate::error::ApiError;
use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use uuid::Uuid;
use voronka_store::hooks::{HOOK_KINDS, NewEndpoint, WEBHOOK_EVENTS};

pub struct EndpointView {
    pub id: Uuid,
    pub name: String,
    pub kind: &'static str,
    pub channel: String,
    pub campaign: String,
    pub url: String,
    pub secret: String,
    pub active: bool,
}

pub struct SubscriptionView {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    pub events: String,
    pub secret: String,
}

pub struct DeliveryView {
    pub id: Uuid,
    pub topic: String,
    pub status: String,
    pub status_label: &'static str,
    pub attempts: i32,
    pub last: String,
    pub created: String,
    pub next: String,
}

#[derive(Template)]
#[template(path = "ui/settings_webhooks.html")]
struct WebhooksPage {
    c: Chrome,
    tabs: Vec<Tab>,
    channels: Vec<(String, String, bool)>,
    endpoints: Vec<EndpointView>,
    kinds: Vec<(&'static str, &'static str)>,
    subscriptions: Vec<SubscriptionView>,
    events: Vec<&'static str>,
    deliveries: Vec<DeliveryView>,
    /// What was typed into a refused form, shown again.
    form_name: String,
    form_url: String,
    form_mapping: String,
}

#[derive(Default)]
struct Typed {
    name: String,
    url: String,
    mapping: String,
}

async fn load(st: &AppState, v: &Viewer, headers: &HeaderMap, c: Chrome, typed: Typed, status: StatusCode) -> Page {
    let e = |e: voronka_store::StoreError| UiError::new(e, v);
    let t = Tr(v.lang);
    let base = base_url(st, headers);
    let channels = st
        .store
        .channels()
        .await
        .map_err(e)?
        .into_iter()
        .map(|ch| {
            let label = t.channel(&ch.code);
            (ch.code, label, ch.needs_triage)
        })
        .collect();
    let endpoints = st
        .store
        .hook_endpoints()
        .await
        .map_err(e)?
        .into_iter()
        .map(|ep| EndpointView {
            id: ep.id,
            kind: t.get(&format!("hook.{}", ep.kind)),
            channel: t.channel(&ep.channel),
            campaign: ep.campaign.unwrap_or_default(),
            url: format!("{base}/hooks/{}", ep.hook_key),
            secret: ep.secret,
            active: ep.active,
            name: ep.name,
        })
        .collect();
    let subscriptions = st
        .store
        .subscriptions()
        .await
        .map_err(e)?
        .into_iter()
        .map(|s| SubscriptionView {
            id: s.id,
            events: s.events.0.as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
            name: s.name,
            url: s.url,
            secret: s.secret,
        })
        .collect();
    let deliveries = st
        .store
        .deliveries(None, 50)
        .await
        .map_err(e)?
        .into_iter()
        .map(|d| DeliveryView {
            id: d.id,
            topic: d.topic,
            status_label: t.get(&format!("delivery.{}", d.status)),
            status: d.status.clone(),
            attempts: d.attempts,
            last: match (d.last_status, d.last_error) {
                (_, Some(err)) => err,
                (Some(code), None) => format!("HTTP {code}"),
                (None, None) => String::new(),
            },
            created: fmt::local(d.created_at, v.tz, v.lang),
            next: if d.status == "pending" { fmt::local(d.next_at, v.tz, v.lang) } else { String::new() },
        })
        .collect();
    let p = WebhooksPage {
        c,
        tabs: tabs(v, "webhooks"),
        channels,
        endpoints,
        kinds: HOOK_KINDS.iter().map(|k| (*k, t.get(&format!("hook.{k}")))).collect(),
        subscriptions,
        events: WEBHOOK_EVENTS.to_vec(),
        deliveries,
        form_name: typed.name,
        form_url: typed.url,
        form_mapping: typed.mapping,
    };
    Ok(render(status, &p))
}

fn chrome(v: &Viewer) -> Chrome {
    Chrome::new(v, "settings", Tr(v.lang).get("settings.webhooks"))
}

pub async fn page(State(st): State<AppState>, Extension(v): Extension<Viewer>, headers: HeaderMap, RawQuery(q): RawQuery) -> Page {
    allow(&v, ADMIN)?;
    let c = chrome(&v).with_flash(flash(&q).as_deref());
    load(&st, &v, &headers, c, Typed::default(), StatusCode::OK).await
}

async fn refused(st: &AppState, v: &Viewer, headers: &HeaderMap, err: ApiError, typed: Typed) -> Page {
    let status = err.status();
    load(st, v, headers, chrome(v).with_error(&err), typed, status).await
}

/// Which channels need triage: the checked ones.
pub async fn save_channels(State(st): State<AppState>, Extension(v): Extension<Viewer>, body: Bytes) -> Page {
    allow(&v, ADMIN)?;
    let f = FormData::parse(&body);
    let on = f.all("triage");
    for ch in st.store.channels().await.map_err(|e| UiError::new(e, &v))? {
        let want = on.contains(&ch.code.as_str());
        if want != ch.needs_triage {
            st.store.set_channel_triage(&ch.code, want).await.map_err(|e| UiError::new(e, &v))?;
        }
    }
    Ok(done("/settings/webhooks", "channels_saved"))
}

pub async fn create_endpoint(State(st): State<AppState>, Extension(v): Extension<Viewer>, headers: HeaderMap, body: Bytes) -> Page {
    allow(&v, ADMIN)?;
    let f = FormData::parse(&body);
    let mapping_text = f.get("mapping").unwrap_or("").trim().to_string();
    let typed = Typed { name: f.get("name").unwrap_or("").to_string(), url: String::new(), mapping: mapping_text.clone() };
    let mapping = if mapping_text.is_empty() {
        None
    } else {
        match serde_json::from_str(&mapping_text) {
            Ok(m) => Some(m),
            Err(e) => {
                let err = ApiError::Fields {
                    code: "invalid_fields",
                    fields: vec![("mapping".into(), format!("not JSON: {e}"), format!("это не JSON: {e}"))],
                };
                return refused(&st, &v, &headers, err, typed).await;
            }
        }
    };
    let spec = EndpointSpec {
        name: typed.name.clone(),
        kind: f.get("kind").unwrap_or("").to_string(),
        channel: f.string("channel").filter(|c| !c.is_empty()),
        campaign: f.string("campaign").map(|c| c.trim().to_string()).filter(|c| !c.is_empty()),
        mapping,
    };
    let (channel, mapping) = match check_endpoint(&st, &spec).await {
        Ok(x) => x,
        Err(err) => return refused(&st, &v, &headers, err, typed).await,
    };
    let new =
        NewEndpoint { name: spec.name.trim(), kind: &spec.kind, channel: &channel, campaign: spec.campaign.as_deref(), mapping: &mapping };
    st.store.create_hook_endpoint(&new).await.map_err(|e| UiError::new(e, &v))?;
    Ok(done("/settings/webhooks", "endpoint_created"))
}

/// `rotate` (a new secret), `disable` or `enable`.
pub async fn endpoint_action(
    State(st): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path((id, action)): Path<(String, String)>,
) -> Page {
    allow(&v, ADMIN)?;
    let id = uuid_path(&id).map_err(|e| UiError::new(e, &v))?;
    let (active, rotate) = match action.as_str() {
        "rotate" => (None, true),
        "disable" => (Some(false), false),
        "enable" => (Some(true), false),
        _ => return Err(UiError::new(ApiError::NotFound, &v)),
    };
    st.store.update_hook_endpoint(id, active, rotate).await.map_err(|e| UiError::new(e, &v))?;
    Ok(done("/settings/webhooks", "endpoint_saved"))
}

pub async fn create_subscription(State(st): State<AppState>, Extension(v): Extension<Viewer>, headers: HeaderMap, body: Bytes) -> Page {
    allow(&v, ADMIN)?;
    let f = FormData::parse(&body);
    let spec = SubscriptionSpec {
        name: f.string("name").filter(|n| !n.trim().is_empty()),
        url: f.get("url").unwrap_or("").trim().to_string(),
        events: f.all("event").into_iter().map(String::from).collect(),
    };
    if let Err(err) = check_subscription(&st, &spec).await {
        let typed = Typed { name: spec.name.clone().unwrap_or_default(), url: spec.url.clone(), mapping: String::new() };
        return refused(&st, &v, &headers, err, typed).await;
    }
    let name = spec.name.as_deref().map(str::trim).unwrap_or(&spec.url);
    st.store.create_subscription(name, &spec.url, &spec.events).await.map_err(|e| UiError::new(e, &v))?;
    Ok(done("/settings/webhooks", "subscription_created"))
}

pub async fn delete_subscription(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>) -> Page {
    allow(&v, ADMIN)?;
    let id = uuid_path(&id).map_err(|e| UiError::new(e, &v))?;
    st.store.delete_subscription(id).await.map_err(|e| UiError::new(e, &v))?;
    Ok(done("/settings/webhooks", "subscription_deleted"))
}

pub async fn retry_delivery(
    State(st): State<AppState>,
    Extension(v): Extension<Viewer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    allow(&v, ADMIN)?;
    let id = uuid_path(&id).map_err(|e| UiError::new(e, &v))?;
    match st.store.redeliver(id).await {
        Ok(_) => Ok(done("/settings/webhooks", "delivery_retried")),
        Err(voronka_store::StoreError::Invalid(_)) => {
            let err = ApiError::Conflict {
                code: "not_dead",
                en: "Only a dead-lettered delivery can be sent again".into(),
                ru: "Повторно отправить можно только недоставленное".into(),
            };
            refused(&st, &v, &headers, err, Typed::default()).await
        }
        Err(e) => Err(UiError::new(e, &v)),
    }
}
