//! Timestamps: microseconds since the Unix epoch, UTC. Parsing accepts what the SDKs send
//! (RFC 3339 with any offset, or naive ISO 8601 which is taken as UTC); formatting produces
//! the naive-UTC ISO form the LangSmith API returns.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid timestamp {0:?}: expected ISO 8601, e.g. 2026-11-25T02:25:38.269290+00:00")]
pub struct TimestampError(pub String);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_offset(OffsetDateTime::now_utc())
    }

    pub fn from_micros(us: i64) -> Self {
        Self(us)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn millis(self) -> i64 {
        self.0.div_euclid(1000)
    }

    fn from_offset(t: OffsetDateTime) -> Self {
        Self((t.unix_timestamp_nanos() / 1000) as i64)
    }

    /// Parses ISO 8601 / RFC 3339. A value without an offset is UTC; a trailing `Z`, `+00:00`
    /// or any other offset is honoured. Fractions of any length up to nanoseconds are accepted.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let err = || TimestampError(truncate_for_error(s));
        let s = s.trim();
        if s.len() > 64 {
            return Err(err());
        }
        // RFC 3339 has four-digit years: a time outside 0000-9999 UTC could not be written back
        // in a form this accepts (found by fuzzing the filter language).
        match Self::parse_any(s).map(|t| t.to_offset(UtcOffset::UTC)) {
            Some(t) if (0..=9999).contains(&t.year()) => Ok(Self::from_offset(t)),
            _ => Err(err()),
        }
    }

    /// The first of the accepted forms that `s` is in.
    fn parse_any(s: &str) -> Option<OffsetDateTime> {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Some(t);
        }
        // Naive forms: with 'T' or a space, with or without fraction.
        let normalized = s.replacen(' ', "T", 1);
        let with_z = format!("{normalized}Z");
        if let Ok(t) = OffsetDateTime::parse(&with_z, &Rfc3339) {
            return Some(t);
        }
        // Offsets without a colon, e.g. +0000, or a date alone.
        let fmt_no_colon = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]][offset_hour sign:mandatory][offset_minute]"
        );
        if let Ok(t) = OffsetDateTime::parse(&normalized, &fmt_no_colon) {
            return Some(t);
        }
        let date_only = format_description!("[year]-[month]-[day]");
        if let Ok(d) = time::Date::parse(&normalized, &date_only) {
            return Some(PrimitiveDateTime::new(d, time::Time::MIDNIGHT).assume_utc());
        }
        None
    }

    fn to_offset(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH).to_offset(UtcOffset::UTC)
    }

    /// `2026-11-25T02:25:38.269290` (naive UTC, microseconds), as LangSmith returns.
    pub fn to_iso(self) -> String {
        let t = self.to_offset();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }

    /// The compact form used in `dotted_order` segments: `20261125T022538269290Z`.
    pub fn to_dotted_stamp(self) -> String {
        let t = self.to_offset();
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}{:06}Z",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso())
    }
}

fn truncate_for_error(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sdk_forms_and_round_trips() {
        let a = Timestamp::parse("2026-11-25T02:25:38.269290+00:00").unwrap();
        let b = Timestamp::parse("2026-11-25T02:25:38.269290").unwrap();
        let c = Timestamp::parse("2026-11-25T02:25:38.269290Z").unwrap();
        let d = Timestamp::parse("2026-11-25T03:25:38.269290+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
        assert_eq!(a.to_iso(), "2026-11-25T02:25:38.269290");
        assert_eq!(a.to_dotted_stamp(), "20261125T022538269290Z");
        assert_eq!(Timestamp::parse(&a.to_iso()).unwrap(), a);
        assert!(Timestamp::parse("2026-11-25 02:25:38").is_ok());
        assert!(Timestamp::parse("2026-11-25").is_ok());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("2026-13-45T00:00:00").is_err());
        assert!(Timestamp::parse("").is_err());
    }
}
