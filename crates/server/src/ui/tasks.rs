//! Tasks: mine, my overdue ones, and the team's for a head of sales (everyone's for an admin);
//! for them also the completeness of each manager's open cards.

use super::i18n::Tr;
use super::inbox::user_names;
use super::session::safe_next;
use super::{Chrome, FormData, Page, UiError, Viewer, done, fmt, render};
use crate::AppState;
use crate::api::uuid_path;
use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use uuid::Uuid;
use voronka_store::workflow::ManagerCompleteness;

pub struct TaskRow {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub lead_name: String,
    pub kind: &'static str,
    pub title: String,
    pub due: String,
    pub assignee: String,
    pub overdue: bool,
}

#[derive(Template)]
#[template(path = "ui/tasks.html")]
struct TasksPage {
    c: Chrome,
    view: String,
    team: bool,
    rows: Vec<TaskRow>,
    /// The `cards` view: each manager's name, open cards, average completeness and cards
    /// filled to the normal.
    cards: Vec<(String, i64, String, i64)>,
}

pub async fn page(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(q): RawQuery) -> Page {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let team = v.is(&["admin", "head_of_sales"]);
    let view = match get("view") {
        Some("overdue") => "overdue",
        Some("team") if team => "team",
        Some("team_overdue") if team => "team_overdue",
        Some("cards") if team => "cards",
        _ => "mine",
    };
    if view == "cards" {
        let lines: Vec<ManagerCompleteness> = st.store.completeness_by_manager(&v.access()).await.map_err(|e| UiError::new(e, &v))?;
        let cards =
            lines.into_iter().map(|m| (m.name, m.open_leads, format!("{}%", fmt::num(m.average_percent)), m.normal_cards)).collect();
        let c = Chrome::new(&v, "tasks", Tr(v.lang).get("tasks.cards"));
        return Ok(render(StatusCode::OK, &TasksPage { c, view: view.to_string(), team, rows: Vec::new(), cards }));
    }
    let assignee = if view.starts_with("team") { None } else { Some(v.user.id) };
    let overdue = view.ends_with("overdue");
    let tasks = st.store.tasks(&v.access(), assignee, overdue).await.map_err(|e| UiError::new(e, &v))?;
    let names = user_names(&st, &v).await?;
    let t = Tr(v.lang);
    let rows = tasks
        .into_iter()
        .map(|k| TaskRow {
            id: k.id,
            lead_id: k.lead_id,
            lead_name: k.lead_name.clone().unwrap_or_else(|| t.get("card.no_name").to_string()),
            kind: t.get(&format!("task.{}", k.kind)),
            title: k.title,
            due: k.due_at.map(|d| fmt::local(d, v.tz, v.lang)).unwrap_or_default(),
            assignee: k.assignee_id.and_then(|a| names.get(&a).cloned()).unwrap_or_default(),
            overdue: k.overdue,
        })
        .collect();
    let c = Chrome::new(&v, "tasks", t.get("nav.tasks")).with_flash(get("done"));
    Ok(render(StatusCode::OK, &TasksPage { c, view: view.to_string(), team, rows, cards: Vec::new() }))
}

pub async fn done_task(st: &AppState, v: &Viewer, id: &str, body: &[u8]) -> Page {
    let id = uuid_path(id).map_err(|e| UiError::new(e, v))?;
    let f = FormData::parse(body);
    st.store.complete_task(id, f.get("result"), &v.actor(), &v.access()).await.map_err(|e| UiError::new(e, v))?;
    let back = f.get("back").filter(|b| safe_next(b)).unwrap_or("/tasks");
    Ok(done(back, "task_done"))
}

pub async fn complete(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>, body: Bytes) -> Page {
    done_task(&st, &v, &id, &body).await
}
