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

/// A microsecond's hour: the arrival counts' unit.
const HOUR_US: i64 = 3_600_000_000;

/// Leads of one local day, channel and state.
type DayRow = (i64, String, String, i64);

/// Arrivals being added up: per day and channel, per state.
#[derive(Default)]
struct Tally {
    per_day: BTreeMap<(i64, String), i64>,
    funnel: BTreeMap<String, i64>,
}

impl Tally {
    fn leads(&mut self, rows: Vec<DayRow>) {
        for (day, channel, status, n) in rows {
            *self.per_day.entry((day, channel)).or_default() += n;
            *self.funnel.entry(status).or_default() += n;
        }
    }

    /// By day, then channel; the sums of 0 left out.
    fn finish(self) -> Arrivals {
        Arrivals {
            per_day: self
                .per_day
                .into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|((day, channel), count)| DayCount { day, channel, count })
                .collect(),
            funnel: self.funnel.into_iter().filter(|(_, n)| *n != 0).collect(),
        }
    }
}

impl Store {
    /// Leads created in `[from, to)`: per local day and channel, and by current state (the
    /// funnel); `offset_s` is the viewer's UTC offset in seconds.
    ///
    /// On SQLite, for a viewer who sees every lead and a whole-hour offset, the whole hours
    /// of the period are read from the arrival counts (migration 0018) and only the leads
    /// not counted yet and the part hours at either end from the leads themselves (at 1 M
    /// leads a quarter is tens of thousands of counts instead of a quarter of a million
    /// index entries). Otherwise from the arrival index, which holds every column used here,
    /// one day at a time: grouping a day's few thousand leads at a time is cheaper than
    /// grouping a quarter's hundreds of thousands at once (at 1 M leads, 210 against 380 ms
    /// on SQLite).
    pub async fn arrivals(&self, access: &Access, from: Ts, to: Ts, offset_s: i64) -> Result<Arrivals, StoreError> {
        if let Some(tally) = self.counted_arrivals(access, from, to, offset_s).await? {
            return Ok(tally.finish());
        }
        let acc = self.access_sql(access);
        let sql = format!(
            "SELECT l.channel, l.status, COUNT(*) FROM leads l WHERE l.created_at >= $1 AND l.created_at < $2 AND {acc} GROUP BY 1, 2"
        );
        let (start, end) = (from.micros(), to.micros());
        let day_of = |us: i64| (us.div_euclid(1_000_000) + offset_s).div_euclid(86_400);
        let day_start = |day: i64| (day * 86_400 - offset_s).saturating_mul(1_000_000);
        let mut tally = Tally::default();
        if start < end {
            for day in day_of(start)..=day_of(end - 1) {
                let (a, b) = (day_start(day).max(start), day_start(day + 1).min(end));
                let (Some(a), Some(b)) = (Ts::from_micros(a), Ts::from_micros(b)) else { continue };
                let got: Vec<(String, String, i64)> = with_read!(&self.db, p => {
                    sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(a).bind(b).fetch_all(p).await?
                });
                tally.leads(got.into_iter().map(|(channel, status, n)| (day, channel, status, n)).collect());
            }
        }
        Ok(tally.finish())
    }

    /// `arrivals` from the arrival counts (SQLite), or `None` where they cannot answer:
    /// another database, a viewer who sees only some leads (the counts do not say whose a
    /// lead is), an offset that splits hours, a period without a whole hour.
    async fn counted_arrivals(&self, access: &Access, from: Ts, to: Ts, offset_s: i64) -> Result<Option<Tally>, StoreError> {
        let crate::db::Db::Sqlite { read, .. } = &self.db else { return Ok(None) };
        let (start, end) = (from.micros(), to.micros());
        // SQL's integer division truncates where `div_euclid` floors: the counts answer only
        // where every dividend is positive (any time after 2 January 1970).
        if !matches!(access, Access::All) || offset_s % 3600 != 0 || start < 86_400 * 1_000_000 {
            return Ok(None);
        }
        // The whole hours of the period: [h0, h1).
        let (h0, h1) = (start.div_euclid(HOUR_US) + i64::from(start % HOUR_US != 0), end.div_euclid(HOUR_US));
        if h0 >= h1 {
            return Ok(None);
        }
        let day = "(created_at / 1000000 + $3) / 86400";
        let direct =
            format!("SELECT {day}, channel, status, COUNT(*) FROM leads WHERE created_at >= $1 AND created_at < $2 GROUP BY 1, 2, 3");
        // Leads past the mark, in the whole hours: found by rowid (`+created_at` keeps the
        // planner off the arrival index, which would walk the whole period).
        let uncounted = format!(
            "SELECT {day}, channel, status, COUNT(*) FROM leads \
             WHERE rowid > (SELECT indexed_to FROM lead_words_state) AND +created_at >= $1 AND +created_at < $2 GROUP BY 1, 2, 3"
        );
        let mut tally = Tally::default();
        // One read transaction: the counts, the mark and the leads from one snapshot.
        let mut tx = read.begin().await?;
        let by_channel: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT (hour * 3600 + $3) / 86400, channel, SUM(n) FROM arrivals_by_channel WHERE hour >= $1 AND hour < $2 GROUP BY 1, 2",
        )
        .bind(h0)
        .bind(h1)
        .bind(offset_s)
        .fetch_all(&mut *tx)
        .await?;
        for (day, channel, n) in by_channel {
            *tally.per_day.entry((day, channel)).or_default() += n;
        }
        let by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, SUM(n) FROM arrivals_by_status WHERE hour >= $1 AND hour < $2 GROUP BY 1")
                .bind(h0)
                .bind(h1)
                .fetch_all(&mut *tx)
                .await?;
        for (status, n) in by_status {
            *tally.funnel.entry(status).or_default() += n;
        }
        for (sql, a, b) in [(&uncounted, h0 * HOUR_US, h1 * HOUR_US), (&direct, start, h0 * HOUR_US), (&direct, h1 * HOUR_US, end)] {
            if a < b {
                tally.leads(sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(a).bind(b).bind(offset_s).fetch_all(&mut *tx).await?);
            }
        }
        tx.commit().await?;
        Ok(Some(tally))
    }

    /// Every lead the viewer may see, by current state (the kanban's column counts). On
    /// SQLite, for a viewer who sees every lead, from the arrival counts and the leads not
    /// counted yet.
    pub async fn status_counts(&self, access: &Access) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = match (&self.db, access) {
            (crate::db::Db::Sqlite { read, .. }, Access::All) => {
                sqlx::query_as(
                    "SELECT status, SUM(n) FROM arrivals_by_status GROUP BY 1 \
                     UNION ALL SELECT status, COUNT(*) FROM leads WHERE rowid > (SELECT indexed_to FROM lead_words_state) GROUP BY 1",
                )
                .fetch_all(read)
                .await?
            }
            _ => {
                let acc = self.access_sql(access);
                let sql = format!("SELECT l.status, COUNT(*) FROM leads l WHERE {acc} GROUP BY 1");
                with_read!(&self.db, p => { sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await? })
            }
        };
        let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
        for (status, n) in rows {
            *by_status.entry(status).or_default() += n;
        }
        Ok(by_status.into_iter().filter(|(_, n)| *n != 0).collect())
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
