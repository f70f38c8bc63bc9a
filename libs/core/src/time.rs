//! Timestamps: microseconds since the Unix epoch, UTC. Parsing accepts what the SDKs send
//! (RFC 3339 with any offset, or naive ISO 8601 which is taken as UTC); formatting produces
//! the naive-UTC ISO form the LangSmith API returns.
//!
//! A time on the wire may also be a JSON number: the JS SDK writes epoch milliseconds
//! (`Date.now()`), Python callers sometimes pass `time.time()` float seconds. [`Timestamp::from_json`]
//! and [`WireTime`] accept all three forms, so every path that takes a time agrees.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid time {0:?}: expected ISO 8601 text (e.g. 2026-11-25T02:25:38.269290+00:00) or epoch milliseconds as a number")]
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

/// Numbers whose magnitude exceeds this are epoch milliseconds, smaller ones epoch seconds
/// (the rule pydantic uses, so a value LangSmith accepts means the same time here). 2e10 s is the
/// year 2603; 2e10 ms is August 1970.
const SECONDS_OR_MILLIS_CUTOFF: f64 = 2e10;

impl Timestamp {
    /// An epoch number in seconds or milliseconds (see [`SECONDS_OR_MILLIS_CUTOFF`]), with any
    /// fraction; the same year range as [`Timestamp::parse`].
    pub fn from_epoch_number(n: f64) -> Result<Self, TimestampError> {
        let err = || TimestampError(format!("{n}"));
        if !n.is_finite() {
            return Err(err());
        }
        let micros = if n.abs() > SECONDS_OR_MILLIS_CUTOFF { n * 1e3 } else { n * 1e6 };
        // 0000-01-01 .. 9999-12-31T23:59:59.999999 UTC, as for text.
        const MIN_MICROS: f64 = -62_167_219_200_000_000.0;
        const MAX_MICROS: f64 = 253_402_300_799_999_999.0;
        if !(MIN_MICROS..=MAX_MICROS).contains(&micros) {
            return Err(err());
        }
        Ok(Self(micros.round() as i64))
    }

    /// A time from a JSON value: an ISO 8601 string or an epoch number. `Ok(None)` for null.
    pub fn from_json(v: &serde_json::Value) -> Result<Option<Self>, TimestampError> {
        match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => Self::parse(s).map(Some),
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(f) => Self::from_epoch_number(f).map(Some),
                None => Err(TimestampError(n.to_string())),
            },
            other => Err(TimestampError(truncate_for_error(&other.to_string()))),
        }
    }
}

/// A time as a request carries it, before validation: text or an epoch number. Deserializes
/// from a JSON string or number (anything else is a serde error naming both forms), so a wire
/// struct can hold it and report a bad value with the field's name via [`WireTime::to_timestamp`].
#[derive(Clone, Debug, PartialEq)]
pub enum WireTime {
    Text(String),
    Epoch(f64),
}

impl WireTime {
    pub fn to_timestamp(&self) -> Result<Timestamp, TimestampError> {
        match self {
            WireTime::Text(s) => Timestamp::parse(s),
            WireTime::Epoch(n) => Timestamp::from_epoch_number(*n),
        }
    }
}

impl<'de> Deserialize<'de> for WireTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WireTime;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an ISO 8601 time string or epoch milliseconds/seconds as a number")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<WireTime, E> {
                Ok(WireTime::Text(s.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<WireTime, E> {
                Ok(WireTime::Text(s))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<WireTime, E> {
                Ok(WireTime::Epoch(n as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<WireTime, E> {
                Ok(WireTime::Epoch(n as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<WireTime, E> {
                Ok(WireTime::Epoch(n))
            }
        }
        d.deserialize_any(V)
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

    #[test]
    fn epoch_numbers_are_milliseconds_or_seconds_as_pydantic_decides() {
        let iso = Timestamp::parse("2026-12-04T21:14:41.888").unwrap();
        // JS SDK: Date.now() milliseconds.
        assert_eq!(Timestamp::from_epoch_number(1_796_418_881_888.0).unwrap(), iso);
        // Python time.time(): float seconds.
        assert_eq!(Timestamp::from_epoch_number(1_796_418_881.888).unwrap(), iso);
        let v: serde_json::Value =
            serde_json::json!({"ms": 1_796_418_881_888_i64, "s": 1_796_418_881.888, "t": "2026-12-04T21:14:41.888Z"});
        for k in ["ms", "s", "t"] {
            assert_eq!(Timestamp::from_json(&v[k]).unwrap(), Some(iso), "{k}");
        }
        assert_eq!(Timestamp::from_json(&serde_json::Value::Null).unwrap(), None);
        assert!(Timestamp::from_json(&serde_json::json!(true)).is_err());
        assert!(Timestamp::from_epoch_number(f64::NAN).is_err());
        assert!(Timestamp::from_epoch_number(1e300).is_err());
        assert!(Timestamp::from_epoch_number(-1e17).is_err());
    }

    #[test]
    fn wire_time_deserializes_text_and_numbers_and_names_both_on_error() {
        let t: Vec<WireTime> = serde_json::from_str(r#"["2026-12-04T21:14:41.888", 1796418881888, 1796418881.888]"#).unwrap();
        let all: Vec<Timestamp> = t.iter().map(|w| w.to_timestamp().unwrap()).collect();
        assert!(all.windows(2).all(|w| w[0] == w[1]), "{all:?}");
        let e = serde_json::from_str::<WireTime>("true").unwrap_err().to_string();
        assert!(e.contains("ISO 8601") && e.contains("epoch"), "{e}");
    }
}
