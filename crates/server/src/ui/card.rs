//! The lead card: contacts, source and UTM, the score with its explanation, the timeline,
//! tasks, logging a call / e-mail / meeting / note, a state change with its reason,
//! postponement, the matching script, completeness, reassignment and the convert dialog.
//!
//! Actions are plain forms: a success answers 303 back to the card (with a message), a
//! refusal renders the card again with the reason and the status of the API (409, 422).

use super::i18n::Tr;
use super::inbox::user_names;
use super::{Chrome, FormData, Page, UiError, Viewer, done, fmt, render};
use crate::AppState;
use crate::api::uuid_path;
use crate::api::workflow::ActivitySpec;
use crate::error::ApiError;
use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use std::collections::HashMap;
use uuid::Uuid;
use voronka_domain::LeadStatus;
use voronka_domain::workflow::can_move;
use voronka_store::convert::{CompanySpec, ContactSpec, ConvertSpec, DealSpec};
use voronka_store::workflow::{Completeness, NewTask, StatusChange, completeness};
use voronka_store::{Lead, TimelineItem};

pub struct Line {
    pub label: &'static str,
    pub value: String,
}

pub struct ExplainLine {
    pub rule: String,
    pub points: String,
    pub earned: String,
    pub at: String,
    pub kind: &'static str,
}

pub struct Entry {
    pub kind: String,
    pub title: String,
    pub detail: Vec<String>,
    pub actor: String,
    pub at: String,
}

pub struct TaskView {
    pub id: Uuid,
    pub kind: &'static str,
    pub title: String,
    pub due: String,
    pub assignee: String,
    pub open: bool,
    pub overdue: bool,
    pub result: String,
}

pub struct ReasonOption {
    pub kind: String,
    pub code: String,
    pub label: String,
}

/// The convert dialog's values: from the lead, or as the user typed them.
#[derive(Default)]
pub struct ConvertForm {
    pub open: bool,
    pub contact_name: String,
    pub contact_phone: String,
    pub contact_email: String,
    pub contact_position: String,
    pub company_name: String,
    pub inn: String,
    pub kpp: String,
    pub ogrn: String,
    pub okpo: String,
    pub employees: String,
    pub industry: String,
    pub deal_title: String,
    pub deal_amount: String,
}

#[derive(Template)]
#[template(path = "ui/card.html")]
struct CardPage {
    c: Chrome,
    lead: Lead,
    name: String,
    contacts: Vec<Line>,
    source: Vec<Line>,
    extra: Vec<Line>,
    status_label: &'static str,
    temperature_label: &'static str,
    score: String,
    priority: String,
    explanation: Vec<ExplainLine>,
    timeline: Vec<Entry>,
    tasks: Vec<TaskView>,
    completeness: Completeness,
    missing: String,
    script_name: String,
    script_body: String,
    moves: Vec<(&'static str, &'static str)>,
    reasons: Vec<ReasonOption>,
    owner: String,
    users: Vec<(Uuid, String)>,
    can_assign: bool,
    can_convert: bool,
    convert: ConvertForm,
    now_local: String,
    edit_phone: String,
    can_merge: bool,
    merges: Vec<MergeView>,
}

/// A line of the card's merge log.
pub struct MergeView {
    pub id: Uuid,
    /// "merged into this lead" or "merged into another lead".
    pub text: &'static str,
    pub other_id: Uuid,
    pub at: String,
    pub undone: String,
}

fn text(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// The timeline entry as a person reads it.
fn describe(i: &TimelineItem, t: Tr, v: &Viewer, names: &HashMap<Uuid, String>, reasons: &HashMap<String, String>) -> Entry {
    let d = &i.data;
    let s = |k: &str| d.get(k).and_then(Value::as_str).map(String::from);
    let user = |k: &str| d.get(k).and_then(Value::as_str).and_then(|u| Uuid::parse_str(u).ok()).and_then(|u| names.get(&u).cloned());
    let status = |k: &str| s(k).map(|x| t.get(&format!("status.{x}")).to_string()).unwrap_or_default();
    let mut detail = Vec::new();
    let title = match i.kind.as_str() {
        "status_changed" => {
            if let Some(r) = s("reason") {
                let label = reasons.get(&r).cloned().unwrap_or_else(|| t.reason_label(&r));
                detail.push(format!("{}: {label}", t.get("card.reason")));
            }
            if let Some(c) = s("comment") {
                detail.push(c);
            }
            if let Some(u) = s("until").and_then(|u| chrono::DateTime::parse_from_rfc3339(&u).ok()) {
                detail.push(format!("{}: {}", t.get("card.until"), fmt::local(voronka_store::Ts::from(u.to_utc()), v.tz, v.lang)));
            }
            format!("{} → {}", status("from"), status("to"))
        }
        "assigned" => {
            detail.push(format!("{} → {}", user("from").unwrap_or_else(|| "—".into()), user("to").unwrap_or_else(|| "—".into())));
            t.get("event.assigned").to_string()
        }
        "escalated" => {
            detail.push(format!("{} → {}", user("from").unwrap_or_else(|| "—".into()), user("to").unwrap_or_else(|| "—".into())));
            t.get("event.escalated").to_string()
        }
        "field_changed" => {
            let show = |k: &str| match d.get(k) {
                None | Some(Value::Null) => "—".to_string(),
                Some(Value::String(x)) => x.clone(),
                Some(other) => other.to_string(),
            };
            detail.push(format!("{}: {} → {}", s("field").unwrap_or_default(), show("old"), show("new")));
            t.get("event.field_changed").to_string()
        }
        "call" | "email" | "meeting" | "proposal" | "chat" | "note" => {
            if let Some(dir) = s("direction") {
                detail.push(t.get(&format!("card.direction_{dir}")).to_string());
            }
            if let Some(secs) = d.get("duration_seconds").and_then(Value::as_u64) {
                detail.push(format!("{} {}:{:02}", t.get("card.duration"), secs / 60, secs % 60));
            }
            if let Some(r) = s("result") {
                detail.push(format!("{}: {r}", t.get("card.result")));
            }
            if let Some(x) = s("text") {
                detail.push(x);
            }
            t.get(&format!("activity.{}", i.kind)).to_string()
        }
        "merged" | "merged_into" | "unmerged" => {
            for k in ["merged_id", "survivor_id", "other_id"] {
                if let Some(x) = s(k) {
                    detail.push(x);
                }
            }
            t.get(&format!("event.{}", i.kind)).to_string()
        }
        "task_created" | "task_done" => {
            detail.extend(s("title"));
            if let Some(r) = s("result") {
                detail.push(format!("{}: {r}", t.get("card.result")));
            }
            t.get(&format!("event.{}", i.kind)).to_string()
        }
        kind => {
            // Requests, tracked behaviour and the rest: their text fields, as sent.
            for k in ["message", "url", "name", "title", "utm_source", "utm_campaign", "referrer", "matched_by"] {
                if let Some(x) = s(k) {
                    detail.push(format!("{k}: {x}"));
                }
            }
            t.get_or(&format!("event.{kind}"), kind)
        }
    };
    Entry { kind: i.kind.clone(), title, detail, actor: i.actor.clone().unwrap_or_default(), at: fmt::local(i.at, v.tz, v.lang) }
}

fn line(t: Tr, key: &str, v: &Option<String>) -> Option<Line> {
    v.as_ref().filter(|x| !x.is_empty()).map(|x| Line { label: t.get(key), value: x.clone() })
}

async fn load(st: &AppState, v: &Viewer, id: Uuid, convert: Option<ConvertForm>) -> Result<CardPage, UiError> {
    let e = |e: voronka_store::StoreError| UiError::new(e, v);
    let access = v.access();
    let lead = st.store.lead_as(id, &access).await.map_err(e)?.ok_or_else(|| UiError::new(ApiError::NotFound, v))?;
    let t = Tr(v.lang);
    let names = user_names(st, v).await?;
    let score = st.store.score(id).await.map_err(e)?;
    let timeline = st.store.timeline(id, 200, None).await.map_err(e)?;
    let tasks = st.store.lead_tasks(id, &access).await.map_err(|x| UiError::new(x, v))?;
    let fields = st.store.completeness_fields().await.map_err(e)?;
    let (list, normal) = if lead.status == "converted" { (&fields.client, 10) } else { (&fields.lead, 3) };
    let comp = completeness(&lead, list, normal);
    let script = st.store.script_for(&lead).await.map_err(e)?;
    let reasons = st.store.reasons(None).await.map_err(e)?;
    let status: Option<LeadStatus> = lead.status.parse().ok();
    let merges = st.store.merges_of(id).await.map_err(e)?;

    let contacts: Vec<Line> = [
        lead.phone.as_deref().map(|p| Line { label: t.get("lead.phone"), value: fmt::phone(p) }),
        line(t, "lead.email", &lead.email),
        line(t, "lead.messenger", &lead.messenger),
        line(t, "lead.company", &lead.company),
        line(t, "lead.position", &lead.position),
        line(t, "lead.city", &lead.city),
    ]
    .into_iter()
    .flatten()
    .collect();
    let source: Vec<Line> = [
        Some(Line { label: t.get("lead.channel"), value: t.channel(&lead.channel) }),
        line(t, "lead.campaign", &lead.campaign),
        line(t, "lead.source", &lead.source),
        line(t, "utm.source", &lead.utm.source),
        line(t, "utm.medium", &lead.utm.medium),
        line(t, "utm.campaign", &lead.utm.campaign),
        line(t, "utm.content", &lead.utm.content),
        line(t, "utm.term", &lead.utm.term),
        line(t, "lead.referrer", &lead.referrer),
        line(t, "lead.landing_page", &lead.landing_page),
        line(t, "lead.tracking_number", &lead.tracking_number),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut extra: Vec<Line> =
        [line(t, "lead.interest", &lead.interest), line(t, "lead.message", &lead.message)].into_iter().flatten().collect();
    if let Some(b) = lead.budget {
        extra.push(Line { label: t.get("lead.budget"), value: fmt::num(b) });
    }
    if let Value::Object(m) = &lead.fields {
        for (k, val) in m {
            let value = match val {
                Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            extra.push(Line { label: t.get("lead.field"), value: format!("{k}: {value}") });
        }
    }
    if let Some(c) = &lead.consent {
        let yes = if c.marketing { t.get("common.yes") } else { t.get("common.no") };
        extra
            .push(Line { label: t.get("lead.consent"), value: format!("{yes} {}", c.text.clone().unwrap_or_default()).trim().to_string() });
    }

    let moves: Vec<(&'static str, &'static str)> = match status {
        Some(from) => LeadStatus::ALL
            .iter()
            .filter(|to| can_move(from, **to) && **to != LeadStatus::Converted)
            .map(|to| (to.as_str(), t.get(&format!("status.{}", to.as_str()))))
            .collect(),
        None => Vec::new(),
    };
    let reason_names: HashMap<String, String> = reasons
        .iter()
        .map(|r| (r.code.clone(), if v.lang == voronka_domain::Lang::Ru { r.name_ru.clone() } else { r.name_en.clone() }))
        .collect();
    let reasons = reasons
        .into_iter()
        .filter(|r| r.active)
        .map(|r| ReasonOption { label: if v.lang == voronka_domain::Lang::Ru { r.name_ru } else { r.name_en }, kind: r.kind, code: r.code })
        .collect();
    let can_assign = v.is(&["admin", "head_of_sales"]);
    let users = if can_assign {
        let mut u: Vec<(Uuid, String)> =
            st.store.users(None).await.map_err(e)?.into_iter().filter(|u| u.active).map(|u| (u.id, u.name)).collect();
        u.sort_by(|a, b| a.1.cmp(&b.1));
        u
    } else {
        Vec::new()
    };
    let can_convert = !matches!(lead.status.as_str(), "converted" | "refused" | "junk");
    let convert = convert.unwrap_or_else(|| ConvertForm {
        open: false,
        contact_name: text(&lead.name),
        contact_phone: lead.phone.as_deref().map(fmt::phone).unwrap_or_default(),
        contact_email: text(&lead.email),
        contact_position: text(&lead.position),
        company_name: text(&lead.company),
        deal_title: lead.interest.clone().or_else(|| lead.company.clone()).unwrap_or_default(),
        deal_amount: lead.budget.map(fmt::num).unwrap_or_default(),
        ..ConvertForm::default()
    });
    let now = st.store.now();
    Ok(CardPage {
        c: Chrome::new(v, "inbox", lead.name.clone().unwrap_or_else(|| t.get("card.no_name").to_string())),
        name: lead.name.clone().unwrap_or_else(|| t.get("card.no_name").to_string()),
        contacts,
        source,
        extra,
        status_label: t.get(&format!("status.{}", lead.status)),
        temperature_label: t.get(&format!("temp.{}", lead.temperature)),
        score: fmt::num(score.as_ref().map(|s| s.score).unwrap_or(lead.score)),
        priority: fmt::num(lead.priority),
        explanation: score
            .map(|s| {
                s.explanation
                    .into_iter()
                    .map(|x| ExplainLine {
                        rule: x.rule,
                        points: fmt::num(x.points),
                        earned: fmt::num(x.earned),
                        at: fmt::local(x.at, v.tz, v.lang),
                        kind: t.get(&format!("score.{}", x.kind)),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        timeline: timeline.items.iter().map(|i| describe(i, t, v, &names, &reason_names)).collect(),
        tasks: tasks
            .iter()
            .map(|k| TaskView {
                id: k.id,
                kind: t.get(&format!("task.{}", k.kind)),
                title: k.title.clone(),
                due: k.due_at.map(|d| fmt::local(d, v.tz, v.lang)).unwrap_or_default(),
                assignee: k.assignee_id.and_then(|a| names.get(&a).cloned()).unwrap_or_default(),
                open: k.status == "open",
                overdue: k.overdue,
                result: k.result.clone().unwrap_or_default(),
            })
            .collect(),
        missing: comp.missing.iter().map(|f| t.get_or(&format!("lead.{f}"), f)).collect::<Vec<_>>().join(", "),
        completeness: comp,
        script_name: script.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
        script_body: script.map(|s| s.body).unwrap_or_default(),
        moves,
        reasons,
        owner: lead.owner.as_ref().and_then(|o| names.get(&o.id).cloned()).unwrap_or_default(),
        users,
        can_assign,
        can_convert,
        convert,
        now_local: fmt::input_value(now, v.tz),
        edit_phone: lead.phone.as_deref().map(fmt::phone).unwrap_or_default(),
        can_merge: lead.status != "converted",
        merges: merges
            .into_iter()
            .map(|m| {
                let into_this = m.survivor_id == lead.id;
                MergeView {
                    id: m.id,
                    text: t.get(if into_this { "merge.into_this" } else { "merge.into_other" }),
                    other_id: if into_this { m.merged_id } else { m.survivor_id },
                    at: fmt::local(m.created_at, v.tz, v.lang),
                    undone: m.undone_at.map(|u| fmt::local(u, v.tz, v.lang)).unwrap_or_default(),
                }
            })
            .collect(),
        lead,
    })
}

fn flash_of(raw: Option<&str>) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or("")).ok()?.into_iter().find(|(k, _)| k == "done").map(|(_, v)| v)
}

pub async fn page(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Page {
    let id = uuid_path(&id).map_err(|e| UiError::new(e, &v))?;
    let mut p = load(&st, &v, id, None).await?;
    p.c = p.c.with_flash(flash_of(q.as_deref()).as_deref());
    Ok(render(StatusCode::OK, &p))
}

/// The card again with the refusal, answered with the refusal's status.
async fn refused(st: &AppState, v: &Viewer, id: Uuid, err: ApiError, convert: Option<ConvertForm>) -> Page {
    if matches!(err, ApiError::NotFound) {
        return Err(UiError::new(err, v));
    }
    let status = err.status();
    let mut p = load(st, v, id, convert).await?;
    p.c = p.c.with_error(&err);
    Ok(render(status, &p))
}

macro_rules! try_or_card {
    ($st:expr, $v:expr, $id:expr, $e:expr) => {
        match $e {
            Ok(x) => x,
            Err(err) => return refused($st, $v, $id, ApiError::from(err), None).await,
        }
    };
}

fn id_of(v: &Viewer, raw: &str) -> Result<Uuid, UiError> {
    uuid_path(raw).map_err(|e| UiError::new(e, v))
}

pub async fn activity(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, body: Bytes) -> Page {
    let id = id_of(&v, &id)?;
    let f = FormData::parse(&body);
    let duration = match f.get("duration_minutes") {
        None => None,
        Some(m) => match m.replace(',', ".").parse::<f64>() {
            Ok(x) if (0.0..=1440.0).contains(&x) => Some((x * 60.0).round() as u32),
            _ => {
                let e = ApiError::field("duration_minutes", "minutes, from 0 to 1440", "минуты, от 0 до 1440");
                return refused(&st, &v, id, e, None).await;
            }
        },
    };
    let spec = ActivitySpec {
        kind: f.string("kind").unwrap_or_default(),
        direction: f.string("direction").filter(|_| f.get("kind") == Some("call")),
        duration_seconds: duration,
        result: f.string("result"),
        text: f.string("text"),
    };
    let data = try_or_card!(&st, &v, id, spec.data());
    try_or_card!(&st, &v, id, st.store.log_activity(id, &spec.kind, &data, &v.actor(), Some(v.user.id), &v.access()).await);
    Ok(done(&format!("/leads/{id}"), "activity_logged"))
}

pub async fn status(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, body: Bytes) -> Page {
    let id = id_of(&v, &id)?;
    let f = FormData::parse(&body);
    let to = f.string("status").unwrap_or_default();
    let until = match f.get("until") {
        Some(u) if to == "postponed" => match fmt::parse_local(u, v.tz) {
            Some(ts) => Some(ts.rfc3339()),
            None => {
                let e = ApiError::field("until", "a date and time, e.g. 2027-03-01T10:00", "дата и время, например 2027-03-01T10:00");
                return refused(&st, &v, id, e, None).await;
            }
        },
        _ => None,
    };
    // A reason belongs to the list of the state moved to.
    let reason = f.string(&format!("reason_{to}")).or_else(|| f.string("reason"));
    let change = StatusChange { status: to, reason, comment: f.string("comment"), until };
    try_or_card!(&st, &v, id, st.store.change_status(id, &change, &v.actor(), &v.access()).await);
    Ok(done(&format!("/leads/{id}"), "status_changed"))
}

pub async fn task(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, body: Bytes) -> Page {
    let id = id_of(&v, &id)?;
    let f = FormData::parse(&body);
    let due = match f.get("due") {
        None => None,
        Some(d) => match fmt::parse_local(d, v.tz) {
            Some(ts) => Some(ts),
            None => {
                let e = ApiError::field("due", "a date and time, e.g. 2027-03-01T10:00", "дата и время, например 2027-03-01T10:00");
                return refused(&st, &v, id, e, None).await;
            }
        },
    };
    let assignee = match f.get("assignee") {
        None => Some(v.user.id),
        Some(a) => match Uuid::parse_str(a) {
            Ok(u) => Some(u),
            Err(_) => return refused(&st, &v, id, ApiError::field("assignee", "unknown user", "неизвестный пользователь"), None).await,
        },
    };
    let kind = f.string("kind").unwrap_or_default();
    let title = f.string("title").unwrap_or_default();
    let new = NewTask { kind: &kind, title: &title, due, assignee };
    try_or_card!(&st, &v, id, st.store.create_task(id, &new, &v.actor(), &v.access()).await);
    Ok(done(&format!("/leads/{id}"), "task_created"))
}

/// Field edits: only fields that changed are sent, each one audited on the timeline.
pub async fn edit(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, body: Bytes) -> Page {
    let id = id_of(&v, &id)?;
    let f = FormData::parse(&body);
    let lead =
        st.store.lead_as(id, &v.access()).await.map_err(|e| UiError::new(e, &v))?.ok_or_else(|| UiError::new(ApiError::NotFound, &v))?;
    let mut patch = Map::new();
    let current = |k: &str| -> String {
        match k {
            "name" => text(&lead.name),
            "phone" => lead.phone.as_deref().map(fmt::phone).unwrap_or_default(),
            "email" => text(&lead.email),
            "company" => text(&lead.company),
            "position" => text(&lead.position),
            "city" => text(&lead.city),
            "interest" => text(&lead.interest),
            _ => String::new(),
        }
    };
    for k in ["name", "phone", "email", "company", "position", "city", "interest"] {
        let new = f.get(k).unwrap_or("").to_string();
        if new != current(k) {
            patch.insert(k.to_string(), if new.is_empty() { Value::Null } else { Value::String(new) });
        }
    }
    if patch.is_empty() {
        return Ok(done(&format!("/leads/{id}"), "nothing_changed"));
    }
    try_or_card!(&st, &v, id, st.store.update_lead(id, &patch, &v.actor(), &v.access(), st.cfg.region).await);
    Ok(done(&format!("/leads/{id}"), "lead_saved"))
}

pub async fn assign(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, body: Bytes) -> Page {
    let id = id_of(&v, &id)?;
    // Another's lead is not found, whatever the role; one's own cannot be handed on without it.
    if !st.store.can_see(id, &v.access()).await.map_err(|e| UiError::new(e, &v))? {
        return Err(UiError::new(ApiError::NotFound, &v));
    }
    if !v.is(&["admin", "head_of_sales"]) {
        return Err(UiError::new(ApiError::Forbidden("head_of_sales"), &v));
    }
    let f = FormData::parse(&body);
    let Some(user) = f.get("user_id").and_then(|u| Uuid::parse_str(u).ok()) else {
        return refused(&st, &v, id, ApiError::field("user_id", "choose a user", "выберите пользователя"), None).await;
    };
    try_or_card!(&st, &v, id, st.store.reassign(id, user, &v.actor(), &v.access()).await);
    Ok(done(&format!("/leads/{id}"), "lead_assigned"))
}

pub async fn convert(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, body: Bytes) -> Page {
    let id = id_of(&v, &id)?;
    let f = FormData::parse(&body);
    let s = |k: &str| f.get(k).unwrap_or("").to_string();
    let form = ConvertForm {
        open: true,
        contact_name: s("contact_name"),
        contact_phone: s("contact_phone"),
        contact_email: s("contact_email"),
        contact_position: s("contact_position"),
        company_name: s("company_name"),
        inn: s("inn"),
        kpp: s("kpp"),
        ogrn: s("ogrn"),
        okpo: s("okpo"),
        employees: s("employees"),
        industry: s("industry"),
        deal_title: s("deal_title"),
        deal_amount: s("deal_amount"),
    };
    let employees = match f.get("employees") {
        None => None,
        Some(x) => match x.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let e = ApiError::field("company.employees", "a whole number", "целое число");
                return refused(&st, &v, id, e, Some(form)).await;
            }
        },
    };
    let amount = match f.get("deal_amount") {
        None => None,
        Some(x) => match x.replace([' ', '\u{a0}'], "").replace(',', ".").parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Some(n),
            _ => {
                let e = ApiError::field("deal.amount", "a number, e.g. 150000", "число, например 150000");
                return refused(&st, &v, id, e, Some(form)).await;
            }
        },
    };
    let company = [f.get("company_name"), f.get("inn")].iter().any(Option::is_some).then(|| CompanySpec {
        name: f.string("company_name"),
        inn: f.string("inn"),
        kpp: f.string("kpp"),
        ogrn: f.string("ogrn"),
        okpo: f.string("okpo"),
        size: None,
        employees,
        industry: f.string("industry"),
    });
    let deal =
        (f.get("deal_title").is_some() || amount.is_some()).then(|| DealSpec { title: f.string("deal_title"), amount, currency: None });
    let spec = ConvertSpec {
        contact: ContactSpec {
            name: f.string("contact_name"),
            phone: f.string("contact_phone"),
            email: f.string("contact_email"),
            messenger: None,
            position: f.string("contact_position"),
        },
        company,
        deal,
    };
    match st.store.convert(id, &spec, &v.actor(), &v.access(), st.cfg.region).await {
        Ok(_) => Ok(done(&format!("/leads/{id}"), "lead_converted")),
        Err(e) => refused(&st, &v, id, ApiError::from(e), Some(form)).await,
    }
}

/// The lead a person means by an id, a phone, an e-mail or a messenger handle.
pub async fn resolve_lead(st: &AppState, raw: &str, field: &str) -> Result<Uuid, ApiError> {
    let raw = raw.trim();
    if let Ok(id) = Uuid::parse_str(raw) {
        return Ok(id);
    }
    let ident = voronka_domain::Phone::parse(raw, st.cfg.region)
        .map(|p| p.identity())
        .or_else(|| voronka_domain::Email::parse(raw).map(|e| e.identity()))
        .or_else(|| if raw.starts_with('@') { voronka_domain::Messenger::parse(raw, st.cfg.region).map(|m| m.identity()) } else { None });
    let found = match ident {
        Some(i) => st.store.lead_of_identity(&i).await?,
        None => None,
    };
    found.ok_or_else(|| ApiError::field(field, "no lead with this id, phone or e-mail", "нет лида с таким id, телефоном или e-mail"))
}

/// Merges another lead (named by id, phone or e-mail) into this one.
pub async fn merge(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, body: Bytes) -> Page {
    let id = id_of(&v, &id)?;
    let f = FormData::parse(&body);
    let other = match resolve_lead(&st, f.get("other").unwrap_or(""), "other").await {
        Ok(o) => o,
        Err(e) => return refused(&st, &v, id, e, None).await,
    };
    let r = st.store.merge_leads(id, other, &v.actor(), &v.access()).await;
    let r = r.map_err(|e| match e {
        voronka_store::workflow::WorkflowError::Invalid { en, ru, .. } => {
            ApiError::Fields { code: "invalid_fields", fields: vec![("other".into(), en, ru)] }
        }
        other => other.into(),
    });
    match r {
        Ok(_) => Ok(done(&format!("/leads/{id}"), "leads_merged")),
        Err(e) => refused(&st, &v, id, e, None).await,
    }
}

/// Splits a merge back into its two leads.
pub async fn unmerge(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>) -> Page {
    let id = id_of(&v, &id)?;
    let m = st.store.merge(id).await.map_err(|e| UiError::new(e, &v))?.ok_or_else(|| UiError::new(ApiError::NotFound, &v))?;
    try_or_card!(&st, &v, m.survivor_id, st.store.unmerge(id, &v.actor(), &v.access()).await);
    Ok(done(&format!("/leads/{}", m.survivor_id), "leads_unmerged"))
}
