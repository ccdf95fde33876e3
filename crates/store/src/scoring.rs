//! Scores in storage: the versions of the points model, each lead's ledger, the score as it
//! is now (computed from the ledger at read time, so decay follows real time), the
//! explanation, and full re-scoring after a model change.

use crate::db::{with_read, with_write};
use crate::ts::Ts;
use crate::{Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use uuid::Uuid;
use voronka_domain::scoring::{Entry, Micros, Model, decode_ledger};

/// Models by version, and which one is active. Shared by readers and the writer.
#[derive(Default)]
pub struct ModelCache {
    inner: RwLock<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    active: i64,
    models: HashMap<i64, Arc<Model>>,
}

impl ModelCache {
    pub fn active(&self) -> (i64, Arc<Model>) {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        match g.models.get(&g.active) {
            Some(m) => (g.active, m.clone()),
            None => (0, Arc::new(Model::starter())),
        }
    }
    pub fn get(&self, version: i64) -> Option<Arc<Model>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).models.get(&version).cloned()
    }
    pub fn insert(&self, version: i64, model: Arc<Model>, active: bool) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        g.models.insert(version, model);
        if active && version >= g.active {
            g.active = version;
        }
    }
}

/// A lead's score as of a moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreNow {
    pub score: f64,
    pub priority: f64,
    pub profile: f64,
    pub temperature: voronka_domain::Temperature,
    pub grade: voronka_domain::Grade,
}

pub fn score_now(model: &Model, ledger: &[Entry], now: Micros) -> ScoreNow {
    let score = model.score(ledger, now);
    let profile = model.profile_points(ledger);
    ScoreNow { score, priority: model.priority(ledger, now), profile, temperature: model.temperature(score), grade: model.grade(profile) }
}

/// One line of the explanation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Explained {
    pub rule: String,
    /// The points this line gives now (behaviour points decay from `at`).
    pub points: f64,
    /// The rule's full points when earned.
    pub earned: f64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Ts,
    pub kind: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScoreView {
    pub score: f64,
    pub temperature: &'static str,
    pub grade: &'static str,
    pub priority: f64,
    pub profile_points: f64,
    pub model_version: i64,
    /// Lines whose points sum to the score.
    pub explanation: Vec<Explained>,
}

/// Rounds values to tenths so that the rounded parts sum to the rounded whole (largest
/// remainder), keeping an explanation's lines adding up to its score.
pub fn round_parts(parts: &[f64]) -> (f64, Vec<f64>) {
    let total: f64 = parts.iter().sum();
    let target = (total * 10.0).round() as i64;
    let mut floors: Vec<(usize, i64, f64)> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let t = p * 10.0;
            (i, t.floor() as i64, t - t.floor())
        })
        .collect();
    let mut sum: i64 = floors.iter().map(|f| f.1).sum();
    floors.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal));
    let mut out = vec![0i64; parts.len()];
    for (i, f, _) in &floors {
        out[*i] = *f;
    }
    let mut k = 0;
    while sum < target && !floors.is_empty() {
        out[floors[k % floors.len()].0] += 1;
        sum += 1;
        k += 1;
    }
    (target as f64 / 10.0, out.into_iter().map(|t| t as f64 / 10.0).collect())
}

pub(crate) fn micros(t: Ts) -> Micros {
    t.micros()
}

impl Store {
    pub fn model_cache(&self) -> &Arc<ModelCache> {
        &self.models
    }

    /// The active model and its version.
    pub fn active_model(&self) -> (i64, Arc<Model>) {
        self.models.active()
    }

    /// The model of a version, from the cache or the database.
    pub async fn model_version(&self, version: i64) -> Result<Arc<Model>, StoreError> {
        if let Some(m) = self.models.get(version) {
            return Ok(m);
        }
        let json: Option<Value> = with_read!(&self.db, p => {
            sqlx::query_scalar::<_, Value>("SELECT model FROM scoring_models WHERE version = $1").bind(version).fetch_optional(p).await?
        });
        let model = match json {
            Some(j) => {
                Arc::new(Model::from_json(&j).map_err(|e| StoreError::Invalid(format!("stored model {version} is invalid: {e:?}")))?)
            }
            None => Arc::new(Model::starter()),
        };
        self.models.insert(version, model.clone(), false);
        Ok(model)
    }

    /// Makes sure a model exists (the starter model on a new installation) and loads the
    /// active one; also picks up a model saved by another process.
    pub async fn refresh_model(&self) -> Result<(i64, Arc<Model>), StoreError> {
        let now = self.now();
        let starter = voronka_domain::scoring::Model::starter().to_json();
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO scoring_models (version, model, created_at) SELECT 1, $1, $2 WHERE NOT EXISTS (SELECT 1 FROM scoring_models)")
                .bind(&starter).bind(now).execute(p).await?;
        });
        let version: i64 = with_read!(&self.db, p => {
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(version), 0) FROM scoring_models").fetch_one(p).await?
        });
        let model = self.model_version(version).await?;
        self.models.insert(version, model.clone(), true);
        Ok((version, model))
    }

    /// The score, temperature, grade and the explanation of a lead, as of now.
    pub async fn score(&self, lead_id: Uuid) -> Result<Option<ScoreView>, StoreError> {
        let row: Option<(Vec<u8>, i64)> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT ledger, model_version FROM lead_scores WHERE lead_id = $1").bind(lead_id).fetch_optional(p).await?
        });
        let Some((ledger, version)) = row else {
            return Ok(None);
        };
        let model = self.model_version(version).await?;
        let ledger = decode_ledger(&ledger);
        let now = micros(self.now());
        let s = score_now(&model, &ledger, now);
        let values: Vec<f64> = ledger.iter().map(|e| model.value(e, now)).collect();
        let (score, rounded) = round_parts(&values);
        let mut explanation: Vec<Explained> = ledger
            .iter()
            .zip(rounded)
            .map(|(e, points)| Explained {
                rule: model.rule_id(e.rule).to_string(),
                points,
                earned: e.points as f64,
                at: Ts::from_micros(e.at).unwrap_or(Ts(chrono::DateTime::UNIX_EPOCH)),
                kind: if e.profile { "profile" } else { "behaviour" },
            })
            .collect();
        explanation.sort_by(|a, b| b.at.cmp(&a.at).then(a.rule.cmp(&b.rule)));
        Ok(Some(ScoreView {
            score,
            temperature: s.temperature.as_str(),
            grade: s.grade.as_str(),
            priority: (s.priority * 10.0).round() / 10.0,
            profile_points: (s.profile * 10.0).round() / 10.0,
            model_version: version,
            explanation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_parts_add_up_to_the_rounded_whole() {
        for parts in [vec![0.04, 0.04, 0.04], vec![1.25, 2.25, 3.25], vec![3.0, -2.0, 0.333, 0.333, 0.334], vec![7.96, 0.01], vec![]] {
            let (total, rounded) = round_parts(&parts);
            let sum: f64 = rounded.iter().sum();
            assert!((sum - total).abs() < 1e-9, "{parts:?}: {rounded:?} sums to {sum}, total {total}");
            assert!((total - (parts.iter().sum::<f64>() * 10.0).round() / 10.0).abs() < 1e-9);
        }
    }
}
