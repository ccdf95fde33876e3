//! Settings: sources (sites and forms with the embed code to copy), the scoring model
//! editor, the workflow settings (assignment rules, SLAs, calendar, completeness, scripts),
//! refusal and junk reasons, users with their schedules, and API tokens.
//!
//! Who may open what: sources and scoring — admins and marketers; the workflow, reasons and
//! users — admins and heads of sales (a head edits the schedules of the team); tokens —
//! admins. Every editor checks with the same rules as the API and shows its messages.

use super::i18n::{CHANNELS, Tr};
use super::{Chrome, FormData, Page, UiError, Viewer, done, render};
use crate::AppState;
use crate::api::users::check as check_user;
use crate::api::uuid_path;
use crate::api::workflow::{SETTINGS, check_setting};
use crate::error::ApiError;
use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use serde_json::Value;
use uuid::Uuid;
use voronka_domain::schedule::WeekHours;
use voronka_store::users::{LEVELS, ROLES, User, UserSpec};
use voronka_store::{Form, FormSpec, SCOPES, Site};

const SOURCES: &[&str] = &["admin", "marketer"];
const WORKFLOW: &[&str] = &["admin", "head_of_sales"];
pub(super) const ADMIN: &[&str] = &["admin"];

pub(super) fn allow(v: &Viewer, roles: &[&str]) -> Result<(), UiError> {
    if v.is(roles) { Ok(()) } else { Err(UiError::new(ApiError::Forbidden("admin"), v)) }
}

pub(super) fn flash(q: &Option<String>) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q.as_deref().unwrap_or(""))
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "done")
        .map(|(_, v)| v)
}

/// The settings pages this viewer may open, for the sub-navigation.
pub struct Tab {
    pub href: &'static str,
    pub label: &'static str,
    pub on: bool,
}

pub(super) fn tabs(v: &Viewer, on: &str) -> Vec<Tab> {
    let t = Tr(v.lang);
    [
        ("/settings/sources", "settings.sources", SOURCES),
        ("/settings/scoring", "settings.scoring", SOURCES),
        ("/settings/workflow", "settings.workflow", WORKFLOW),
        ("/settings/reasons", "settings.reasons", WORKFLOW),
        ("/settings/users", "settings.users", WORKFLOW),
        ("/settings/import", "settings.import", super::imports::IMPORTERS),
        ("/settings/webhooks", "settings.webhooks", ADMIN),
        ("/settings/tokens", "settings.tokens", ADMIN),
    ]
    .into_iter()
    .filter(|(_, _, roles)| v.is(roles))
    .map(|(href, key, _)| Tab { href, label: t.get(key), on: href.ends_with(on) })
    .collect()
}

pub async fn index(Extension(v): Extension<Viewer>) -> Page {
    match tabs(&v, "").first() {
        Some(tab) => Ok(Redirect::to(tab.href).into_response()),
        None => Err(UiError::new(ApiError::Forbidden("admin"), &v)),
    }
}

/// The address sites reach this server at, for embed codes.
pub(super) fn base_url(st: &AppState, headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost:8080");
    let scheme = if super::session::is_https(st, headers) { "https" } else { "http" };
    format!("{scheme}://{host}")
}

// ---------------------------------------------------------------- sources

pub struct SiteView {
    pub site: Site,
    pub origins: String,
    pub embed: String,
}

pub struct FormView {
    pub form: Form,
    pub site: String,
    pub url: String,
    pub embed: String,
}

#[derive(Template)]
#[template(path = "ui/settings_sources.html")]
struct SourcesPage {
    c: Chrome,
    tabs: Vec<Tab>,
    sites: Vec<SiteView>,
    forms: Vec<FormView>,
    channels: Vec<(&'static str, String)>,
}

async fn sources_page(st: &AppState, v: &Viewer, headers: &HeaderMap, c: Chrome, status: StatusCode) -> Page {
    let e = |e: voronka_store::StoreError| UiError::new(e, v);
    let base = base_url(st, headers);
    let sites = st.store.sites().await.map_err(e)?;
    let forms = st.store.forms().await.map_err(e)?;
    let t = Tr(v.lang);
    let forms = forms
        .into_iter()
        .map(|f| {
            let site = f.site_id.and_then(|id| sites.iter().find(|s| s.id == id)).map(|s| s.name.clone()).unwrap_or_default();
            let url = format!("{base}/f/{}", f.form_key);
            let embed = format!(
                "<form action=\"{url}\" method=\"post\">\n  <input name=\"name\" placeholder=\"Имя\">\n  <input name=\"phone\" placeholder=\"Телефон\">\n  \
                 <input name=\"email\" type=\"email\" placeholder=\"E-mail\">\n  <textarea name=\"message\"></textarea>\n  \
                 <input name=\"{hp}\" style=\"display:none\" tabindex=\"-1\" autocomplete=\"off\">\n  <button>Отправить</button>\n</form>",
                hp = f.honeypot_field
            );
            FormView { form: f, site, url, embed }
        })
        .collect();
    let sites = sites
        .into_iter()
        .map(|s| SiteView {
            origins: s.origins.join(", "),
            embed: format!("<script src=\"{base}/t.js\" data-site-key=\"{}\" async></script>", s.site_key),
            site: s,
        })
        .collect();
    let channels = CHANNELS.iter().map(|ch| (*ch, t.channel(ch))).collect();
    Ok(render(status, &SourcesPage { c, tabs: tabs(v, "sources"), sites, forms, channels }))
}

pub async fn sources(State(st): State<AppState>, Extension(v): Extension<Viewer>, headers: HeaderMap, RawQuery(q): RawQuery) -> Page {
    allow(&v, SOURCES)?;
    let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.sources")).with_flash(flash(&q).as_deref());
    sources_page(&st, &v, &headers, c, StatusCode::OK).await
}

async fn sources_error(st: &AppState, v: &Viewer, headers: &HeaderMap, err: ApiError) -> Page {
    let c = Chrome::new(v, "settings", Tr(v.lang).get("settings.sources")).with_error(&err);
    sources_page(st, v, headers, c, err.status()).await
}

pub async fn create_site(State(st): State<AppState>, Extension(v): Extension<Viewer>, headers: HeaderMap, body: Bytes) -> Page {
    allow(&v, SOURCES)?;
    let f = FormData::parse(&body);
    let name = f.string("name").unwrap_or_default();
    let origins: Vec<String> = f
        .get("origins")
        .unwrap_or("")
        .split([',', '\n', ' '])
        .map(|o| o.trim().trim_end_matches('/').to_string())
        .filter(|o| !o.is_empty())
        .collect();
    if let Some(bad) = origins.iter().find(|o| !(o.starts_with("https://") || o.starts_with("http://")) || o.len() > 255) {
        let e = ApiError::field(
            "origins",
            &format!("{bad}: an origin is https://host or http://host[:port]"),
            &format!("{bad}: источник — это https://host или http://host[:port]"),
        );
        return sources_error(&st, &v, &headers, e).await;
    }
    if name.is_empty() {
        return sources_error(&st, &v, &headers, ApiError::field("name", "the site needs a name", "укажите название сайта")).await;
    }
    match st.store.create_site(&name, &origins).await {
        Ok(_) => Ok(done("/settings/sources", "site_created")),
        Err(e) => sources_error(&st, &v, &headers, e.into()).await,
    }
}

pub async fn create_form(State(st): State<AppState>, Extension(v): Extension<Viewer>, headers: HeaderMap, body: Bytes) -> Page {
    allow(&v, SOURCES)?;
    let f = FormData::parse(&body);
    let site_id = match f.get("site_id") {
        None => None,
        Some(s) => match Uuid::parse_str(s) {
            Ok(id) => Some(id),
            Err(_) => return sources_error(&st, &v, &headers, ApiError::field("site_id", "unknown site", "неизвестный сайт")).await,
        },
    };
    let name = f.string("name").unwrap_or_default();
    if name.is_empty() {
        return sources_error(&st, &v, &headers, ApiError::field("name", "the form needs a name", "укажите название формы")).await;
    }
    let spec = FormSpec {
        name,
        thank_you_url: f.string("thank_you_url"),
        site_id,
        channel: f.string("channel"),
        campaign: f.string("campaign"),
        honeypot_field: None,
        field_map: Default::default(),
    };
    match st.store.create_form(&spec).await {
        Ok(_) => Ok(done("/settings/sources", "form_created")),
        Err(e) => sources_error(&st, &v, &headers, e.into()).await,
    }
}

// ---------------------------------------------------------------- JSON editors

#[derive(Template)]
#[template(path = "ui/settings_json.html")]
struct JsonPage {
    c: Chrome,
    tabs: Vec<Tab>,
    action: &'static str,
    intro: &'static str,
    editors: Vec<Editor>,
}

pub struct Editor {
    pub key: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub value: String,
    pub rows: usize,
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn editor(t: Tr, key: &'static str, value: String) -> Editor {
    let rows = value.lines().count().clamp(6, 40);
    Editor { key, label: t.get(&format!("settings.{key}")), help: t.get(&format!("settings.{key}_help")), value, rows }
}

async fn scoring_page(st: &AppState, v: &Viewer, c: Chrome, text: Option<String>, status: StatusCode) -> Page {
    let t = Tr(v.lang);
    let value = match text {
        Some(x) => x,
        None => pretty(&st.store.active_model().1.to_json()),
    };
    let p = JsonPage {
        c,
        tabs: tabs(v, "scoring"),
        action: "/settings/scoring",
        intro: t.get("settings.scoring_intro"),
        editors: vec![editor(t, "model", value)],
    };
    Ok(render(status, &p))
}

pub async fn scoring(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(q): RawQuery) -> Page {
    allow(&v, SOURCES)?;
    let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.scoring")).with_flash(flash(&q).as_deref());
    scoring_page(&st, &v, c, None, StatusCode::OK).await
}

pub async fn save_scoring(State(st): State<AppState>, Extension(v): Extension<Viewer>, body: Bytes) -> Page {
    allow(&v, SOURCES)?;
    let f = FormData::parse(&body);
    let text = f.0.iter().find(|(k, _)| k == "model").map(|(_, x)| x.clone()).unwrap_or_default();
    let title = Tr(v.lang).get("settings.scoring");
    let err = match serde_json::from_str::<Value>(&text) {
        Err(e) => ApiError::MalformedJson(e.to_string()),
        Ok(json) => match st.store.put_model(&json).await {
            Ok(Ok((version, report))) => {
                tracing::info!(version, rescored = report.rescored, user = %v.user.email, "scoring model changed in the UI");
                let mut c = Chrome::new(&v, "settings", title);
                c.flash = Some("flash.model_saved");
                c.errors = Vec::new();
                let p = scoring_page(&st, &v, c, None, StatusCode::OK).await?;
                let _ = report;
                return Ok(p);
            }
            Ok(Err(problems)) => ApiError::InvalidModel(problems),
            Err(e) => e.into(),
        },
    };
    let c = Chrome::new(&v, "settings", title).with_error(&err);
    scoring_page(&st, &v, c, Some(text), err.status()).await
}

async fn workflow_page(st: &AppState, v: &Viewer, c: Chrome, typed: Option<(&str, String)>, status: StatusCode) -> Page {
    let t = Tr(v.lang);
    let e = |e: voronka_store::StoreError| UiError::new(e, v);
    let mut editors = Vec::new();
    for key in SETTINGS {
        let current = match *key {
            "assignment_rules" => serde_json::to_value(st.store.assignment_rules().await.map_err(e)?),
            "slas" => serde_json::to_value(st.store.slas().await.map_err(e)?),
            "calendar" => serde_json::to_value(st.store.calendar().await.map_err(e)?),
            "completeness" => serde_json::to_value(st.store.completeness_fields().await.map_err(e)?),
            _ => serde_json::to_value(st.store.scripts().await.map_err(e)?),
        }
        .unwrap_or(Value::Null);
        let value = match &typed {
            Some((k, text)) if k == key => text.clone(),
            _ => pretty(&current),
        };
        editors.push(editor(t, key, value));
    }
    Ok(render(
        status,
        &JsonPage { c, tabs: tabs(v, "workflow"), action: "/settings/workflow", intro: t.get("settings.workflow_intro"), editors },
    ))
}

pub async fn workflow(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(q): RawQuery) -> Page {
    allow(&v, WORKFLOW)?;
    let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.workflow")).with_flash(flash(&q).as_deref());
    workflow_page(&st, &v, c, None, StatusCode::OK).await
}

/// Saves the one editor whose button was pressed (`key`).
pub async fn save_workflow(State(st): State<AppState>, Extension(v): Extension<Viewer>, body: Bytes) -> Page {
    allow(&v, WORKFLOW)?;
    let f = FormData::parse(&body);
    let Some(key) = f.get("key").and_then(|k| SETTINGS.iter().find(|s| **s == k).copied()) else {
        return Err(UiError::new(ApiError::field("key", "unknown setting", "неизвестная настройка"), &v));
    };
    let text = f.0.iter().find(|(k, _)| k == key).map(|(_, x)| x.clone()).unwrap_or_default();
    let result = match serde_json::from_str::<Value>(&text) {
        Err(e) => Err(ApiError::MalformedJson(e.to_string())),
        Ok(json) => match check_setting(key, &json) {
            Err(e) => Err(e),
            Ok(()) => st.store.put_setting(key, &json).await.map_err(ApiError::from),
        },
    };
    match result {
        Ok(()) => Ok(done("/settings/workflow", "settings_saved")),
        Err(err) => {
            let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.workflow")).with_error(&err);
            workflow_page(&st, &v, c, Some((key, text)), err.status()).await
        }
    }
}

// ---------------------------------------------------------------- reasons

#[derive(Template)]
#[template(path = "ui/settings_reasons.html")]
struct ReasonsPage {
    c: Chrome,
    tabs: Vec<Tab>,
    refused: String,
    junk: String,
}

async fn reasons_page(st: &AppState, v: &Viewer, c: Chrome, typed: Option<(&str, String)>, status: StatusCode) -> Page {
    let all = st.store.reasons(None).await.map_err(|e| UiError::new(e, v))?;
    let lines = |kind: &str| {
        if let Some((k, text)) = &typed
            && *k == kind
        {
            return text.clone();
        }
        all.iter()
            .filter(|r| r.kind == kind && r.active)
            .map(|r| format!("{} | {} | {}", r.code, r.name_en, r.name_ru))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(render(status, &ReasonsPage { c, tabs: tabs(v, "reasons"), refused: lines("refused"), junk: lines("junk") }))
}

pub async fn reasons(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(q): RawQuery) -> Page {
    allow(&v, WORKFLOW)?;
    let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.reasons")).with_flash(flash(&q).as_deref());
    reasons_page(&st, &v, c, None, StatusCode::OK).await
}

/// Lines `code | English | Русский`, one reason per line.
/// A reason: code, English label, Russian label.
type Reason = (String, String, String);

fn parse_reasons(text: &str) -> Result<Vec<Reason>, (usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        match parts.as_slice() {
            [code, en, ru] if voronka_domain::lead::is_slug(code) && !en.is_empty() && !ru.is_empty() => {
                out.push((code.to_string(), en.to_string(), ru.to_string()))
            }
            _ => return Err((n + 1, line.to_string())),
        }
    }
    if out.is_empty() {
        return Err((1, String::new()));
    }
    Ok(out)
}

pub async fn save_reasons(State(st): State<AppState>, Extension(v): Extension<Viewer>, body: Bytes) -> Page {
    allow(&v, WORKFLOW)?;
    let f = FormData::parse(&body);
    let kind = match f.get("kind") {
        Some(k @ ("refused" | "junk")) => k,
        _ => return Err(UiError::new(ApiError::field("kind", "use refused or junk", "допустимо refused или junk"), &v)),
    };
    let text = f.0.iter().find(|(k, _)| k == "lines").map(|(_, x)| x.clone()).unwrap_or_default();
    let err = match parse_reasons(&text) {
        Ok(list) => match st.store.set_reasons(kind, &list).await {
            Ok(()) => return Ok(done("/settings/reasons", "settings_saved")),
            Err(e) => ApiError::from(e),
        },
        Err((line, _)) => ApiError::field(
            &format!("{kind}, line {line}"),
            "write each reason as: code | English | Русский (the code in latin letters, digits, _ or -)",
            "каждая причина — строка: код | English | Русский (код — латиница, цифры, _ или -)",
        ),
    };
    let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.reasons")).with_error(&err);
    reasons_page(&st, &v, c, Some((kind, text)), err.status()).await
}

// ---------------------------------------------------------------- users

pub struct UserRow {
    pub user: User,
    pub team: String,
    pub on_duty: bool,
    pub role: &'static str,
}

#[derive(Template)]
#[template(path = "ui/settings_users.html")]
struct UsersPage {
    c: Chrome,
    tabs: Vec<Tab>,
    rows: Vec<UserRow>,
    roles: Vec<(&'static str, &'static str)>,
    levels: Vec<(&'static str, &'static str)>,
    teams: Vec<(Uuid, String)>,
    admin: bool,
}

async fn users_page(st: &AppState, v: &Viewer, c: Chrome, status: StatusCode) -> Page {
    let e = |e: voronka_store::StoreError| UiError::new(e, v);
    let t = Tr(v.lang);
    let team_filter = if v.is(ADMIN) { None } else { Some(v.user.team_id.unwrap_or(Uuid::nil())) };
    let users = st.store.users(team_filter).await.map_err(e)?;
    let teams: Vec<(Uuid, String)> = st.store.teams().await.map_err(e)?.into_iter().map(|t| (t.id, t.name)).collect();
    let now = st.store.clock().now();
    let rows = users
        .into_iter()
        .map(|u| UserRow {
            team: u.team_id.and_then(|id| teams.iter().find(|(t, _)| *t == id)).map(|(_, n)| n.clone()).unwrap_or_default(),
            on_duty: u.active && u.duty().is_some_and(|d| d.on_duty(now)),
            role: t.get(&format!("role.{}", u.role)),
            user: u,
        })
        .collect();
    let p = UsersPage {
        c,
        tabs: tabs(v, "users"),
        rows,
        roles: ROLES.iter().map(|r| (*r, t.get(&format!("role.{r}")))).collect(),
        levels: LEVELS.iter().map(|l| (*l, t.get(&format!("level.{l}")))).collect(),
        teams,
        admin: v.is(ADMIN),
    };
    Ok(render(status, &p))
}

pub async fn users(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(q): RawQuery) -> Page {
    allow(&v, WORKFLOW)?;
    let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.users")).with_flash(flash(&q).as_deref());
    users_page(&st, &v, c, StatusCode::OK).await
}

fn list_of(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("").split([',', '\n']).map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()
}

pub async fn create_user(State(st): State<AppState>, Extension(v): Extension<Viewer>, body: Bytes) -> Page {
    allow(&v, ADMIN)?;
    let f = FormData::parse(&body);
    let capacity = match f.get("capacity").map(str::parse::<i64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            let err = ApiError::field("capacity", "a whole number", "целое число");
            let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.users")).with_error(&err);
            return users_page(&st, &v, c, err.status()).await;
        }
    };
    let spec = UserSpec {
        email: f.string("email"),
        name: f.string("name"),
        role: f.string("role"),
        password: f.0.iter().find(|(k, _)| k == "password").map(|(_, p)| p.clone()).filter(|p| !p.is_empty()),
        team_id: f.get("team_id").and_then(|x| Uuid::parse_str(x).ok()),
        level: f.string("level"),
        capacity,
        timezone: f.string("timezone"),
        industries: Some(list_of(f.get("industries"))),
        regions: Some(list_of(f.get("regions"))),
        segments: Some(list_of(f.get("segments"))),
        lang: f.string("lang"),
        ..UserSpec::default()
    };
    let result = match check_user(&spec, true) {
        Err(e) => Err(e),
        Ok(()) => st.store.create_user(&spec).await.map_err(ApiError::from),
    };
    match result {
        Ok(u) => Ok(done(&format!("/settings/users/{}", u.id), "user_created")),
        Err(err) => {
            let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.users")).with_error(&err);
            users_page(&st, &v, c, err.status()).await
        }
    }
}

#[derive(Template)]
#[template(path = "ui/settings_user.html")]
struct UserPage {
    c: Chrome,
    tabs: Vec<Tab>,
    u: User,
    admin: bool,
    days: Vec<(&'static str, &'static str, String)>,
    days_off: String,
    vacations: String,
    industries: String,
    regions: String,
    segments: String,
    roles: Vec<(&'static str, &'static str)>,
    levels: Vec<(&'static str, &'static str)>,
    /// Id, name, whether it is the user's team.
    teams: Vec<(Uuid, String, bool)>,
}

const WEEK: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_hours<'a>(h: &'a WeekHours, d: &str) -> &'a Vec<[String; 2]> {
    match d {
        "mon" => &h.mon,
        "tue" => &h.tue,
        "wed" => &h.wed,
        "thu" => &h.thu,
        "fri" => &h.fri,
        "sat" => &h.sat,
        _ => &h.sun,
    }
}

/// May the viewer see and edit this user (an admin: anyone; a head of sales: the team)?
fn may_edit(v: &Viewer, u: &User) -> bool {
    v.is(ADMIN) || (v.is(&["head_of_sales"]) && (u.id == v.user.id || (u.team_id.is_some() && u.team_id == v.user.team_id)))
}

async fn user_page(st: &AppState, v: &Viewer, id: Uuid, c: Chrome, status: StatusCode) -> Page {
    let e = |e: voronka_store::StoreError| UiError::new(e, v);
    let u = st.store.user(id).await.map_err(e)?.filter(|u| may_edit(v, u)).ok_or_else(|| UiError::new(ApiError::NotFound, v))?;
    let t = Tr(v.lang);
    let teams = st.store.teams().await.map_err(e)?.into_iter().map(|t| (t.id, t.name, u.team_id == Some(t.id))).collect();
    let days = WEEK
        .iter()
        .map(|d| {
            (*d, t.get(&format!("day.{d}")), day_hours(&u.hours, d).iter().map(|[a, b]| format!("{a}-{b}")).collect::<Vec<_>>().join(", "))
        })
        .collect();
    let p = UserPage {
        c,
        tabs: tabs(v, "users"),
        admin: v.is(ADMIN),
        days,
        days_off: u.days_off.join(", "),
        vacations: u.vacations.iter().map(|[a, b]| format!("{a}..{b}")).collect::<Vec<_>>().join("\n"),
        industries: u.industries.join(", "),
        regions: u.regions.join(", "),
        segments: u.segments.join(", "),
        roles: ROLES.iter().map(|r| (*r, t.get(&format!("role.{r}")))).collect(),
        levels: LEVELS.iter().map(|l| (*l, t.get(&format!("level.{l}")))).collect(),
        teams,
        u,
    };
    Ok(render(status, &p))
}

pub async fn user(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Page {
    allow(&v, WORKFLOW)?;
    let id = uuid_path(&id).map_err(|e| UiError::new(e, &v))?;
    let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.users")).with_flash(flash(&q).as_deref());
    user_page(&st, &v, id, c, StatusCode::OK).await
}

/// `09:00-13:00, 14:00-18:00` → intervals.
fn parse_day(s: &str) -> Option<Vec<[String; 2]>> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            let (a, b) = x.split_once(['-', '–'])?;
            Some([a.trim().to_string(), b.trim().to_string()])
        })
        .collect()
}

async fn user_fail(st: &AppState, v: &Viewer, id: Uuid, err: ApiError) -> Page {
    let c = Chrome::new(v, "settings", Tr(v.lang).get("settings.users")).with_error(&err);
    user_page(st, v, id, c, err.status()).await
}

pub async fn save_user(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, body: Bytes) -> Page {
    allow(&v, WORKFLOW)?;
    let id = uuid_path(&id).map_err(|e| UiError::new(e, &v))?;
    let current = st
        .store
        .user(id)
        .await
        .map_err(|e| UiError::new(e, &v))?
        .filter(|u| may_edit(&v, u))
        .ok_or_else(|| UiError::new(ApiError::NotFound, &v))?;
    let f = FormData::parse(&body);
    let mut hours = WeekHours::default();
    for d in WEEK {
        let Some(list) = parse_day(f.get(&format!("hours_{d}")).unwrap_or("")) else {
            return user_fail(
                &st,
                &v,
                id,
                ApiError::field(
                    &format!("hours.{d}"),
                    "write hours as 09:00-18:00, several with commas",
                    "часы — как 09:00-18:00, несколько через запятую",
                ),
            )
            .await;
        };
        match d {
            "mon" => hours.mon = list,
            "tue" => hours.tue = list,
            "wed" => hours.wed = list,
            "thu" => hours.thu = list,
            "fri" => hours.fri = list,
            "sat" => hours.sat = list,
            _ => hours.sun = list,
        }
    }
    let mut vacations = Vec::new();
    for line in f.get("vacations").unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once("..") {
            Some((a, b)) => vacations.push([a.trim().to_string(), b.trim().to_string()]),
            None => {
                return user_fail(
                    &st,
                    &v,
                    id,
                    ApiError::field("vacations", "one per line: 2027-01-10..2027-01-24", "по одному на строку: 2027-01-10..2027-01-24"),
                )
                .await;
            }
        }
    }
    let mut spec = UserSpec {
        hours: Some(hours),
        days_off: Some(list_of(f.get("days_off"))),
        vacations: Some(vacations),
        timezone: f.string("timezone"),
        ..UserSpec::default()
    };
    if v.is(ADMIN) {
        let capacity = match f.get("capacity").map(str::parse::<i64>) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return user_fail(&st, &v, id, ApiError::field("capacity", "a whole number", "целое число")).await,
        };
        spec.name = f.string("name");
        spec.email = f.string("email");
        spec.role = f.string("role");
        spec.level = f.string("level");
        spec.capacity = capacity;
        spec.team_id = f.get("team_id").and_then(|x| Uuid::parse_str(x).ok());
        spec.industries = Some(list_of(f.get("industries")));
        spec.regions = Some(list_of(f.get("regions")));
        spec.segments = Some(list_of(f.get("segments")));
        spec.active = Some(f.checked("active"));
        spec.password = f.0.iter().find(|(k, _)| k == "password").map(|(_, p)| p.clone()).filter(|p| !p.is_empty());
        if current.id == v.user.id && spec.active == Some(false) {
            return user_fail(&st, &v, id, ApiError::field("active", "you cannot deactivate yourself", "нельзя отключить самого себя"))
                .await;
        }
    }
    if let Err(e) = check_user(&spec, false) {
        return user_fail(&st, &v, id, e).await;
    }
    match st.store.update_user(id, &spec).await {
        Ok(_) => Ok(done(&format!("/settings/users/{id}"), "user_saved")),
        Err(e) => user_fail(&st, &v, id, e.into()).await,
    }
}

// ---------------------------------------------------------------- tokens

pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub scopes: String,
    pub user: String,
    pub created: String,
    pub revoked: String,
}

#[derive(Template)]
#[template(path = "ui/settings_tokens.html")]
struct TokensPage {
    c: Chrome,
    tabs: Vec<Tab>,
    rows: Vec<TokenRow>,
    users: Vec<(Uuid, String)>,
    scopes: Vec<&'static str>,
    new_token: Option<String>,
}

async fn tokens_page(st: &AppState, v: &Viewer, c: Chrome, new_token: Option<String>, status: StatusCode) -> Page {
    let e = |e: voronka_store::StoreError| UiError::new(e, v);
    let rows = st
        .store
        .list_tokens()
        .await
        .map_err(e)?
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            name: t.name,
            scopes: t.scopes,
            user: t.user_name.unwrap_or_default(),
            created: super::fmt::local(t.created_at, v.tz, v.lang),
            revoked: t.revoked_at.map(|r| super::fmt::local(r, v.tz, v.lang)).unwrap_or_default(),
        })
        .collect();
    let users = st.store.users(None).await.map_err(e)?.into_iter().filter(|u| u.active).map(|u| (u.id, u.name)).collect();
    Ok(render(status, &TokensPage { c, tabs: tabs(v, "tokens"), rows, users, scopes: SCOPES.to_vec(), new_token }))
}

pub async fn tokens(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(q): RawQuery) -> Page {
    allow(&v, ADMIN)?;
    let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.tokens")).with_flash(flash(&q).as_deref());
    tokens_page(&st, &v, c, None, StatusCode::OK).await
}

/// Creates a token and shows it once, on this answer only.
pub async fn create_token(State(st): State<AppState>, Extension(v): Extension<Viewer>, body: Bytes) -> Page {
    allow(&v, ADMIN)?;
    let f = FormData::parse(&body);
    let name = f.string("name").unwrap_or_default();
    let scopes: Vec<String> = f.all("scope").into_iter().map(String::from).collect();
    let user = f.get("user_id").and_then(|u| Uuid::parse_str(u).ok());
    let title = Tr(v.lang).get("settings.tokens");
    let result = match user {
        Some(u) => {
            let owner = st.store.user(u).await.map_err(|e| UiError::new(e, &v))?;
            match owner {
                None => Err(ApiError::field("user_id", "unknown user", "неизвестный пользователь")),
                Some(o) if o.role != "admin" && scopes.iter().any(|s| s == "admin") => {
                    Err(ApiError::field("scope", "only an admin's token may have the admin scope", "право admin — только у администратора"))
                }
                Some(_) => st.store.create_user_token(u, &name, &scopes).await.map_err(ApiError::from),
            }
        }
        None => st.store.create_token(&name, &scopes).await.map_err(ApiError::from),
    };
    match result {
        Ok((_, token)) => {
            let mut c = Chrome::new(&v, "settings", title);
            c.flash = Some("flash.token_created");
            tokens_page(&st, &v, c, Some(token), StatusCode::OK).await
        }
        Err(err) => {
            let c = Chrome::new(&v, "settings", title).with_error(&err);
            tokens_page(&st, &v, c, None, err.status()).await
        }
    }
}

pub async fn revoke_token(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>) -> Page {
    allow(&v, ADMIN)?;
    let id = uuid_path(&id).map_err(|e| UiError::new(e, &v))?;
    st.store.revoke_token(id).await.map_err(|e| UiError::new(e, &v))?;
    st.tokens.forget_all();
    Ok(done("/settings/tokens", "token_revoked"))
}
