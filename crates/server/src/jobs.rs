//! Background upkeep that every server process runs; each step is idempotent, so several
//! processes on one database may run it at once.

use crate::AppState;
use std::time::Duration;

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: chrono::Duration = chrono::Duration::hours(24);

/// Runs upkeep every `every` until the process stops.
pub fn spawn_upkeep(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            run_upkeep_once(&state).await;
        }
    })
}

pub async fn run_upkeep_once(state: &AppState) {
    let before = voronka_store::Ts::from(state.store.clock().now() - IDEMPOTENCY_TTL);
    match state.store.purge_idempotency_keys(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "forgot expired idempotency keys"),
        Err(e) => tracing::warn!(error = %e, "idempotency key upkeep failed"),
    }
}

/// Refreshes stored scores every `every` (decay, the priority window, leads scored with an
/// older model), in whichever process holds the lease; also once at start.
pub fn spawn_score_refresh(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    let holder = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let ttl = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::minutes(10));
            match state.store.try_lease("score_refresh", &holder, ttl).await {
                Ok(true) => match state.store.refresh_scores().await {
                    Ok(r) => tracing::info!(rescored = r.rescored, changed = r.changed, millis = r.millis, "scores refreshed"),
                    Err(e) => tracing::warn!(error = %e, "score refresh failed"),
                },
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "score refresh lease failed"),
            }
        }
    })
}
