//! The REST API under `/api/v1`.

pub mod events;
pub mod export;
pub mod hooks;
pub mod imports;
pub mod leads;
pub mod merge;
pub mod scoring;
pub mod users;
pub mod workflow;

use crate::AppState;
use axum::Router;
use axum::routing::get;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/leads", get(leads::list).post(leads::create))
        .route("/api/v1/leads/export.csv", get(export::csv))
        .route("/api/v1/leads/export.xlsx", get(export::xlsx_export))
        .route("/api/v1/audit", get(export::audit))
        .route("/api/v1/imports", get(imports::list))
        .route("/api/v1/imports/{id}", get(imports::get_one))
        .route("/api/v1/imports/{id}/report.csv", get(imports::report))
        .route("/api/v1/imports/{id}/undo", axum::routing::post(imports::undo))
        .route("/api/v1/leads/{id}", get(leads::get_one).patch(workflow::patch))
        .route("/api/v1/leads/{id}/status", axum::routing::post(workflow::status))
        .route("/api/v1/leads/{id}/activities", axum::routing::post(workflow::activity))
        .route("/api/v1/leads/{id}/tasks", get(workflow::lead_tasks).post(workflow::create_task))
        .route("/api/v1/leads/{id}/assign", axum::routing::post(workflow::assign))
        .route("/api/v1/leads/{id}/convert", axum::routing::post(workflow::convert))
        .route("/api/v1/leads/{id}/card", get(workflow::card))
        .route("/api/v1/tasks", get(workflow::tasks))
        .route("/api/v1/tasks/{id}/complete", axum::routing::post(workflow::complete_task))
        .route("/api/v1/queue", get(workflow::queue))
        .route("/api/v1/notifications", get(workflow::notifications))
        .route("/api/v1/contacts/{id}", get(workflow::contact))
        .route("/api/v1/contacts/{id}/timeline", get(workflow::contact_timeline))
        .route("/api/v1/settings/{key}", get(workflow::get_setting).put(workflow::put_setting))
        .route("/api/v1/reasons", get(workflow::reasons))
        .route("/api/v1/reasons/{kind}", axum::routing::put(workflow::put_reasons))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route("/api/v1/users/{id}", get(users::get_one).patch(users::update))
        .route("/api/v1/users/{id}/tokens", axum::routing::post(users::create_token))
        .route("/api/v1/teams", get(users::teams).post(users::create_team))
        .route("/api/v1/leads/{id}/timeline", get(leads::timeline))
        .route("/api/v1/leads/{id}/score", get(scoring::lead_score))
        .route("/api/v1/events", axum::routing::post(events::submit).options(events::preflight))
        .route("/api/v1/scoring/model", get(scoring::get_model).put(scoring::put_model))
        .route("/api/v1/leads/{id}/merge", axum::routing::post(merge::merge))
        .route("/api/v1/leads/{id}/merges", get(merge::merges))
        .route("/api/v1/merges/{id}/undo", axum::routing::post(merge::unmerge))
        .route("/api/v1/triage", get(merge::triage_list))
        .route("/api/v1/leads/{id}/triage", axum::routing::post(merge::triage))
        .route("/api/v1/channels", get(hooks::channels))
        .route("/api/v1/channels/{code}", axum::routing::patch(hooks::patch_channel))
        .route("/api/v1/hooks", get(hooks::list_endpoints).post(hooks::create_endpoint))
        .route("/api/v1/hooks/{id}", axum::routing::patch(hooks::patch_endpoint))
        .route("/api/v1/webhooks", get(hooks::list_subscriptions).post(hooks::create_subscription))
        .route("/api/v1/webhooks/deliveries", get(hooks::deliveries))
        .route("/api/v1/webhooks/deliveries/{id}/retry", axum::routing::post(hooks::retry_delivery))
        .route("/api/v1/webhooks/{id}", axum::routing::delete(hooks::delete_subscription))
        .route("/api/v1/analytics/responses", get(hooks::response_stats))
        .route("/api/v1/analytics/completeness", get(workflow::completeness_by_manager))
        .route("/api/v1/openapi.json", get(crate::openapi::document))
}

/// Routes that take files, with the import size limit instead of the API's.
pub fn upload_routes() -> Router<AppState> {
    Router::new().route("/api/v1/imports", axum::routing::post(imports::create))
}

/// A uuid from the path; anything else is a resource that does not exist.
pub fn uuid_path(s: &str) -> Result<uuid::Uuid, crate::ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| crate::ApiError::NotFound)
}
