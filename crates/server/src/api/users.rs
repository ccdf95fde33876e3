//! Users and teams (admins; a head of sales sees the team), and per-user API tokens.

use crate::AppState;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use voronka_store::TokenInfo;
use voronka_store::users::{Team, User, UserSpec};

/// Allows a system token with the admin scope, or a user token whose role is one of `roles`.
pub fn require_role(t: &TokenInfo, roles: &[&str]) -> Result<(), ApiError> {
    match &t.user {
        None if t.allows("admin") => Ok(()),
        Some(u) if roles.contains(&u.role.as_str()) => Ok(()),
        _ => Err(ApiError::Forbidden("admin")),
    }
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    serde_json::from_value(v).map_err(|e| {
        let msg = e.to_string();
        ApiError::Fields {
            code: "invalid_fields", fields: vec![("body".into(), msg.clone(), format!("ошибка в теле запроса: {msg}"))]
        }
    })
}

pub fn check(spec: &UserSpec, create: bool) -> Result<(), ApiError> {
    let problems = spec.check(create);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Fields {
            code: "invalid_fields",
            fields: problems.into_iter().map(|(f, en, ru)| (f, en.to_string(), ru.to_string())).collect(),
        })
    }
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = UserSpec, responses((status = 201, body = User), (status = 422)), security(("bearer" = ["admin"])))]
pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, &["admin"])?;
    let spec: UserSpec = json_body(body)?;
    check(&spec, true)?;
    Ok((StatusCode::CREATED, axum::Json(st.store.create_user(&spec).await?)))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", responses((status = 200, body = Vec<User>)), security(("bearer" = ["leads:read"])))]
pub async fn list(State(st): State<AppState>, headers: HeaderMap) -> Result<axum::Json<Vec<User>>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    require_role(&t, &["admin", "head_of_sales"])?;
    let team = match &t.user {
        Some(u) if u.role == "head_of_sales" => Some(u.team_id.unwrap_or(Uuid::nil())),
        _ => None,
    };
    Ok(axum::Json(st.store.users(team).await?))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)), responses((status = 200, body = User), (status = 404)), security(("bearer" = ["leads:read"])))]
pub async fn get_one(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<axum::Json<User>, ApiError> {
    let id = crate::api::uuid_path(&id)?;
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let user = st.store.user(id).await?.ok_or(ApiError::NotFound)?;
    let allowed = match &t.user {
        None => true,
        Some(u) if u.role == "admin" => true,
        Some(u) if u.role == "head_of_sales" => user.team_id.is_some() && user.team_id == u.team_id || user.id == u.id,
        Some(u) => u.id == user.id,
    };
    if allowed { Ok(axum::Json(user)) } else { Err(ApiError::NotFound) }
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UserSpec, params(("id" = Uuid, Path)), responses((status = 200, body = User), (status = 422)), security(("bearer" = ["admin"])))]
pub async fn update(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<User>, ApiError> {
    let id = crate::api::uuid_path(&id)?;
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let spec: UserSpec = json_body(body)?;
    // A user may change own schedule, vacations and language; the rest is for admins.
    let own_only = spec.email.is_none()
        && spec.role.is_none()
        && spec.team_id.is_none()
        && spec.level.is_none()
        && spec.capacity.is_none()
        && spec.active.is_none();
    match &t.user {
        Some(u) if u.id == id && own_only => {}
        _ => require_role(&t, &["admin"])?,
    }
    check(&spec, false)?;
    Ok(axum::Json(st.store.update_user(id, &spec).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/users/{id}/tokens", tag = "users", request_body = TokenSpec, params(("id" = Uuid, Path)),
    responses((status = 201, description = "{\"token\": \"vk_…\"}, shown once")), security(("bearer" = ["admin"])))]
pub async fn create_token(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = crate::api::uuid_path(&id)?;
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    match &t.user {
        Some(u) if u.id == id => {}
        _ => require_role(&t, &["admin"])?,
    }
    let spec: TokenSpec = json_body(body)?;
    st.store.user(id).await?.ok_or(ApiError::NotFound)?;
    // A user's token never has more than the user's role allows: admin scope only for admins.
    let user = st.store.user(id).await?.ok_or(ApiError::NotFound)?;
    if spec.scopes.iter().any(|s| s == "admin") && user.role != "admin" {
        return Err(ApiError::field("scopes", "only an admin's token may have the admin scope", "право admin — только у администратора"));
    }
    let (_, token) = st.store.create_user_token(id, &spec.name, &spec.scopes).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"token": token}))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    name: String,
}

#[utoipa::path(post, path = "/api/v1/teams", tag = "users", request_body = TeamSpec, responses((status = 201, body = Team)), security(("bearer" = ["admin"])))]
pub async fn create_team(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "admin").await?;
    require_role(&t, &["admin"])?;
    let spec: TeamSpec = json_body(body)?;
    Ok((StatusCode::CREATED, axum::Json(st.store.create_team(&spec.name).await?)))
}

#[utoipa::path(get, path = "/api/v1/teams", tag = "users", responses((status = 200, body = Vec<Team>)), security(("bearer" = ["leads:read"])))]
pub async fn teams(State(st): State<AppState>, headers: HeaderMap) -> Result<axum::Json<Vec<Team>>, ApiError> {
    st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    Ok(axum::Json(st.store.teams().await?))
}
