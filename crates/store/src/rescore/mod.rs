//! Set-based re-scoring: after a model change every lead's ledger is rebuilt from its packed
//! events (and, when the profile rules changed, its profile), chunk by chunk in lead order,
//! while intake goes on between the chunks. Only rows whose result changed are written.
//! The same pass without a model change refreshes the stored score and priority that lists
//! sort by, as points decay and leave the priority window.

use crate::db::Db;
use crate::scoring::score_now;
use crate::ts::Ts;
use crate::{Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;
use voronka_domain::scoring::{Entry, Micros, Model, Profile, ScoredEvent, decode_inputs, decode_ledger, encode_ledger};

mod pg;

const CHUNK: usize = 20_000;

/// The page cache (negative: KiB) while a bulk re-score builds the score table's indexes
/// on SQLite: it sizes the sorter's runs (see `sqlite_pass`).
pub const SORT_CACHE_KIB: i64 = -4_096;

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct RescoreReport {
    /// Leads scored with the model.
    pub rescored: u64,
    /// Of those, leads whose score or ledger changed (and were written).
    pub changed: u64,
    pub millis: u64,
}

/// What a re-scoring pass does with a lead.
#[derive(Clone)]
pub(crate) struct Pass {
    pub model: Arc<Model>,
    pub version: i64,
    /// Rebuild the behaviour part from the packed events (false: keep it, only re-decay).
    pub behaviour: bool,
    /// Re-run the profile rules on the lead's fields (false: keep the profile entries,
    /// matched to the new model's rules by id).
    pub profile: bool,
    /// The model (and its version) the stored ledgers were made with, to carry entries
    /// over by rule id.
    pub previous: Option<(i64, Arc<Model>)>,
    /// Event targets by id: (mask of the model's event rules, is a page view).
    pub masks: Arc<Vec<(u64, bool)>>,
    /// Rule index in `previous` → rule index in `model` (same id), if any.
    pub remap: Arc<Vec<Option<u16>>>,
    pub now: Micros,
}

/// One stored lead as a pass reads it.
pub(crate) struct Input {
    pub lead_id: Uuid,
    pub ledger: Vec<u8>,
    pub version: i64,
    pub score: f64,
    pub priority: f64,
    pub events: Option<Vec<u8>>,
    pub profile: Option<Profile>,
    /// When the lead was created, read with its fields: a lead rebuilt whole dates its
    /// profile entries then, as live scoring does.
    pub created: Option<Micros>,
}

/// A changed score row.
pub(crate) struct Output {
    pub lead_id: Uuid,
    pub ledger: Vec<u8>,
    pub score: f64,
    pub priority: f64,
    pub profile: f64,
    pub temperature: &'static str,
    pub grade: &'static str,
}

impl Pass {
    /// A pass that rebuilds one lead whole with `model`.
    pub(crate) async fn single(store: &Store, model: Arc<Model>, version: i64) -> Result<Pass, StoreError> {
        let masks = Arc::new(store.target_masks(&model).await?);
        Ok(Pass {
            model,
            version,
            behaviour: true,
            profile: true,
            previous: None,
            masks,
            remap: Arc::new(Vec::new()),
            now: store.now().micros(),
        })
    }

    /// Whether entries of a ledger made with `version` can be carried into this pass.
    fn can_carry(&self, version: i64) -> bool {
        version == self.version || self.previous.as_ref().is_some_and(|p| p.0 == version)
    }

    /// The pass that rebuilds everything from the lead's events and profile.
    fn full(&self) -> Pass {
        Pass { behaviour: true, profile: true, previous: None, ..self.clone() }
    }

    /// The lead's new score row, or None when nothing changed.
    pub(crate) fn run(&self, i: &Input) -> Option<Output> {
        let old = decode_ledger(&i.ledger);
        let mut ledger: Vec<Entry> = Vec::with_capacity(old.len());
        // Profile entries: re-run, or carried over by rule id.
        match (&i.profile, self.profile) {
            (Some(p), true) => {
                // As when a lead's fields change: an entry for a rule that held before keeps
                // its date (a profile change is not points earned now, for the priority). A
                // lead whose ledger cannot be carried is dated at its creation, as live
                // scoring dates such a lead.
                let before: HashMap<u16, Micros> = self.carry(&old, i.version, true).iter().map(|e| (e.rule, e.at)).collect();
                let at = if self.can_carry(i.version) { self.now } else { i.created.unwrap_or(self.now) };
                ledger.extend(self.model.profile_entries(p, at).into_iter().map(|mut e| {
                    if let Some(at) = before.get(&e.rule) {
                        e.at = *at;
                    }
                    e
                }));
            }
            _ => ledger.extend(self.carry(&old, i.version, true)),
        }
        if self.behaviour {
            let scored: Vec<ScoredEvent> = i
                .events
                .as_deref()
                .map(|b| {
                    decode_inputs(b)
                        .map(|(at, t)| {
                            let (mask, page_view) = self.masks.get(t as usize).copied().unwrap_or((0, false));
                            ScoredEvent { at, mask, page_view }
                        })
                        .collect()
                })
                .unwrap_or_default();
            ledger.extend(self.model.behaviour_entries(&scored));
        } else {
            ledger.extend(self.carry(&old, i.version, false));
        }
        let s = score_now(&self.model, &ledger, self.now);
        let bytes = encode_ledger(&ledger);
        // A ledger stored in an older format is the same when it holds the same entries: it
        // is written anew when its lead's score changes, not by every pass after an upgrade.
        let same_ledger = bytes == i.ledger || (i.ledger.first() != bytes.first() && old == ledger);
        let same = same_ledger && i.version == self.version && (s.score - i.score).abs() < 0.05 && (s.priority - i.priority).abs() < 0.05;
        (!same).then(|| Output {
            lead_id: i.lead_id,
            ledger: bytes,
            score: s.score,
            priority: s.priority,
            profile: s.profile,
            temperature: s.temperature.as_str(),
            grade: s.grade.as_str(),
        })
    }

    /// Entries of one part (profile or behaviour) of an old ledger, renumbered for this
    /// model by rule id and given their rule's points in it; entries of rules that no longer
    /// exist are dropped.
    fn carry(&self, old: &[Entry], old_version: i64, profile: bool) -> Vec<Entry> {
        let part = old.iter().filter(|e| e.profile == profile);
        if old_version == self.version {
            return part.copied().collect();
        }
        if self.previous.is_none() {
            return Vec::new();
        }
        part.filter_map(|e| {
            let rule = self.remap.get(e.rule as usize).copied().flatten()?;
            Some(Entry { rule, points: self.model.rule_points(rule)?, ..*e })
        })
        .collect()
    }
}

/// Computes a chunk on all cores.
pub(crate) fn run_chunk(pass: &Pass, inputs: &[Input]) -> Vec<Output> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    if inputs.len() < 2_000 || threads == 1 {
        return inputs.iter().filter_map(|i| pass.run(i)).collect();
    }
    let per = inputs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> =
            inputs.chunks(per).map(|c| s.spawn(move || c.iter().filter_map(|i| pass.run(i)).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

impl Store {
    /// Validates and saves a new model, then re-scores every lead with it.
    pub async fn put_model(&self, json: &Value) -> Result<Result<(i64, RescoreReport), voronka_domain::scoring::ModelErrors>, StoreError> {
        let model = match Model::from_json(json) {
            Ok(m) => Arc::new(m),
            Err(e) => return Ok(Err(e)),
        };
        let (old_version, old) = self.refresh_model().await?;
        let now = self.now();
        let stored = model.to_json();
        let version: i64 = crate::db::with_write!(&self.db, p => {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO scoring_models (version, model, created_at) SELECT COALESCE(MAX(version), 0) + 1, $1, $2 FROM scoring_models RETURNING version",
            )
            .bind(&stored).bind(now).fetch_one(p).await?
        });
        self.models.insert(version, model.clone(), true);
        // A part whose rules changed only their points keeps its entries, with the new
        // points: the usual model change (a rule's weight) reads no events and no lead fields.
        let pass_profile = !model.same_rules_but_points(&old, true);
        let pass_behaviour = !model.same_rules_but_points(&old, false);
        let report = self.rescore(version, model, Some((old_version, old)), pass_profile, pass_behaviour).await?;
        tracing::info!(
            old_version,
            version,
            rescored = report.rescored,
            changed = report.changed,
            millis = report.millis,
            "scoring model replaced"
        );
        Ok(Ok((version, report)))
    }

    /// Refreshes the stored score and priority of every lead for the current time (decay,
    /// the priority window); leads made with an older model are re-scored fully.
    pub async fn refresh_scores(&self) -> Result<RescoreReport, StoreError> {
        let (version, model) = self.refresh_model().await?;
        self.rescore(version, model, None, false, false).await
    }

    async fn rescore(
        &self,
        version: i64,
        model: Arc<Model>,
        previous: Option<(i64, Arc<Model>)>,
        profile: bool,
        behaviour: bool,
    ) -> Result<RescoreReport, StoreError> {
        let started = Instant::now();
        let masks = Arc::new(self.target_masks(&model).await?);
        let remap = Arc::new(match &previous {
            Some((_, prev)) => {
                prev.spec.rules.iter().map(|r| model.spec.rules.iter().position(|n| n.id == r.id).map(|i| i as u16)).collect()
            }
            None => Vec::new(),
        });
        let pass = Pass { model, version, behaviour, profile, previous, masks, remap, now: self.now().micros() };
        let mut report = match &self.db {
            Db::Sqlite { .. } => {
                let path = self.sqlite_file()?;
                let (at, bulk_rows) = (self.now(), self.rescore_bulk_rows);
                tokio::task::spawn_blocking(move || sqlite_pass(&path, &pass, at, bulk_rows))
                    .await
                    .map_err(|e| StoreError::Other(anyhow::anyhow!("re-score stopped: {e}")))?
                    .map_err(|e| StoreError::Other(anyhow::anyhow!("re-score failed: {e}")))?
            }
            // On a task of its own: a request that goes away (the client, a proxy's timeout)
            // does not stop the pass between its steps.
            Db::Pg(pool) => {
                let (store, pool) = (self.clone(), pool.clone());
                tokio::spawn(async move { store.pg_pass(&pool, &pass).await })
                    .await
                    .map_err(|e| StoreError::Other(anyhow::anyhow!("re-score stopped: {e}")))??
            }
        };
        report.millis = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Scores a chunk, off the runtime's threads; leads whose ledger was made with a model
    /// this pass cannot carry entries from are rebuilt whole (profile fields read for those
    /// that do not have them yet; their events were read with them).
    pub(crate) async fn compute(&self, pass: &Pass, inputs: Vec<Input>) -> Result<Vec<Output>, StoreError> {
        let (fresh, mut stale): (Vec<Input>, Vec<Input>) = inputs.into_iter().partition(|i| pass.can_carry(i.version));
        let missing: Vec<Uuid> = stale.iter().filter(|i| i.profile.is_none()).map(|i| i.lead_id).collect();
        if !missing.is_empty() {
            let mut profiles = self.rescore_profiles(&missing).await?;
            for i in stale.iter_mut().filter(|i| i.profile.is_none()) {
                if let Some((profile, created)) = profiles.remove(&i.lead_id) {
                    i.profile = Some(profile);
                    i.created = Some(created);
                }
            }
        }
        let pass = pass.clone();
        tokio::task::spawn_blocking(move || {
            let mut outputs = run_chunk(&pass, &fresh);
            if !stale.is_empty() {
                outputs.extend(run_chunk(&pass.full(), &stale));
            }
            outputs
        })
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("re-score stopped: {e}")))
    }

    /// Every event target's mask under `model`.
    async fn target_masks(&self, model: &Model) -> Result<Vec<(u64, bool)>, StoreError> {
        let rows: Vec<(i64, String, String, String)> = crate::db::with_read!(&self.db, p => {
            sqlx::query_as("SELECT id, kind, path, name FROM event_targets").fetch_all(p).await?
        });
        let mut masks = vec![(0, false); rows.iter().map(|r| r.0 as usize + 1).max().unwrap_or(0)];
        for (id, kind, path, name) in rows {
            masks[id as usize] = (model.target_mask(&kind, &path, &name), kind == "page_view");
        }
        Ok(masks)
    }

    async fn rescore_profiles(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, (Profile, Micros)>, StoreError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {} FROM {} WHERE l.id IN ({})",
                crate::leads::LEAD_COLUMNS,
                crate::leads::LEAD_FROM,
                placeholders(chunk.len())
            );
            let rows: Vec<crate::leads::LeadRow> = crate::db::with_read!(&self.db, p => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                q.fetch_all(p).await?
            });
            for r in rows {
                out.insert(r.id, (crate::intake::profile_of_row(&r), r.created_at.micros()));
            }
        }
        Ok(out)
    }

    pub(crate) fn sqlite_file(&self) -> Result<std::path::PathBuf, StoreError> {
        self.sqlite_path.clone().ok_or_else(|| StoreError::Other(anyhow::anyhow!("no SQLite file")))
    }
}

fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The lead's text fields the profile rules may read, in the order a pass reads them (see
/// `profile_columns`).
pub(crate) const PROFILE_NAMES: [&str; 20] = [
    "name",
    "phone",
    "email",
    "messenger",
    "company",
    "position",
    "city",
    "interest",
    "message",
    "channel",
    "campaign",
    "source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "referrer",
    "landing_page",
    "tracking_number",
];

/// The columns a pass reads for the profile rules, in the order of `PROFILE_NAMES`, then
/// the budget and the custom fields: those `model`'s profile and geography rules read, NULL
/// (or no custom fields) for the rest. On SQLite a profile change spent two thirds of its
/// reading on the leads' 22 columns, most of them text no starter rule reads (the message,
/// the UTM tags).
pub(crate) fn profile_columns(model: &Model, pg: bool) -> String {
    let read = model.profile_fields();
    let mut cols: Vec<&str> = PROFILE_NAMES
        .iter()
        .map(|n| {
            if read.contains(n) {
                *n
            } else if pg {
                "NULL::text"
            } else {
                "NULL"
            }
        })
        .collect();
    cols.push(if read.contains("budget") {
        "budget"
    } else if pg {
        "NULL::float8"
    } else {
        "NULL"
    });
    cols.push(if read.iter().any(|f| f.starts_with("fields.")) {
        "fields"
    } else if pg {
        "'{}'::jsonb"
    } else {
        "'{}'"
    });
    cols.join(", ")
}

const READ_SQL: &str = "SELECT s.lead_id, s.ledger, s.model_version, s.score, s.priority, i.events \
     FROM lead_scores s LEFT JOIN lead_inputs i ON i.lead_id = s.lead_id";

/// The read of a pass that keeps the behaviour entries (a refresh, a profile change): the
/// packed events are read only for the few leads whose ledger cannot be carried over. At
/// 1 M leads on PostgreSQL the events were 70 % of a refresh's reading.
const READ_SQL_NO_EVENTS: &str = "SELECT s.lead_id, s.ledger, s.model_version, s.score, s.priority, NULL AS events FROM lead_scores s";

pub(crate) fn read_sql(pass: &Pass) -> &'static str {
    if pass.behaviour { READ_SQL } else { READ_SQL_NO_EVENTS }
}

/// The whole pass on SQLite, on one thread, in two phases. First every lead is read and
/// scored, chunk by chunk in lead order, with no write lock held (intake goes on). Then the
/// changed rows are written in lead order: a few as short transactions of `CHUNK` rows, so
/// intake commits between them; many in one transaction that drops the score table's
/// indexes, updates the rows and builds the indexes again by sorting. Updating a row moves
/// its entries in the priority and score indexes to random places, and every chunk's commit
/// wrote most index pages to the WAL again; a build writes each page once. Readers see the
/// old rows and indexes until the commit; intake waits for that one transaction.
fn sqlite_pass(path: &std::path::Path, pass: &Pass, at: Ts, bulk_rows: usize) -> rusqlite::Result<RescoreReport> {
    use rusqlite::{Connection, OpenFlags};
    let open = |flags| -> rusqlite::Result<Connection> {
        let c = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        c.busy_handler(Some(crate::turns::long_wait))?;
        // The readers go through the file once, in order: a small cache of their own. A
        // model change maps the file into memory (reads 2–3 times faster; the mapped pages
        // are the kernel's page cache, shown as mapped-file RSS); the periodic refresh,
        // which runs beside the intake all day, reads through the page cache.
        c.pragma_update(None, "cache_size", -16_384)?;
        if pass.behaviour {
            c.pragma_update(None, "mmap_size", 1i64 << 32)?;
        }
        Ok(c)
    };
    // Phase one on every core: the lead order cut into as many ranges, each read and scored
    // by its own thread and connection.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    let mut bounds: Vec<Vec<u8>> = vec![Vec::new()];
    {
        let c = open(OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let count: i64 = c.query_row("SELECT COUNT(*) FROM lead_scores", [], |r| r.get(0))?;
        let ranges = if count < 2 * CHUNK as i64 { 1 } else { threads as i64 };
        for k in 1..ranges {
            let cut: Option<Vec<u8>> = c
                .query_row("SELECT lead_id FROM lead_scores ORDER BY lead_id LIMIT 1 OFFSET ?1", [count * k / ranges - 1], |r| r.get(0))
                .ok();
            bounds.extend(cut);
        }
    }
    // Past every 16-byte id.
    bounds.push(vec![0xFF; 17]);
    let parts: Vec<rusqlite::Result<RangeScored>> = std::thread::scope(|s| {
        let handles: Vec<_> = bounds
            .windows(2)
            .map(|w| {
                let (after, until) = (w[0].clone(), w[1].clone());
                let open = &open;
                s.spawn(move || sqlite_score_range(open(OpenFlags::SQLITE_OPEN_READ_ONLY)?, pass, after, until))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(rusqlite::Error::InvalidParameterName("a re-score thread panicked".into()))))
            .collect()
    });
    let mut report = RescoreReport::default();
    let (mut t_read, mut t_compute) = (0u128, 0u128);
    let mut outputs: Vec<Output> = Vec::new();
    for part in parts {
        let part = part?;
        report.rescored += part.rescored;
        t_read += part.t_read;
        t_compute += part.t_compute;
        if outputs.is_empty() {
            outputs = part.outputs;
        } else {
            outputs.extend(part.outputs);
        }
    }
    report.changed = outputs.len() as u64;
    let t = Instant::now();
    let mut writer = open(OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    writer.pragma_update(None, "synchronous", "FULL")?;
    // The bulk write's pages stay in memory until its commit.
    writer.pragma_update(None, "cache_size", -262_144)?;
    // The checkpoint thread copies the WAL back; this pass never waits for it.
    writer.pragma_update(None, "wal_autocheckpoint", 0)?;
    writer.pragma_update(None, "journal_size_limit", crate::intake::WAL_SIZE_LIMIT)?;
    // Index builds sort in temporary files (in the page cache, deleted when closed), on
    // every core: SQLite's sorter merges file-backed runs on helper threads, and with its
    // runs in memory (`temp_store=MEMORY`) building the two list indexes of 1 M score rows
    // took 3.6 s against 2.3 s (measured with the sqlite3 shell on a copy of the table).
    writer.pragma_update(None, "temp_store", "FILE")?;
    writer.pragma_update(None, "threads", threads as i64)?;
    let bulk = outputs.len() >= bulk_rows && outputs.len() as u64 * 10 >= report.rescored;
    for part in outputs.chunks(if bulk { outputs.len().max(1) } else { CHUNK }) {
        let tx = writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let indexes: Vec<(String, String)> = if bulk {
            let found = tx
                .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'lead_scores' AND sql IS NOT NULL")?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (name, _) in &found {
                tx.execute_batch(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))?;
            }
            found
        } else {
            Vec::new()
        };
        let t_drop = t.elapsed().as_micros();
        {
            // A lead scored live since the pass began (with this model) keeps its row.
            let mut stmt = tx.prepare_cached(
                "UPDATE lead_scores SET score = ?1, priority = ?2, profile = ?3, temperature = ?4, grade = ?5, ledger = ?6, \
                 model_version = ?7, scored_at = ?8 WHERE lead_id = ?9 AND model_version <= ?7 AND scored_at <= ?8",
            )?;
            for o in part {
                stmt.execute(rusqlite::params![
                    o.score,
                    o.priority,
                    o.profile,
                    o.temperature,
                    o.grade,
                    o.ledger,
                    pass.version,
                    at,
                    o.lead_id
                ])?;
            }
        }
        let t_update = t.elapsed().as_micros();
        if !indexes.is_empty() {
            // SQLite's sorter hands a run to a helper thread each time its buffer fills, and
            // the buffer is as large as the page cache: with 256 MiB every index was one run,
            // sorted on one core after the scan. With a small cache the runs are sorted on
            // the other core during the scan (the updated pages still in the cache go to the
            // WAL earlier instead of at the commit): the four builds and the commit of 1 M
            // rows took 3.5 s against 6.7 s (sqlite3 shell, a copy of a `bench seed` table).
            tx.pragma_update(None, "cache_size", SORT_CACHE_KIB)?;
        }
        for (_, sql) in &indexes {
            tx.execute_batch(sql)?;
        }
        let t_index = t.elapsed().as_micros();
        tx.commit()?;
        tracing::debug!(t_drop, t_update, t_index, t_commit = t.elapsed().as_micros(), "re-score write (µs since the write began)");
    }
    let t_write = t.elapsed().as_micros();
    tracing::debug!(t_read, t_compute, t_write, bulk, "re-score phases (µs)");
    Ok(report)
}

/// What one thread of phase one found.
struct RangeScored {
    rescored: u64,
    outputs: Vec<Output>,
    t_read: u128,
    t_compute: u128,
}

/// Reads and scores the leads with ids in (`after`, `until`], chunk by chunk in lead order.
/// A pass that re-runs the profile rules reads the leads' fields alongside, in the same order.
fn sqlite_score_range(c: rusqlite::Connection, pass: &Pass, mut after: Vec<u8>, until: Vec<u8>) -> rusqlite::Result<RangeScored> {
    use rusqlite::OptionalExtension;
    let mut read = c.prepare(&format!("{} WHERE s.lead_id > ?1 AND s.lead_id <= ?2 ORDER BY s.lead_id LIMIT {CHUNK}", read_sql(pass)))?;
    let mut events_of = c.prepare("SELECT events FROM lead_inputs WHERE lead_id = ?1")?;
    let columns = profile_columns(&pass.model, false);
    let mut profiles = c.prepare(&format!("SELECT {columns}, id, created_at FROM leads WHERE id > ?1 AND id <= ?2 ORDER BY id"))?;
    let mut profile_of = c.prepare(&format!("SELECT {columns}, id, created_at FROM leads WHERE id = ?1"))?;
    let mut span = c.prepare("SELECT min(rowid), max(rowid) FROM leads WHERE id > ?1 AND id <= ?2")?;
    let mut by_rowid = c.prepare(&format!("SELECT {columns}, id, created_at FROM leads WHERE rowid BETWEEN ?1 AND ?2"))?;
    let full = pass.full();
    let mut out = RangeScored { rescored: 0, outputs: Vec::new(), t_read: 0, t_compute: 0 };
    loop {
        let t = Instant::now();
        let mut inputs: Vec<Input> = read
            .query_map(rusqlite::params![after, until], |r| {
                Ok(Input {
                    lead_id: r.get(0)?,
                    ledger: r.get(1)?,
                    version: r.get(2)?,
                    score: r.get(3)?,
                    priority: r.get(4)?,
                    events: r.get(5)?,
                    profile: None,
                    created: None,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = inputs.last().map(|i| i.lead_id) else { break };
        out.rescored += inputs.len() as u64;
        if pass.profile {
            // The leads table is keyed by rowid, and walking it in id order looks every row
            // up through the id index: 1.9 s for 1 M leads against 0.26 s for reading them
            // in rowid order (sqlite3 shell). Ids are made in time order, as rowids are, so a
            // chunk's leads are usually a short run of rowids: read that run and sort it.
            let (lo, hi): (Option<i64>, Option<i64>) = span.query_row(rusqlite::params![after, last], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let mut found: Vec<(Uuid, Profile, Micros)> = Vec::with_capacity(inputs.len());
            match (lo, hi) {
                (Some(lo), Some(hi)) if hi.saturating_sub(lo) <= 4 * inputs.len() as i64 => {
                    let mut rows = by_rowid.query(rusqlite::params![lo, hi])?;
                    while let Some(r) = rows.next()? {
                        // Compared as bytes first: a row of the run outside the chunk is
                        // skipped whatever its id holds.
                        let Some(id) = r.get_ref(22)?.as_blob_or_null()? else { continue };
                        if id > after.as_slice() && id <= last.as_bytes().as_slice() {
                            let id = Uuid::from_slice(id)
                                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(22, rusqlite::types::Type::Blob, Box::new(e)))?;
                            found.push((id, sqlite_profile(r)?, r.get(23)?));
                        }
                    }
                    found.sort_unstable_by_key(|f| f.0);
                }
                _ => {
                    let mut rows = profiles.query(rusqlite::params![after, last])?;
                    while let Some(r) = rows.next()? {
                        found.push((r.get(22)?, sqlite_profile(r)?, r.get(23)?));
                    }
                }
            }
            let mut i = 0;
            for (id, profile, created) in found {
                while i < inputs.len() && inputs[i].lead_id < id {
                    i += 1;
                }
                if i < inputs.len() && inputs[i].lead_id == id {
                    inputs[i].profile = Some(profile);
                    inputs[i].created = Some(created);
                }
            }
        } else {
            for i in inputs.iter_mut().filter(|i| !pass.can_carry(i.version)) {
                if let Some((profile, created)) = profile_of.query_row([i.lead_id], |r| Ok((sqlite_profile(r)?, r.get(23)?))).optional()? {
                    i.profile = Some(profile);
                    i.created = Some(created);
                }
            }
        }
        if !pass.behaviour {
            for i in inputs.iter_mut().filter(|i| !pass.can_carry(i.version)) {
                i.events = events_of.query_row([i.lead_id], |r| r.get(0)).optional()?.flatten();
            }
        }
        out.t_read += t.elapsed().as_micros();
        let t = Instant::now();
        out.outputs.extend(inputs.iter().filter_map(|i| if pass.can_carry(i.version) { pass.run(i) } else { full.run(i) }));
        out.t_compute += t.elapsed().as_micros();
        after = last.as_bytes().to_vec();
    }
    Ok(out)
}

fn sqlite_profile(r: &rusqlite::Row) -> rusqlite::Result<Profile> {
    let mut top: Vec<(&str, Option<String>)> = Vec::with_capacity(PROFILE_NAMES.len());
    for (i, n) in PROFILE_NAMES.iter().enumerate() {
        top.push((n, r.get(i)?));
    }
    let budget: Option<f64> = r.get(20)?;
    let fields: String = r.get(21)?;
    let custom = serde_json::from_str::<serde_json::Map<String, Value>>(&fields).unwrap_or_default();
    Ok(Profile::new(&top, budget, &custom))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lead field a profile rule may name is read by a pass: the text fields here, the
    /// budget beside them.
    #[test]
    fn the_pass_reads_every_field_a_profile_rule_may_name() {
        let mut names: Vec<&str> = PROFILE_NAMES.to_vec();
        names.push("budget");
        names.sort_unstable();
        let mut fields = voronka_domain::scoring::PROFILE_FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(names, fields);
    }
}
