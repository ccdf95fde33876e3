//! The inbox: unsorted leads and my leads, filters, search (a phone in any format), sort by
//! priority. The first page refreshes itself every few seconds, so new leads appear
//! without a reload.

use super::i18n::{CHANNELS, Tr};
use super::{Chrome, FormData, Page, UiError, Viewer, fmt, render};
use crate::AppState;
use crate::api::leads::parse_list_query;
use crate::error::ApiError;
use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use std::collections::HashMap;
use uuid::Uuid;
use voronka_domain::LeadStatus;
use voronka_store::{Lead, LeadPage};

/// A lead as a row of a list.
pub struct Row {
    pub id: Uuid,
    pub name: String,
    pub company: String,
    pub phone: String,
    pub email: String,
    pub channel: String,
    pub status: String,
    pub status_label: &'static str,
    pub temperature: String,
    pub temperature_label: &'static str,
    pub grade: String,
    pub score: String,
    pub priority: String,
    pub owner: String,
    pub created: String,
    pub repeat_count: i32,
    /// Arrived in the last ten minutes.
    pub fresh: bool,
}

impl Row {
    pub fn of(l: &Lead, v: &Viewer, names: &HashMap<Uuid, String>, now: chrono::DateTime<chrono::Utc>) -> Row {
        let t = Tr(v.lang);
        Row {
            id: l.id,
            name: l.name.clone().unwrap_or_default(),
            company: l.company.clone().unwrap_or_default(),
            phone: l.phone.as_deref().map(fmt::phone).unwrap_or_default(),
            email: l.email.clone().unwrap_or_default(),
            channel: t.channel(&l.channel),
            status: l.status.clone(),
            status_label: t.get(&format!("status.{}", l.status)),
            temperature: l.temperature.clone(),
            temperature_label: t.get(&format!("temp.{}", l.temperature)),
            grade: l.grade.clone(),
            score: fmt::num(l.score),
            priority: fmt::num(l.priority),
            owner: l.owner.as_ref().and_then(|o| names.get(&o.id).cloned()).unwrap_or_default(),
            created: fmt::local(l.created_at, v.tz, v.lang),
            repeat_count: l.repeat_count,
            fresh: now - l.created_at.0 < chrono::Duration::minutes(10),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/inbox.html")]
struct InboxPage {
    c: Chrome,
    tab: String,
    q: String,
    status: String,
    channel: String,
    temperature: String,
    sort: String,
    statuses: Vec<(&'static str, &'static str)>,
    channels: Vec<(&'static str, String)>,
    rows: Vec<Row>,
    empty_text: &'static str,
    /// The first page polls for new leads; later pages stay still.
    rows_url: Option<String>,
    /// The view's query, for the export links.
    export_query: String,
    next_url: Option<String>,
    first_url: Option<String>,
    /// The unsorted tab: requests of channels that need triage, with their actions.
    triage: Vec<Row>,
    junk_reasons: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "ui/inbox_rows.html")]
struct RowsFragment {
    rows: Vec<Row>,
    empty_text: &'static str,
}

/// The inbox's own parameters, and the list query they turn into.
struct Query {
    tab: String,
    q: String,
    status: String,
    channel: String,
    temperature: String,
    sort: String,
    cursor: Option<String>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or("")).unwrap_or_default();
        let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.trim().to_string()).unwrap_or_default();
        let tab = match get("tab").as_str() {
            "mine" => "mine",
            "unsorted" => "unsorted",
            _ => "all",
        };
        let sort = match get("sort").as_str() {
            s @ ("created" | "score" | "priority") => s.to_string(),
            _ => "priority".to_string(),
        };
        Query {
            tab: tab.to_string(),
            q: get("q"),
            status: get("status"),
            channel: get("channel"),
            temperature: get("temperature"),
            sort,
            cursor: Some(get("cursor")).filter(|c| !c.is_empty()),
        }
    }

    /// The query string of this view (without the cursor).
    fn view(&self) -> String {
        serde_urlencoded::to_string([
            ("tab", self.tab.as_str()),
            ("q", self.q.as_str()),
            ("status", self.status.as_str()),
            ("channel", self.channel.as_str()),
            ("temperature", self.temperature.as_str()),
            ("sort", self.sort.as_str()),
        ])
        .unwrap_or_default()
    }

    async fn load(&self, st: &AppState, v: &Viewer) -> Result<LeadPage, UiError> {
        let f = self.filter(st, v)?;
        st.store.leads(&f).await.map_err(|e| UiError::new(e, v))
    }

    /// The list query of this view, with the viewer's access.
    fn filter(&self, st: &AppState, v: &Viewer) -> Result<voronka_store::LeadFilter, UiError> {
        let mut api = vec![("sort", self.sort.clone()), ("limit", "50".to_string())];
        for (k, val) in [("q", &self.q), ("status", &self.status), ("channel", &self.channel), ("temperature", &self.temperature)] {
            if !val.is_empty() {
                api.push((k, val.clone()));
            }
        }
        if let Some(c) = &self.cursor {
            api.push(("cursor", c.clone()));
        }
        let raw = serde_urlencoded::to_string(&api).unwrap_or_default();
        let mut f = parse_list_query(Some(&raw), st.cfg.region).map_err(|e| UiError::new(e, v))?;
        f.access = v.access();
        match self.tab.as_str() {
            "mine" => f.owner = Some(Some(v.user.id)),
            "unsorted" => {
                f.owner = Some(None);
                // Requests waiting for triage are listed above, with their actions.
                f.no_triage = true;
                if f.status.is_empty() {
                    f.status = vec![LeadStatus::New, LeadStatus::Nurturing, LeadStatus::SalesReady];
                }
            }
            _ => {}
        }
        Ok(f)
    }
}

/// Names of users by id, for owner columns.
pub async fn user_names(st: &AppState, v: &Viewer) -> Result<HashMap<Uuid, String>, UiError> {
    Ok(st.store.users(None).await.map_err(|e| UiError::new(e, v))?.into_iter().map(|u| (u.id, u.name)).collect())
}

async fn rows_of(st: &AppState, v: &Viewer, page: &LeadPage) -> Result<Vec<Row>, UiError> {
    let names = user_names(st, v).await?;
    let now = st.store.clock().now();
    Ok(page.items.iter().map(|l| Row::of(l, v, &names, now)).collect())
}

pub async fn page(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(raw): RawQuery) -> Page {
    inbox_page(&st, &v, raw.as_deref(), None).await
}

async fn inbox_page(st: &AppState, v: &Viewer, raw: Option<&str>, error: Option<ApiError>) -> Page {
    let (st, v) = (st.clone(), v.clone());
    let q = Query::parse(raw);
    let page = q.load(&st, &v).await?;
    let rows = rows_of(&st, &v, &page).await?;
    let t = Tr(v.lang);
    let view = q.view();
    let done = serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or(""))
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| k == "done")
        .map(|(_, v)| v);
    let mut c = Chrome::new(&v, "inbox", t.get("nav.inbox")).with_flash(done.as_deref());
    if let Some(e) = &error {
        c = c.with_error(e);
    }
    let (triage, junk_reasons) = if q.tab == "unsorted" {
        let names = user_names(&st, &v).await?;
        let now = st.store.clock().now();
        let leads = st.store.triage_leads(&v.access(), 100).await.map_err(|e| UiError::new(e, &v))?;
        let reasons = st.store.reasons(Some("junk")).await.map_err(|e| UiError::new(e, &v))?;
        (
            leads.iter().map(|l| Row::of(l, &v, &names, now)).collect(),
            reasons.into_iter().filter(|r| r.active).map(|r| (r.code.clone(), t.reason_label(&r.code))).collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let p = InboxPage {
        statuses: LeadStatus::ALL.iter().map(|s| (s.as_str(), t.get(&format!("status.{}", s.as_str())))).collect(),
        channels: CHANNELS.iter().map(|ch| (*ch, t.channel(ch))).collect(),
        rows,
        empty_text: t.get("inbox.empty"),
        rows_url: q.cursor.is_none().then(|| format!("/inbox/rows?{view}")),
        export_query: view.clone(),
        next_url: page.next_cursor.as_ref().map(|cur| format!("/inbox?{view}&cursor={}", super::session::urlencode(cur))),
        first_url: q.cursor.is_some().then(|| format!("/inbox?{view}")),
        triage,
        junk_reasons,
        tab: q.tab,
        q: q.q,
        status: q.status,
        channel: q.channel,
        temperature: q.temperature,
        sort: q.sort,
        c,
    };
    Ok(render(error.as_ref().map(ApiError::status).unwrap_or(StatusCode::OK), &p))
}

/// One action on a request in the unsorted inbox: accept, decline (junk with a reason) or
/// link to the person's existing lead (named by id, phone or e-mail).
pub async fn triage(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, body: Bytes) -> Page {
    let id = crate::api::uuid_path(&id).map_err(|e| UiError::new(e, &v))?;
    let f = FormData::parse(&body);
    let (actor, access) = (v.actor(), v.access());
    let r: Result<(), ApiError> = match f.get("action").unwrap_or("") {
        "accept" => st.store.triage_accept(id, &actor, &access).await.map(|_| ()).map_err(ApiError::from),
        "decline" => st
            .store
            .triage_decline(id, f.get("reason").filter(|r| !r.is_empty()), &actor, &access)
            .await
            .map(|_| ())
            .map_err(ApiError::from),
        "link" => match super::card::resolve_lead(&st, f.get("other").unwrap_or(""), "other").await {
            Ok(other) => st.store.triage_link(id, other, &actor, &access).await.map(|_| ()).map_err(|e| match e {
                voronka_store::workflow::WorkflowError::Invalid { en, ru, .. } => {
                    ApiError::Fields { code: "invalid_fields", fields: vec![("other".into(), en, ru)] }
                }
                other => other.into(),
            }),
            Err(e) => Err(e),
        },
        _ => Err(ApiError::field("action", "use accept, decline or link", "допустимо accept, decline или link")),
    };
    match r {
        Ok(()) => Ok(super::done("/inbox?tab=unsorted", "triage_done")),
        Err(ApiError::NotFound) => Err(UiError::new(ApiError::NotFound, &v)),
        Err(e) => inbox_page(&st, &v, Some("tab=unsorted"), Some(e)).await,
    }
}

/// The first page's rows, for the inbox to refresh itself.
pub async fn rows(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(raw): RawQuery) -> Page {
    let mut q = Query::parse(raw.as_deref());
    q.cursor = None;
    let page = q.load(&st, &v).await?;
    let rows = rows_of(&st, &v, &page).await?;
    Ok(render(StatusCode::OK, &RowsFragment { rows, empty_text: Tr(v.lang).get("inbox.empty") }))
}

async fn export(st: AppState, v: Viewer, raw: Option<String>, format: crate::api::export::Format) -> Page {
    let q = Query::parse(raw.as_deref());
    let f = q.filter(&st, &v)?;
    let who = crate::api::export::Exporter {
        access: v.access(),
        actor: format!("user:{}", v.user.name),
        user_id: Some(v.user.id),
        admin: v.user.role == "admin",
    };
    crate::api::export::export(st, who, Some(&q.view()), format, Some(f)).await.map_err(|e| UiError::new(e, &v))
}

/// The inbox's current view as CSV.
pub async fn export_csv(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(raw): RawQuery) -> Page {
    export(st, v, raw, crate::api::export::Format::Csv).await
}

/// The inbox's current view as XLSX.
pub async fn export_xlsx(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(raw): RawQuery) -> Page {
    export(st, v, raw, crate::api::export::Format::Xlsx).await
}
