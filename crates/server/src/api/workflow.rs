//! The sales workflow over the API: state moves, field edits, activities, tasks, routing
//! and the queue, conversion and contacts, notifications, and the settings behind them.
//! Every lead endpoint checks that the caller may see the lead (404 otherwise).

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
use serde_json::{Map, Value, json};
use uuid::Uuid;
use voronka_store::convert::{Contact, ConvertSpec, Converted};
use voronka_store::workflow::{
    Calendar, CompletenessFields, ManagerCompleteness, Notification, Reason, Script, StatusChange, Task, completeness,
};
use voronka_store::{Lead, TimelinePage, Ts};

#[utoipa::path(post, path = "/api/v1/leads/{id}/status", tag = "workflow", request_body = StatusChange, params(("id" = Uuid, Path)),
    responses((status = 200, body = Lead), (status = 404), (status = 409, description = "invalid_transition"), (status = 422, description = "reason_required, invalid_fields")),
    security(("bearer" = ["leads:write"])))]
pub async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Lead>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let id = uuid_path(&id)?;
    let change: StatusChange = json_body(body)?;
    Ok(axum::Json(st.store.change_status(id, &change, &t.actor(), &t.access()).await?))
}

#[utoipa::path(patch, path = "/api/v1/leads/{id}", tag = "workflow", request_body(content = Object, description = "Fields to change: name, phone, email, messenger, company, position, city, interest, message, budget, fields"),
    params(("id" = Uuid, Path)), responses((status = 200, body = Lead), (status = 404), (status = 409, description = "contact_taken"), (status = 422)),
    security(("bearer" = ["leads:write"])))]
pub async fn patch(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Lead>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let id = uuid_path(&id)?;
    let patch: Map<String, Value> = json_body(body)?;
    Ok(axum::Json(st.store.update_lead(id, &patch, &t.actor(), &t.access(), st.cfg.region).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivitySpec {
    /// call, email, meeting, proposal, chat or note.
    pub kind: String,
    /// For calls: in or out.
    pub direction: Option<String>,
    pub duration_seconds: Option<u32>,
    pub result: Option<String>,
    pub text: Option<String>,
}

impl ActivitySpec {
    /// The activity's timeline data, once its fields are checked.
    pub fn data(&self) -> Result<Value, ApiError> {
        if self.direction.as_deref().is_some_and(|d| d != "in" && d != "out") {
            return Err(ApiError::field("direction", "use in or out", "допустимо in или out"));
        }
        if self.text.as_ref().is_some_and(|x| x.chars().count() > 10_000) {
            return Err(ApiError::field(
                "text",
                "too long (at most 10,000 characters)",
                "слишком длинный текст (не более 10 000 символов)",
            ));
        }
        if self.result.as_ref().is_some_and(|x| x.chars().count() > 1000) {
            return Err(ApiError::field(
                "result",
                "too long (at most 1,000 characters)",
                "слишком длинный результат (не более 1000 символов)",
            ));
        }
        Ok(json!({"direction": self.direction, "duration_seconds": self.duration_seconds, "result": self.result, "text": self.text}))
    }
}

#[utoipa::path(post, path = "/api/v1/leads/{id}/activities", tag = "workflow", request_body = ActivitySpec, params(("id" = Uuid, Path)),
    responses((status = 201, body = Lead), (status = 404), (status = 422)), security(("bearer" = ["leads:write"])))]
pub async fn activity(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let id = uuid_path(&id)?;
    let a: ActivitySpec = json_body(body)?;
    let data = a.data()?;
    let lead = st.store.log_activity(id, &a.kind, &data, &t.actor(), t.user.as_ref().map(|u| u.id), &t.access()).await?;
    Ok((StatusCode::CREATED, axum::Json(lead)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// call, email, meeting, proposal or other.
    kind: String,
    title: String,
    #[schema(format = DateTime)]
    due_at: Option<String>,
    assignee_id: Option<Uuid>,
}

fn time(field: &str, v: Option<&str>) -> Result<Option<Ts>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(Ts::from(t.with_timezone(&chrono::Utc))))
            .map_err(|_| ApiError::field(field, "must be an RFC 3339 time", "нужно время в RFC 3339")),
    }
}

#[utoipa::path(post, path = "/api/v1/leads/{id}/tasks", tag = "workflow", request_body = TaskSpec, params(("id" = Uuid, Path)),
    responses((status = 201, body = Task), (status = 404), (status = 422)), security(("bearer" = ["leads:write"])))]
pub async fn create_task(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let id = uuid_path(&id)?;
    let s: TaskSpec = json_body(body)?;
    let due = time("due_at", s.due_at.as_deref())?;
    let new = voronka_store::workflow::NewTask { kind: &s.kind, title: &s.title, due, assignee: s.assignee_id };
    let task = st.store.create_task(id, &new, &t.actor(), &t.access()).await?;
    Ok((StatusCode::CREATED, axum::Json(task)))
}

#[utoipa::path(get, path = "/api/v1/leads/{id}/tasks", tag = "workflow", params(("id" = Uuid, Path)), responses((status = 200, body = Vec<Task>), (status = 404)), security(("bearer" = ["leads:read"])))]
pub async fn lead_tasks(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<axum::Json<Vec<Task>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let id = uuid_path(&id)?;
    Ok(axum::Json(st.store.lead_tasks(id, &t.access()).await?))
}

/// Open tasks: `?assignee=me` (default for managers), `?assignee=all` (a head of sales:
/// the team's), `&overdue=true`.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "workflow", params(("assignee" = Option<String>, Query, description = "me, all or a user id"), ("overdue" = Option<bool>, Query)),
    responses((status = 200, body = Vec<Task>)), security(("bearer" = ["leads:read"])))]
pub async fn tasks(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<axum::Json<Vec<Task>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let me = t.user.as_ref().map(|u| u.id);
    let assignee = match get("assignee") {
        None | Some("me") if me.is_some() => me,
        None | Some("all") | Some("me") => None,
        Some(id) => Some(
            Uuid::parse_str(id)
                .map_err(|_| ApiError::field("assignee", "use me, all or a user id", "укажите me, all или id пользователя"))?,
        ),
    };
    let overdue = matches!(get("overdue"), Some("true") | Some("1"));
    Ok(axum::Json(st.store.tasks(&t.access(), assignee, overdue).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    result: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", tag = "workflow", request_body = Completion, params(("id" = Uuid, Path)),
    responses((status = 200, body = Task), (status = 404)), security(("bearer" = ["leads:write"])))]
pub async fn complete_task(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Task>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let id = uuid_path(&id)?;
    let c: Completion = json_body(body)?;
    Ok(axum::Json(st.store.complete_task(id, c.result.as_deref(), &t.actor(), &t.access()).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignSpec {
    user_id: Uuid,
}

#[utoipa::path(post, path = "/api/v1/leads/{id}/assign", tag = "workflow", request_body = AssignSpec, params(("id" = Uuid, Path)),
    responses((status = 200, body = Lead), (status = 403), (status = 404), (status = 409), (status = 422)), security(("bearer" = ["leads:write"])))]
pub async fn assign(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Lead>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let id = uuid_path(&id)?;
    // Another's lead is not found for anyone, whatever their role; one's own lead cannot be
    // handed on without the role.
    if !st.store.can_see(id, &t.access()).await? {
        return Err(ApiError::NotFound);
    }
    require_role(&t, &["admin", "head_of_sales"])?;
    let s: AssignSpec = json_body(body)?;
    Ok(axum::Json(st.store.reassign(id, s.user_id, &t.actor(), &t.access()).await?))
}

#[utoipa::path(get, path = "/api/v1/queue", tag = "workflow", responses((status = 200, body = Vec<Lead>, description = "Leads waiting for someone on duty")), security(("bearer" = ["leads:read"])))]
pub async fn queue(State(st): State<AppState>, headers: HeaderMap) -> Result<axum::Json<Vec<Lead>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    Ok(axum::Json(st.store.queue(&t.access()).await?))
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "workflow", responses((status = 200, body = Vec<Notification>)), security(("bearer" = ["leads:read"])))]
pub async fn notifications(State(st): State<AppState>, headers: HeaderMap) -> Result<axum::Json<Vec<Notification>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let Some(u) = &t.user else { return Ok(axum::Json(Vec::new())) };
    Ok(axum::Json(st.store.notifications(u.id).await?))
}

#[utoipa::path(post, path = "/api/v1/leads/{id}/convert", tag = "workflow", request_body = ConvertSpec, params(("id" = Uuid, Path)),
    responses((status = 201, body = Converted), (status = 404), (status = 409, description = "already_converted"), (status = 422, description = "A check digit failed, named")),
    security(("bearer" = ["leads:write"])))]
pub async fn convert(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let id = uuid_path(&id)?;
    let spec: ConvertSpec = json_body(body)?;
    let out = st.store.convert(id, &spec, &t.actor(), &t.access(), st.cfg.region).await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

#[utoipa::path(get, path = "/api/v1/contacts/{id}", tag = "workflow", params(("id" = Uuid, Path)), responses((status = 200, body = Contact), (status = 404)), security(("bearer" = ["leads:read"])))]
pub async fn contact(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<axum::Json<Contact>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let id = uuid_path(&id)?;
    st.store.contact(id, &t.access()).await?.map(axum::Json).ok_or(ApiError::NotFound)
}

/// Each manager's open cards: how many, how complete on average, how many filled to the
/// normal. A manager sees their own line, a head of sales the team's.
#[utoipa::path(get, path = "/api/v1/analytics/completeness", tag = "workflow",
    responses((status = 200, body = Vec<ManagerCompleteness>)), security(("bearer" = ["leads:read"])))]
pub async fn completeness_by_manager(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<Vec<ManagerCompleteness>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    Ok(axum::Json(st.store.completeness_by_manager(&t.access()).await?))
}

/// The timelines of the contact's leads as one, newest first, each entry naming its lead.
#[utoipa::path(get, path = "/api/v1/contacts/{id}/timeline", tag = "workflow",
    params(("id" = Uuid, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = TimelinePage), (status = 404)), security(("bearer" = ["leads:read"])))]
pub async fn contact_timeline(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<axum::Json<TimelinePage>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let id = uuid_path(&id)?;
    let (limit, before) = super::leads::timeline_query(q.as_deref())?;
    st.store.contact_timeline(id, &t.access(), limit, before).await?.map(axum::Json).ok_or(ApiError::NotFound)
}

/// The lead card's extras: completeness, the matching script, open tasks.
#[utoipa::path(get, path = "/api/v1/leads/{id}/card", tag = "workflow", params(("id" = Uuid, Path)),
    responses((status = 200, description = "{\"lead\", \"completeness\", \"script\", \"tasks\"}"), (status = 404)), security(("bearer" = ["leads:read"])))]
pub async fn card(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let id = uuid_path(&id)?;
    let lead = st.store.lead_as(id, &t.access()).await?.ok_or(ApiError::NotFound)?;
    let fields = st.store.completeness_fields().await?;
    let (list, normal) = if lead.status == "converted" { (&fields.client, 10) } else { (&fields.lead, 3) };
    let c = completeness(&lead, list, normal);
    let script = st.store.script_for(&lead).await?;
    let tasks = st.store.lead_tasks(id, &t.access()).await?;
    Ok(axum::Json(json!({"lead": lead, "completeness": c, "script": script, "tasks": tasks})))
}

/// The settings the workflow runs on, by name.
pub const SETTINGS: &[&str] = &["assignment_rules", "slas", "calendar", "completeness", "scripts"];

pub fn check_setting(key: &str, v: &Value) -> Result<(), ApiError> {
    let bad = |e: String| ApiError::Fields {
        code: "invalid_setting",
        fields: vec![(key.to_string(), e.clone(), format!("ошибка в настройке: {e}"))],
    };
    match key {
        "assignment_rules" => {
            serde_json::from_value::<Vec<voronka_domain::assign::Rule>>(v.clone()).map(|_| ()).map_err(|e| bad(e.to_string()))
        }
        "slas" => {
            let list: Vec<voronka_domain::assign::Sla> = serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
            if list.iter().any(|s| s.seconds < 0) { Err(bad("seconds must not be negative".into())) } else { Ok(()) }
        }
        "calendar" => {
            let c: Calendar = serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
            c.duty().map(|_| ()).ok_or_else(|| bad("unknown time zone or bad hours".into()))
        }
        "completeness" => serde_json::from_value::<CompletenessFields>(v.clone()).map_err(|e| bad(e.to_string()))?.check().map_err(bad),
        "scripts" => serde_json::from_value::<Vec<Script>>(v.clone()).map(|_| ()).map_err(|e| bad(e.to_string())),
        _ => Err(ApiError::NotFound),
    }
}

#[utoipa::path(get, path = "/api/v1/settings/{key}", tag = "settings", params(("key" = String, Path, description = "assignment_rules, slas, calendar, completeness or scripts")),
    responses((status = 200), (status = 404)), security(("bearer" = ["leads:read"])))]
pub async fn get_setting(State(st): State<AppState>, headers: HeaderMap, Path(key): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let v = match key.as_str() {
        "assignment_rules" => serde_json::to_value(st.store.assignment_rules().await?),
        "slas" => serde_json::to_value(st.store.slas().await?),
        "calendar" => serde_json::to_value(st.store.calendar().await?),
        "completeness" => serde_json::to_value(st.store.completeness_fields().await?),
        "scripts" => serde_json::to_value(st.store.scripts().await?),
        _ => return Err(ApiError::NotFound),
    };
    Ok(axum::Json(v.unwrap_or(Value::Null)))
}

#[utoipa::path(put, path = "/api/v1/settings/{key}", tag = "settings", params(("key" = String, Path)), request_body(content = Object),
    responses((status = 200), (status = 404), (status = 422, description = "invalid_setting")), security(("bearer" = ["admin"])))]
pub async fn put_setting(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    require_role(&t, &["admin", "head_of_sales"])?;
    if !SETTINGS.contains(&key.as_str()) {
        return Err(ApiError::NotFound);
    }
    let v: Value = json_body(body)?;
    check_setting(&key, &v)?;
    st.store.put_setting(&key, &v).await?;
    Ok(axum::Json(v))
}

#[utoipa::path(get, path = "/api/v1/reasons", tag = "settings", responses((status = 200, body = Vec<Reason>)), security(("bearer" = ["leads:read"])))]
pub async fn reasons(State(st): State<AppState>, headers: HeaderMap) -> Result<axum::Json<Vec<Reason>>, ApiError> {
    st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    Ok(axum::Json(st.store.reasons(None).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonSpec {
    code: String,
    name_en: String,
    name_ru: String,
}

#[utoipa::path(put, path = "/api/v1/reasons/{kind}", tag = "settings", params(("kind" = String, Path, description = "refused or junk")), request_body = Vec<ReasonSpec>,
    responses((status = 200, body = Vec<Reason>), (status = 422)), security(("bearer" = ["admin"])))]
pub async fn put_reasons(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(kind): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Vec<Reason>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    require_role(&t, &["admin", "head_of_sales"])?;
    if kind != "refused" && kind != "junk" {
        return Err(ApiError::NotFound);
    }
    let list: Vec<ReasonSpec> = json_body(body)?;
    if list.is_empty()
        || list.iter().any(|r| !voronka_domain::lead::is_slug(&r.code) || r.name_en.trim().is_empty() || r.name_ru.trim().is_empty())
    {
        return Err(ApiError::field(
            "reasons",
            "each needs a code (latin, digits, _ -) and names in both languages",
            "у каждой причины — код (латиница, цифры, _ -) и названия на двух языках",
        ));
    }
    let items: Vec<(String, String, String)> = list.into_iter().map(|r| (r.code, r.name_en, r.name_ru)).collect();
    st.store.set_reasons(&kind, &items).await?;
    Ok(axum::Json(st.store.reasons(Some(&kind)).await?))
}
