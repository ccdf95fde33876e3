//! Working time: a user's duty schedule (weekly hours in their time zone, days off,
//! vacations) and the company calendar that response deadlines are counted in.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
pub use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Hours per weekday as `[["09:00","18:00"], …]`; a shift whose end is before its start
/// runs past midnight into the next day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeekHours {
    #[serde(default)]
    pub mon: Vec<[String; 2]>,
    #[serde(default)]
    pub tue: Vec<[String; 2]>,
    #[serde(default)]
    pub wed: Vec<[String; 2]>,
    #[serde(default)]
    pub thu: Vec<[String; 2]>,
    #[serde(default)]
    pub fri: Vec<[String; 2]>,
    #[serde(default)]
    pub sat: Vec<[String; 2]>,
    #[serde(default)]
    pub sun: Vec<[String; 2]>,
}

impl WeekHours {
    /// Monday to Friday, 09:00–18:00.
    pub fn office() -> WeekHours {
        let day = vec![["09:00".to_string(), "18:00".to_string()]];
        WeekHours { mon: day.clone(), tue: day.clone(), wed: day.clone(), thu: day.clone(), fri: day, sat: vec![], sun: vec![] }
    }

    fn day(&self, i: usize) -> &[[String; 2]] {
        match i {
            0 => &self.mon,
            1 => &self.tue,
            2 => &self.wed,
            3 => &self.thu,
            4 => &self.fri,
            5 => &self.sat,
            _ => &self.sun,
        }
    }

    /// The shifts as (weekday index, start minute, end minute), end possibly past 1440.
    pub fn shifts(&self) -> Result<Vec<(usize, u32, u32)>, String> {
        let mut out = Vec::new();
        for (i, name) in DAYS.iter().enumerate() {
            for [a, b] in self.day(i) {
                let (s, e) =
                    (minute(a).ok_or(format!("{name}: {a:?} is not HH:MM"))?, minute(b).ok_or(format!("{name}: {b:?} is not HH:MM"))?);
                if s == e {
                    return Err(format!("{name}: an empty shift"));
                }
                out.push((i, s, if e > s { e } else { e + 1440 }));
            }
        }
        Ok(out)
    }
}

/// Minutes since midnight of `HH:MM`; `24:00` is the end of the day (a shift to midnight).
fn minute(s: &str) -> Option<u32> {
    if s.trim() == "24:00" {
        return Some(1440);
    }
    let t = NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()?;
    Some(chrono::Timelike::hour(&t) * 60 + chrono::Timelike::minute(&t))
}

fn weekday_index(d: Weekday) -> usize {
    d.num_days_from_monday() as usize
}

/// When someone (or the company) works.
#[derive(Debug, Clone)]
pub struct Duty {
    pub tz: Tz,
    shifts: Vec<(usize, u32, u32)>,
    pub days_off: Vec<NaiveDate>,
    /// Inclusive date ranges.
    pub vacations: Vec<(NaiveDate, NaiveDate)>,
}

impl Duty {
    pub fn new(tz: Tz, hours: &WeekHours, days_off: Vec<NaiveDate>, vacations: Vec<(NaiveDate, NaiveDate)>) -> Result<Duty, String> {
        Ok(Duty { tz, shifts: hours.shifts()?, days_off, vacations })
    }

    fn free_day(&self, d: NaiveDate) -> bool {
        self.days_off.contains(&d) || self.vacations.iter().any(|(a, b)| *a <= d && d <= *b)
    }

    /// Whether `at` falls in a shift. A shift belongs to the day it starts on: a night shift
    /// that starts the evening before a vacation still runs.
    pub fn on_duty(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz);
        let minute = chrono::Timelike::hour(&local) * 60 + chrono::Timelike::minute(&local);
        let today = local.date_naive();
        let wd = weekday_index(local.weekday());
        for (day, s, e) in &self.shifts {
            // A shift of today.
            if *day == wd && minute >= *s && minute < (*e).min(1440) && !self.free_day(today) {
                return true;
            }
            // Yesterday's shift running past midnight.
            if *e > 1440
                && *day == (wd + 6) % 7
                && minute < e - 1440
                && let Some(y) = today.pred_opt()
                && !self.free_day(y)
            {
                return true;
            }
        }
        false
    }

    /// The moments shifts start and end around `from` (up to 14 days on), as UTC intervals
    /// in order.
    fn intervals(&self, from: DateTime<Utc>, days: i64) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let local_day = from.with_timezone(&self.tz).date_naive();
        let mut out = Vec::new();
        for k in -1..days {
            let Some(d) = local_day.checked_add_signed(Duration::days(k)) else { continue };
            if self.free_day(d) {
                continue;
            }
            let wd = weekday_index(d.weekday());
            for (day, s, e) in &self.shifts {
                if *day != wd {
                    continue;
                }
                let start = local_at(self.tz, d, *s);
                let end = local_at(self.tz, d, *e);
                if let (Some(a), Some(b)) = (start, end) {
                    out.push((a, b));
                }
            }
        }
        out.sort();
        out
    }

    /// The moment `seconds` of working time after `start`. With no working time in the next
    /// two weeks the deadline is counted in plain time.
    pub fn add_working(&self, start: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
        let mut left = Duration::seconds(seconds.max(0));
        for (a, b) in self.intervals(start, 15) {
            if b <= start {
                continue;
            }
            let from = a.max(start);
            let span = b - from;
            if span >= left {
                return from + left;
            }
            left -= span;
        }
        start + Duration::seconds(seconds)
    }
}

/// `minute` minutes after local midnight of `d` (may pass into the next day), in UTC.
fn local_at(tz: Tz, d: NaiveDate, minute: u32) -> Option<DateTime<Utc>> {
    let day = d.checked_add_signed(Duration::days((minute / 1440) as i64))?;
    let m = minute % 1440;
    let naive = day.and_hms_opt(m / 60, m % 60, 0)?;
    // In a DST gap take the later moment; in an overlap the earlier.
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(naive + Duration::hours(1))).earliest())
        .map(|t| t.with_timezone(&Utc))
}

pub fn parse_tz(s: &str) -> Option<Tz> {
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn office_hours_in_the_users_time_zone() {
        let moscow = Duty::new(parse_tz("Europe/Moscow").unwrap(), &WeekHours::office(), vec![], vec![]).unwrap();
        // Monday 2027-03-01: 09:00 Moscow is 06:00 UTC.
        assert!(!moscow.on_duty(utc("2027-03-01T05:59:00Z")));
        assert!(moscow.on_duty(utc("2027-03-01T06:00:00Z")));
        assert!(moscow.on_duty(utc("2027-03-01T14:59:00Z")));
        assert!(!moscow.on_duty(utc("2027-03-01T15:00:00Z")));
        // Saturday.
        assert!(!moscow.on_duty(utc("2027-03-06T10:00:00Z")));
        let vladivostok = Duty::new(parse_tz("Asia/Vladivostok").unwrap(), &WeekHours::office(), vec![], vec![]).unwrap();
        // 10:00 UTC Monday is 20:00 in Vladivostok: off; 00:00 UTC is 10:00 there.
        assert!(!vladivostok.on_duty(utc("2027-03-01T10:00:00Z")));
        assert!(vladivostok.on_duty(utc("2027-03-01T00:00:00Z")));
    }

    #[test]
    fn night_shifts_cross_midnight() {
        let hours = WeekHours { mon: vec![["22:00".into(), "06:00".into()]], ..Default::default() };
        let night = Duty::new(Tz::UTC, &hours, vec![], vec![]).unwrap();
        assert!(night.on_duty(utc("2027-03-01T23:30:00Z")));
        assert!(night.on_duty(utc("2027-03-02T05:59:00Z")), "Tuesday morning is Monday's shift");
        assert!(!night.on_duty(utc("2027-03-02T06:00:00Z")));
        assert!(!night.on_duty(utc("2027-03-02T23:00:00Z")), "no shift on Tuesday night");
    }

    #[test]
    fn vacations_and_days_off_are_free() {
        let duty = Duty::new(Tz::UTC, &WeekHours::office(), vec![d("2027-03-02")], vec![(d("2027-03-08"), d("2027-03-12"))]).unwrap();
        assert!(duty.on_duty(utc("2027-03-01T10:00:00Z")));
        assert!(!duty.on_duty(utc("2027-03-02T10:00:00Z")));
        assert!(!duty.on_duty(utc("2027-03-10T10:00:00Z")));
        assert!(!duty.on_duty(utc("2027-03-12T17:00:00Z")));
        assert!(duty.on_duty(utc("2027-03-15T09:00:00Z")));
    }

    #[test]
    fn deadlines_count_working_time_only() {
        let cal = Duty::new(parse_tz("Europe/Moscow").unwrap(), &WeekHours::office(), vec![], vec![]).unwrap();
        // 15 minutes from 17:50 Moscow on Friday: 10 today, 5 on Monday from 09:00.
        let start = utc("2027-03-05T14:50:00Z");
        assert_eq!(cal.add_working(start, 15 * 60), utc("2027-03-08T06:05:00Z"));
        // Within hours it is plain time.
        assert_eq!(cal.add_working(utc("2027-03-01T07:00:00Z"), 30), utc("2027-03-01T07:00:30Z"));
        // Before hours it starts at opening.
        assert_eq!(cal.add_working(utc("2027-03-01T03:00:00Z"), 120), utc("2027-03-01T06:02:00Z"));
    }

    #[test]
    fn bad_hours_are_named() {
        let hours = WeekHours { tue: vec![["9am".into(), "18:00".into()]], ..Default::default() };
        assert!(hours.shifts().unwrap_err().starts_with("tue"));
    }

    #[test]
    fn a_shift_to_24_00_covers_the_whole_day() {
        let hours = WeekHours { mon: vec![["00:00".into(), "24:00".into()]], ..Default::default() };
        let d = Duty::new(chrono_tz::UTC, &hours, vec![], vec![]).unwrap();
        // Monday 2027-03-01: every minute, up to 23:59:59; not Tuesday 00:00.
        for t in ["2027-03-01T00:00:00Z", "2027-03-01T12:00:00Z", "2027-03-01T23:59:00Z", "2027-03-01T23:59:59Z"] {
            assert!(d.on_duty(t.parse().unwrap()), "{t}");
        }
        assert!(!d.on_duty("2027-03-02T00:00:00Z".parse().unwrap()));
        assert!(
            Duty::new(chrono_tz::UTC, &WeekHours { mon: vec![["24:00".into(), "24:00".into()]], ..Default::default() }, vec![], vec![])
                .is_err()
        );
    }
}
