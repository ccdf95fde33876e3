//! Merge and unmerge of leads, and the unsorted inbox's one-step actions (accept, decline,
//! link to an existing lead) over the API.

use crate::AppState;
use crate::api::users::json_body;
use crate::api::uuid_path;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use voronka_store::Lead;
use voronka_store::merge::MergeInfo;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeSpec {
    /// The lead merged into this one (it is closed as a junk duplicate).
    pub merged_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Merged {
    pub merge: MergeInfo,
    /// The surviving lead after the merge.
    pub lead: Lead,
}

fn lead_ref(field: &str, s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s.trim()).map_err(|_| ApiError::field(field, "must be a lead id", "нужен id лида"))
}

#[utoipa::path(post, path = "/api/v1/leads/{id}/merge", tag = "workflow", request_body = MergeSpec, params(("id" = Uuid, Path, description = "The surviving lead")),
    responses((status = 200, body = Merged), (status = 404), (status = 409, description = "merge_converted, already_merged"), (status = 422)),
    security(("bearer" = ["leads:write"])))]
pub async fn merge(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Merged>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let id = uuid_path(&id)?;
    let spec: MergeSpec = json_body(body)?;
    let other = lead_ref("merged_id", &spec.merged_id)?;
    let (merge, lead) = st.store.merge_leads(id, other, &t.actor(), &t.access()).await?;
    Ok(axum::Json(Merged { merge, lead }))
}

#[utoipa::path(get, path = "/api/v1/leads/{id}/merges", tag = "workflow", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<MergeInfo>), (status = 404)), security(("bearer" = ["leads:read"])))]
pub async fn merges(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::Json<Vec<MergeInfo>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let id = uuid_path(&id)?;
    if !st.store.can_see(id, &t.access()).await? {
        return Err(ApiError::NotFound);
    }
    Ok(axum::Json(st.store.merges_of(id).await?))
}

#[utoipa::path(post, path = "/api/v1/merges/{id}/undo", tag = "workflow", params(("id" = Uuid, Path)),
    responses((status = 200, body = MergeInfo), (status = 404), (status = 409, description = "already_unmerged, later_merge")),
    security(("bearer" = ["leads:write"])))]
pub async fn unmerge(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<axum::Json<MergeInfo>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let id = uuid_path(&id)?;
    Ok(axum::Json(st.store.unmerge(id, &t.actor(), &t.access()).await?))
}

#[utoipa::path(get, path = "/api/v1/triage", tag = "workflow", params(("limit" = Option<u32>, Query)),
    responses((status = 200, body = Vec<Lead>)), security(("bearer" = ["leads:read"])))]
pub async fn triage_list(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<axum::Json<Vec<Lead>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let limit = match pairs.iter().find(|(k, _)| k == "limit") {
        None => 100,
        Some((_, l)) => {
            l.parse::<i64>().ok().filter(|l| (1..=500).contains(l)).ok_or_else(|| ApiError::field("limit", "1 to 500", "от 1 до 500"))?
        }
    };
    Ok(axum::Json(st.store.triage_leads(&t.access(), limit).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageAction {
    /// accept, decline or link.
    pub action: String,
    /// For decline: a junk reason code.
    pub reason: Option<String>,
    /// For link: the person's existing lead.
    pub lead_id: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/leads/{id}/triage", tag = "workflow", request_body = TriageAction, params(("id" = Uuid, Path)),
    responses((status = 200, body = Lead, description = "The lead after the action (for link: the existing lead)"), (status = 404),
        (status = 409, description = "not_in_triage"), (status = 422, description = "reason_required, invalid_fields")),
    security(("bearer" = ["leads:write"])))]
pub async fn triage(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Lead>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:write").await?;
    let id = uuid_path(&id)?;
    let a: TriageAction = json_body(body)?;
    let lead = match a.action.as_str() {
        "accept" => st.store.triage_accept(id, &t.actor(), &t.access()).await?,
        "decline" => st.store.triage_decline(id, a.reason.as_deref(), &t.actor(), &t.access()).await?,
        "link" => {
            let raw = a
                .lead_id
                .as_deref()
                .ok_or_else(|| ApiError::field("lead_id", "the existing lead is required", "нужен существующий лид"))?;
            st.store.triage_link(id, lead_ref("lead_id", raw)?, &t.actor(), &t.access()).await?.1
        }
        _ => return Err(ApiError::field("action", "use accept, decline or link", "допустимо accept, decline или link")),
    };
    Ok(axum::Json(lead))
}
