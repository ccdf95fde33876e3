//! The OpenAPI document, generated from the handlers' annotations and the types they use.

use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Voronka API", description = "Lead management: intake, leads, timeline. Errors are JSON: {\"error\":{\"code\",\"message\",\"fields\"}}."),
    paths(
        crate::api::leads::create,
        crate::api::leads::get_one,
        crate::api::leads::list,
        crate::api::export::csv,
        crate::api::export::xlsx_export,
        crate::api::leads::timeline,
        crate::api::scoring::lead_score,
        crate::api::scoring::get_model,
        crate::api::scoring::put_model,
        crate::api::events::submit,
        crate::api::workflow::status,
        crate::api::workflow::patch,
        crate::api::workflow::activity,
        crate::api::workflow::create_task,
        crate::api::workflow::lead_tasks,
        crate::api::workflow::tasks,
        crate::api::workflow::complete_task,
        crate::api::workflow::assign,
        crate::api::workflow::queue,
        crate::api::workflow::notifications,
        crate::api::workflow::convert,
        crate::api::workflow::contact,
        crate::api::workflow::contact_timeline,
        crate::api::workflow::completeness_by_manager,
        crate::api::workflow::card,
        crate::api::workflow::get_setting,
        crate::api::workflow::put_setting,
        crate::api::workflow::reasons,
        crate::api::workflow::put_reasons,
        crate::api::users::create,
        crate::api::users::list,
        crate::api::users::get_one,
        crate::api::users::update,
        crate::api::users::create_token,
        crate::api::users::create_team,
        crate::api::users::teams,
        crate::api::merge::merge,
        crate::api::merge::merges,
        crate::api::merge::unmerge,
        crate::api::merge::triage_list,
        crate::api::merge::triage,
        crate::api::hooks::create_endpoint,
        crate::api::hooks::list_endpoints,
        crate::api::hooks::patch_endpoint,
        crate::api::hooks::create_subscription,
        crate::api::hooks::list_subscriptions,
        crate::api::hooks::delete_subscription,
        crate::api::hooks::deliveries,
        crate::api::hooks::retry_delivery,
        crate::api::hooks::channels,
        crate::api::hooks::patch_channel,
        crate::api::hooks::response_stats,
        crate::ops::healthz,
        crate::ops::readyz,
        crate::ops::prometheus,
    ),
    components(schemas(
        crate::api::leads::LeadSubmission,
        crate::api::leads::ConsentSubmission,
        voronka_store::Lead,
        voronka_store::LeadPage,
        voronka_store::TimelinePage,
        voronka_store::TimelineItem,
        voronka_store::scoring::ScoreView,
        voronka_store::scoring::Explained,
    )),
    modifiers(&BearerAuth),
    tags((name = "leads", description = "Lead intake and reading"), (name = "events", description = "Tracker events"), (name = "scoring", description = "The points model and scores"), (name = "workflow", description = "States, tasks, activities, routing, conversion"), (name = "users", description = "Users, teams, tokens"), (name = "webhooks", description = "Inbound endpoints (POST /hooks/{hook_key}, signed), outbound subscriptions and deliveries, channels that need triage"), (name = "settings", description = "Workflow settings"), (name = "operations", description = "Health and metrics"))
)]
pub struct ApiDoc;

pub async fn document() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}
