//! The kanban: a column per state with its count and the leads of highest priority; a card
//! dragged to another column asks the server to move the lead, and a forbidden move comes
//! back with the reason, shown to the user.

use super::i18n::Tr;
use super::inbox::{Row, user_names};
use super::{Chrome, FormData, Page, UiError, Viewer, fmt, render};
use crate::AppState;
use crate::error::ApiError;
use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::json;
use uuid::Uuid;
use voronka_domain::LeadStatus;
use voronka_store::workflow::StatusChange;
use voronka_store::{LeadFilter, LeadSort};

/// Cards shown per column (the count says how many there are).
const PER_COLUMN: u32 = 30;

/// The order of columns, left to right.
const COLUMNS: [LeadStatus; 10] = [
    LeadStatus::New,
    LeadStatus::Nurturing,
    LeadStatus::SalesReady,
    LeadStatus::Assigned,
    LeadStatus::InProgress,
    LeadStatus::Qualified,
    LeadStatus::Postponed,
    LeadStatus::Converted,
    LeadStatus::Refused,
    LeadStatus::Junk,
];

pub struct Column {
    pub status: &'static str,
    pub label: &'static str,
    pub count: i64,
    pub cards: Vec<Row>,
}

pub struct ReasonOption {
    pub kind: String,
    pub code: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "ui/kanban.html")]
struct KanbanPage {
    c: Chrome,
    columns: Vec<Column>,
    reasons: Vec<ReasonOption>,
    now_local: String,
}

pub async fn page(State(st): State<AppState>, Extension(v): Extension<Viewer>) -> Page {
    let e = |e: voronka_store::StoreError| UiError::new(e, &v);
    let access = v.access();
    let counts = st.store.status_counts(&access).await.map_err(e)?;
    let names = user_names(&st, &v).await?;
    let now = st.store.clock().now();
    let t = Tr(v.lang);
    let mut columns = Vec::with_capacity(COLUMNS.len());
    for s in COLUMNS {
        let count = counts.iter().find(|(k, _)| k == s.as_str()).map(|(_, n)| *n).unwrap_or(0);
        let cards = if count == 0 {
            Vec::new()
        } else {
            let f =
                LeadFilter { access: access.clone(), status: vec![s], sort: LeadSort::Priority, limit: PER_COLUMN, ..Default::default() };
            st.store.leads(&f).await.map_err(e)?.items.iter().map(|l| Row::of(l, &v, &names, now)).collect()
        };
        columns.push(Column { status: s.as_str(), label: t.get(&format!("status.{}", s.as_str())), count, cards });
    }
    let reasons = st
        .store
        .reasons(None)
        .await
        .map_err(e)?
        .into_iter()
        .filter(|r| r.active)
        .map(|r| ReasonOption { label: if v.lang == voronka_domain::Lang::Ru { r.name_ru } else { r.name_en }, kind: r.kind, code: r.code })
        .collect();
    let c = Chrome::new(&v, "kanban", t.get("nav.kanban"));
    Ok(render(StatusCode::OK, &KanbanPage { c, columns, reasons, now_local: fmt::input_value(st.store.now(), v.tz) }))
}

/// A drop on another column: `{ok: true}` or `{ok: false, message}` with the API's status.
pub async fn move_card(State(st): State<AppState>, Extension(v): Extension<Viewer>, body: Bytes) -> axum::response::Response {
    let f = FormData::parse(&body);
    let fail = |e: ApiError| {
        let mut lines = super::error_lines(&e, v.lang);
        let message = lines.remove(0);
        (e.status(), Json(json!({"ok": false, "message": message, "details": lines}))).into_response()
    };
    let Some(id) = f.get("id").and_then(|x| Uuid::parse_str(x).ok()) else {
        return fail(ApiError::field("id", "unknown lead", "неизвестный лид"));
    };
    let to = f.string("status").unwrap_or_default();
    if to == "converted" {
        return fail(ApiError::Conflict {
            code: "use_convert",
            en: "A lead becomes a client through the convert dialog on its card".into(),
            ru: "Лид становится клиентом через диалог конвертации в карточке".into(),
        });
    }
    let until = match f.get("until") {
        Some(u) => match fmt::parse_local(u, v.tz) {
            Some(ts) => Some(ts.rfc3339()),
            None => return fail(ApiError::field("until", "a date and time", "дата и время")),
        },
        None => None,
    };
    let change = StatusChange { status: to, reason: f.string("reason"), comment: None, until };
    match st.store.change_status(id, &change, &v.actor(), &v.access()).await {
        Ok(lead) => Json(json!({"ok": true, "status": lead.status})).into_response(),
        Err(e) => fail(ApiError::from(e)),
    }
}
