//! The points model (`GET`/`PUT /api/v1/scoring/model`) and a lead's score with its
//! explanation (`GET /api/v1/leads/{id}/score`).

use crate::AppState;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;
use voronka_store::scoring::ScoreView;

#[utoipa::path(get, path = "/api/v1/scoring/model", tag = "scoring",
    responses((status = 200, description = "The active model with its version")), security(("bearer" = ["admin"])))]
pub async fn get_model(State(st): State<AppState>, headers: HeaderMap) -> Result<axum::Json<Value>, ApiError> {
    st.tokens.authorize(&st.store, &headers, "admin").await?;
    let (version, model) = st.store.refresh_model().await?;
    let mut v = model.to_json();
    v["version"] = json!(version);
    Ok(axum::Json(v))
}

#[utoipa::path(put, path = "/api/v1/scoring/model", tag = "scoring", request_body(content = Object, description = "The model, as GET returns it"),
    responses((status = 200, description = "Saved; every lead re-scored: {\"version\",\"rescored\",\"changed\",\"millis\",\"model\"}"),
        (status = 422, description = "invalid_model: fields name each rule or setting and its problem")),
    security(("bearer" = ["admin"])))]
pub async fn put_model(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    st.tokens.authorize(&st.store, &headers, "admin").await?;
    let body = body?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    match st.store.put_model(&v).await? {
        Err(problems) => Err(ApiError::InvalidModel(problems)),
        Ok((version, report)) => {
            let (_, model) = st.store.active_model();
            Ok(axum::Json(json!({
                "version": version, "rescored": report.rescored, "changed": report.changed, "millis": report.millis,
                "model": model.to_json(),
            })))
        }
    }
}

#[utoipa::path(get, path = "/api/v1/leads/{id}/score", tag = "scoring", params(("id" = Uuid, Path)),
    responses((status = 200, body = ScoreView), (status = 404, description = "No such lead")), security(("bearer" = ["leads:read"])))]
pub async fn lead_score(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<axum::Json<ScoreView>, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    if !st.store.can_see(id, &t.access()).await? {
        return Err(ApiError::NotFound);
    }
    st.store.score(id).await?.map(axum::Json).ok_or(ApiError::NotFound)
}
