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
    match state.store.purge_sessions().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed expired sessions and old failed logins"),
        Err(e) => tracing::warn!(error = %e, "session upkeep failed"),
    }
}

/// Adds new leads to the search index (SQLite), thousands at a time, until the process
/// stops; a lead not yet indexed is found all the same, by a direct look. While submissions
/// wait for the writer it takes small batches and long pauses, so that its transactions do
/// not hold intake up.
pub fn spawn_search_index(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pacer = IndexPacer::default();
        loop {
            let active = state.store.intake().busy() || state.store.intake().active_within(Duration::from_secs(2));
            let batch = pacer.batch(active);
            let pause = match state.store.index_words_timed(batch as i64).await {
                Ok((0, _)) => Duration::from_millis(500),
                Ok((n, held)) => {
                    pacer.record(n, held);
                    if active { Duration::from_millis(50) } else { Duration::from_millis(20) }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "search indexing failed; will retry");
                    Duration::from_secs(5)
                }
            };
            tokio::time::sleep(pause).await;
        }
    })
}

/// How many leads the search indexer takes into one transaction. Intake waits for the
/// SQLite write lock while the indexer holds it, so while submissions are arriving each
/// transaction is kept to about `ACTIVE_BUDGET` of work, judged by the time a lead held the
/// lock in the batches before; when the intake is quiet it takes large batches, which FTS5 writes
/// most cheaply (a segment per commit).
#[derive(Debug)]
struct IndexPacer {
    /// Recent time per lead, in microseconds (a moving average).
    per_lead_us: f64,
}

const ACTIVE_BUDGET: Duration = Duration::from_millis(3);
const QUIET_BATCH: usize = 5_000;

impl Default for IndexPacer {
    fn default() -> Self {
        // A cautious first guess; the first batch measures the real figure.
        IndexPacer { per_lead_us: 50.0 }
    }
}

impl IndexPacer {
    fn batch(&self, active: bool) -> usize {
        if !active {
            return QUIET_BATCH;
        }
        ((ACTIVE_BUDGET.as_micros() as f64 / self.per_lead_us.max(0.1)) as usize).clamp(20, QUIET_BATCH)
    }

    fn record(&mut self, leads: usize, took: Duration) {
        let per = took.as_micros() as f64 / leads.max(1) as f64;
        self.per_lead_us = 0.7 * self.per_lead_us + 0.3 * per;
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

/// Vacuums the PostgreSQL tables that need it when autovacuum is off (see
/// `Store::vacuum_neglected`), every `every`, in whichever process holds the lease.
pub fn spawn_vacuum(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    let holder = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7());
    tokio::spawn(async move {
        if state.store.backend() != voronka_store::Backend::Postgres {
            return;
        }
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            // The lease outlasts a long vacuum, so two processes do not queue behind each other.
            let ttl = chrono::Duration::from_std(every * 10).unwrap_or(chrono::Duration::minutes(10));
            match state.store.try_lease("vacuum", &holder, ttl).await {
                Ok(true) => {
                    if let Err(e) = state.store.vacuum_neglected().await {
                        tracing::warn!(error = %e, "vacuum failed; will retry");
                    }
                    // Held for the pass only: the next tick of any process may vacuum (a
                    // second pass in a minute finds nothing past the thresholds and does nothing).
                    if let Err(e) = state.store.release_lease("vacuum", &holder).await {
                        tracing::warn!(error = %e, "releasing the vacuum lease failed");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "vacuum lease failed"),
            }
        }
    })
}

/// Handles outbox messages once: routes leads that became sales-ready and new hot leads.
/// Returns how many messages were handled.
pub async fn dispatch_once(state: &AppState, worker: &str) -> anyhow::Result<usize> {
    let items = state.store.claim_outbox(worker, 200, chrono::Duration::seconds(60)).await?;
    if items.is_empty() {
        return Ok(0);
    }
    let subs = state.store.active_subscriptions().await?;
    let created: Vec<uuid::Uuid> = items.iter().filter(|i| i.topic == "lead.created").filter_map(|i| i.aggregate_id).collect();
    // Without them (an error, a lead scored with another model) each lead is read whole.
    let temperatures = state.store.stored_temperatures(&created).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "reading stored temperatures failed; reading the leads one by one");
        Default::default()
    });
    let mut done = Vec::with_capacity(items.len());
    for item in &items {
        // One message failing is retried later on its own; the others go on.
        match handle_message(state, item, &subs, &temperatures).await {
            Ok(()) => done.push(item.id),
            Err(e) => {
                tracing::warn!(message = item.id, topic = %item.topic, error = format!("{e:#}"), "outbox message failed; will retry");
                let at = voronka_store::Ts::from(state.store.clock().now() + chrono::Duration::seconds(30));
                state.store.retry_outbox(item.id, at, &format!("{e:#}")).await?;
            }
        }
    }
    state.store.finish_outbox(&done).await?;
    Ok(items.len())
}

/// One outbox message: outbound webhook deliveries for its subscribers, then routing.
async fn handle_message(
    state: &AppState,
    item: &voronka_store::outbox::OutboxItem,
    subs: &[voronka_store::hooks::Subscription],
    temperatures: &std::collections::HashMap<uuid::Uuid, String>,
) -> anyhow::Result<()> {
    // Outbound webhooks: one delivery per subscriber, written before the message is done.
    if subs.iter().any(|s| s.wants(&item.topic)) {
        let lead = match item.aggregate_id {
            Some(id) => state.store.lead(id).await?,
            None => None,
        };
        let payload = serde_json::json!({"lead_id": item.aggregate_id, "change": item.payload, "lead": lead});
        state.store.fan_out(item, subs, &payload).await?;
    }
    // After a merge or its undo: the lead scored whole again (the merge did it at once too;
    // this one stands when that failed, and is retried like any message).
    if item.topic == "lead.rescore" {
        if let Some(id) = item.aggregate_id {
            state.store.rescore_lead(id).await?;
        }
        return Ok(());
    }
    let route = match item.topic.as_str() {
        "lead.sales_ready" => true,
        // Hot on arrival: the temperature stored when the lead was scored in its commit.
        "lead.created" => match item.aggregate_id {
            Some(id) => match temperatures.get(&id) {
                Some(t) => t == "hot",
                None => state.store.lead(id).await?.is_some_and(|l| l.temperature == "hot"),
            },
            None => false,
        },
        // Taken from the unsorted inbox: routed as a new lead would have been.
        "lead.accepted" => match item.aggregate_id {
            Some(id) => state.store.lead(id).await?.is_some_and(|l| l.temperature == "hot" || l.status == "sales_ready"),
            None => false,
        },
        _ => false,
    };
    if route && let Some(id) = item.aggregate_id {
        let outcome = state.store.route_lead(id).await?;
        tracing::debug!(lead = %id, ?outcome, "routed");
    }
    Ok(())
}

/// One pass of the timers: queued leads are offered to whoever came on duty, leads past
/// their response deadline are escalated, and tasks whose time has come are reminded.
pub async fn timers_once(state: &AppState) -> anyhow::Result<(usize, usize)> {
    let assigned = state.store.drain_queue().await?;
    let escalated = state.store.escalate_due().await?.len();
    state.store.remind_due_tasks().await?;
    Ok((assigned, escalated))
}

/// Runs the dispatcher and the timers until the process stops. Every process may run them:
/// outbox messages are claimed under a lease, and each assignment or escalation is a
/// conditional update that only one process can make.
pub fn spawn_workflow(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    let worker = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        // A pass that overran does not make the missed ticks fire at once.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            loop {
                match dispatch_once(&state, &worker).await {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "dispatch failed");
                        break;
                    }
                }
            }
            if let Err(e) = crate::webhooks::deliver_once(&state, &worker).await {
                tracing::warn!(error = format!("{e:#}"), "webhook delivery pass failed");
            }
            // Timers every 10 ticks (10 s by default).
            if n.is_multiple_of(10) {
                if let Err(e) = timers_once(&state).await {
                    tracing::warn!(error = format!("{e:#}"), "workflow timers failed");
                }
                if let Err(e) = crate::api::imports::resume_stalled(&state).await {
                    tracing::warn!(error = format!("{e:#}"), "resuming imports failed");
                }
            }
            n += 1;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_indexer_keeps_its_transactions_short_while_intake_is_active() {
        let mut p = IndexPacer::default();
        assert_eq!(p.batch(false), QUIET_BATCH);
        // 5,000 leads in 50 ms: 10 µs a lead, so 3 ms hold about 300 once the average settles.
        for _ in 0..30 {
            p.record(5_000, Duration::from_millis(50));
        }
        let b = p.batch(true);
        assert!((290..=310).contains(&b), "{b}");
        assert_eq!(p.batch(false), QUIET_BATCH);
        // A slow stretch (the lock was contended) shrinks the batch, never below 20.
        for _ in 0..30 {
            p.record(10, Duration::from_millis(100));
        }
        assert_eq!(p.batch(true), 20);
    }
}
