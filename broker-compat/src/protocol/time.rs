//! Times as Celery writes and reads them: Python `datetime.isoformat()` out,
//! dateutil-`isoparse` in, naive values taken as UTC (§1.7).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};

use crate::error::{DecodeError, DecodeErrorKind};

/// `datetime.isoformat()` of an aware UTC time: microseconds only when non-zero,
/// `+00:00` suffix. E.g. `2026-11-21T22:45:47.287912+00:00`.
pub fn to_isoformat(t: DateTime<Utc>) -> String {
    let t = t.fixed_offset();
    if t.timestamp_subsec_micros() == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, false)
    } else {
        t.to_rfc3339_opts(SecondsFormat::Micros, false)
    }
}

/// Naive UTC, as the database backend stores `date_done`.
pub fn to_naive_utc(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

/// Parse an ISO-8601 time as Celery accepts it. Naive values are UTC.
pub fn parse_iso(s: &str) -> Result<DateTime<Utc>, DecodeError> {
    let bad = || {
        DecodeError::new(
            DecodeErrorKind::Header,
            format!("invalid ISO-8601 time {s:?}"),
        )
    };
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    // dateutil also accepts a space separator and offsets without colon.
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Ok(dt.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(Utc.from_utc_datetime(&n));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|n| Utc.from_utc_datetime(&n))
            .ok_or_else(bad);
    }
    Err(bad())
}

/// Float UNIX seconds (events, pidbox `expires`).
pub fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn isoformat_round_trips_python_forms() {
        for s in [
            "2026-11-21T22:45:09.646588+00:00",
            "2031-01-02T03:04:05+00:00",
        ] {
            assert_eq!(to_isoformat(parse_iso(s).unwrap()), s);
        }
    }

    #[test]
    fn naive_is_utc_and_offsets_are_honoured() {
        let naive = parse_iso("2024-01-02T03:04:05").unwrap();
        assert_eq!(to_isoformat(naive), "2024-01-02T03:04:05+00:00");
        let plus2 = parse_iso("2024-01-02T05:04:05+02:00").unwrap();
        assert_eq!(plus2, naive);
        assert!(parse_iso("tomorrow").is_err());
    }
}
