//! How values are shown: instants in the viewer's time zone, phones formatted, numbers.

use chrono::{NaiveDateTime, TimeZone};
use voronka_domain::schedule::Tz;
use voronka_domain::{Lang, Phone};
use voronka_store::Ts;

/// An instant in the viewer's zone: `23.11.2026 14:05` in Russian, `2026-11-23 14:05` in English.
pub fn local(ts: Ts, tz: Tz, lang: Lang) -> String {
    let t = ts.0.with_timezone(&tz);
    match lang {
        Lang::Ru => t.format("%d.%m.%Y %H:%M").to_string(),
        Lang::En => t.format("%Y-%m-%d %H:%M").to_string(),
    }
}

/// A day number (days since 1970-01-01, local) as a short date.
pub fn day(days: i64, lang: Lang) -> String {
    let d = chrono::DateTime::from_timestamp(days * 86400, 0).map(|t| t.date_naive()).unwrap_or_default();
    match lang {
        Lang::Ru => d.format("%d.%m").to_string(),
        Lang::En => d.format("%m-%d").to_string(),
    }
}

/// The value of a `datetime-local` input for an instant.
pub fn input_value(ts: Ts, tz: Tz) -> String {
    ts.0.with_timezone(&tz).format("%Y-%m-%dT%H:%M").to_string()
}

/// A `datetime-local` input (`2026-11-23T14:05`) in the viewer's zone as an instant.
pub fn parse_local(s: &str, tz: Tz) -> Option<Ts> {
    let naive = NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S"))
        .ok()?;
    // In a gap (clocks moved forward) take the later reading; in an overlap, the earlier.
    let t =
        tz.from_local_datetime(&naive).earliest().or_else(|| tz.from_local_datetime(&(naive + chrono::Duration::hours(1))).earliest())?;
    Some(Ts::from(t.with_timezone(&chrono::Utc)))
}

/// A stored E.164 phone as people write it: `+7 921 555-12-34`.
pub fn phone(e164: &str) -> String {
    Phone::from_e164_unchecked(e164.to_string()).display()
}

/// A score or a share with at most one decimal.
pub fn num(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 { format!("{r:.0}") } else { format!("{r:.1}") }
}

/// The viewer's UTC offset now, in seconds (for grouping by local day).
pub fn offset_seconds(tz: Tz) -> i64 {
    use chrono::Offset;
    tz.offset_from_utc_datetime(&chrono::Utc::now().naive_utc()).fix().local_minus_utc() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_follow_the_zone_and_language() {
        let ts = Ts::from(chrono::DateTime::parse_from_rfc3339("2026-11-23T21:30:00Z").unwrap().with_timezone(&chrono::Utc));
        let msk: Tz = "Europe/Moscow".parse().unwrap();
        let vlad: Tz = "Asia/Vladivostok".parse().unwrap();
        assert_eq!(local(ts, msk, Lang::Ru), "24.11.2026 00:30");
        assert_eq!(local(ts, vlad, Lang::En), "2026-11-24 07:30");
        assert_eq!(parse_local("2026-11-24T00:30", msk), Some(ts));
        assert_eq!(input_value(ts, msk), "2026-11-24T00:30");
        assert_eq!(parse_local("yesterday", msk), None);
    }

    #[test]
    fn numbers_and_phones() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(-2.0), "-2");
        assert_eq!(phone("+79215551234"), Phone::from_e164_unchecked("+79215551234".into()).display());
        assert_ne!(phone("+79215551234"), "+79215551234");
    }
}
