//! Numeric claims in text (money amounts, percentages, durations, optionally bare numbers),
//! normalized so that equal claims compare equal however they are written: `$1,200` and
//! `1200 USD`, `2 weeks` and `14 days`, `$1.5M` and `$1,500,000`.
//!
//! Not understood: numbers written as words ("thirty days"), ranges as one claim, and
//! locale-specific separators (`1.200,50`).

use std::sync::LazyLock;

use regex::Regex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimKind {
    Money,
    Percent,
    Duration,
    Number,
}

impl ClaimKind {
    pub const NAMES: [&'static str; 4] = ["money", "percent", "duration", "number"];

    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "money" => Self::Money,
            "percent" => Self::Percent,
            "duration" => Self::Duration,
            "number" => Self::Number,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Claim {
    /// As written in the text.
    pub text: String,
    pub kind: ClaimKind,
    /// The normalized value: the amount, the percentage, or seconds (for durations of fixed
    /// length; months, years and business days are counted as such).
    pub value: f64,
    /// The currency (`USD`) or the duration family (`s`, `month`, `year`, `business_day`).
    pub unit: &'static str,
}

impl Claim {
    /// Whether `other` states the same claim. A bare number matches any claim of that value.
    pub fn matches(&self, other: &Claim) -> bool {
        let same_value = (self.value - other.value).abs() <= 1e-9 * self.value.abs().max(1.0);
        same_value && (self.kind == ClaimKind::Number || (self.kind == other.kind && self.unit == other.unit))
    }
}

const NUM: &str = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)";

static MONEY_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)(?P<sym>[$€£¥₹])\s?(?P<num>{NUM})(?:\s?(?P<mag>k|mm|m|bn|b|thousand|million|billion)\b)?")).unwrap()
});
static MONEY_SUFFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)\b(?P<num>{NUM})(?:\s?(?P<mag>k|thousand|million|billion|bn))?\s?(?P<code>usd|eur|gbp|jpy|inr|dollars?|euros?|pounds?|cents?)\b"
    ))
    .unwrap()
});
static PERCENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i)(?P<num>{NUM})\s?(?:%|percent\b|per\s?cent\b|pct\b)")).unwrap());
static DURATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)\b(?P<num>{NUM})(?:\s|-)?(?P<unit>milliseconds?|msecs?|ms|seconds?|secs?|minutes?|mins?|hours?|hrs?|h|(?:business|working)[\s-]days?|days?|weeks?|wks?|months?|mos?|years?|yrs?)\b"
    ))
    .unwrap()
});
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(&format!(r"(?P<num>{NUM})")).unwrap());

fn parse_num(s: &str) -> Option<f64> {
    s.replace(',', "").parse().ok().filter(|x: &f64| x.is_finite())
}

fn magnitude(m: Option<&str>) -> f64 {
    match m.map(str::to_ascii_lowercase).as_deref() {
        Some("k" | "thousand") => 1e3,
        Some("m" | "mm" | "million") => 1e6,
        Some("b" | "bn" | "billion") => 1e9,
        _ => 1.0,
    }
}

fn currency_of_symbol(s: &str) -> &'static str {
    match s {
        "$" => "USD",
        "€" => "EUR",
        "£" => "GBP",
        "¥" => "JPY",
        _ => "INR",
    }
}

/// The currency and the factor to its main unit (cents are hundredths of a dollar).
fn currency_of_word(s: &str) -> (&'static str, f64) {
    let s = s.to_ascii_lowercase();
    match s.trim_end_matches('s') {
        "usd" | "dollar" => ("USD", 1.0),
        "cent" => ("USD", 0.01),
        "eur" | "euro" => ("EUR", 1.0),
        "gbp" | "pound" => ("GBP", 1.0),
        "jpy" => ("JPY", 1.0),
        _ => ("INR", 1.0),
    }
}

/// The duration family and the factor to its base (seconds for fixed-length units).
fn duration_unit(u: &str) -> (&'static str, f64) {
    let u = u.to_ascii_lowercase();
    if u.starts_with("business") || u.starts_with("working") {
        return ("business_day", 1.0);
    }
    match u.as_str() {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => ("s", 0.001),
        "sec" | "secs" | "second" | "seconds" => ("s", 1.0),
        "min" | "mins" | "minute" | "minutes" => ("s", 60.0),
        "h" | "hr" | "hrs" | "hour" | "hours" => ("s", 3600.0),
        "day" | "days" => ("s", 86_400.0),
        "wk" | "wks" | "week" | "weeks" => ("s", 604_800.0),
        "mo" | "mos" | "month" | "months" => ("month", 1.0),
        _ => ("year", 1.0),
    }
}

/// The claims of the given kinds in `text`, in order of appearance. Where patterns overlap
/// (`40 dollars` is also a bare number), the earliest, then longest, match wins.
pub(crate) fn extract(text: &str, kinds: &[ClaimKind]) -> Vec<Claim> {
    let mut found: Vec<(usize, usize, Claim)> = Vec::new();
    let want = |k| kinds.contains(&k);
    let mut push = |start: usize, end: usize, kind, value: Option<f64>, unit| {
        if let Some(value) = value {
            found.push((start, end, Claim { text: text[start..end].to_owned(), kind, value, unit }));
        }
    };
    if want(ClaimKind::Money) {
        for c in MONEY_PREFIX.captures_iter(text) {
            let m = c.get(0).unwrap();
            let v = parse_num(&c["num"]).map(|n| n * magnitude(c.name("mag").map(|m| m.as_str())));
            push(m.start(), m.end(), ClaimKind::Money, v, currency_of_symbol(&c["sym"]));
        }
        for c in MONEY_SUFFIX.captures_iter(text) {
            let m = c.get(0).unwrap();
            let (cur, f) = currency_of_word(&c["code"]);
            let v = parse_num(&c["num"]).map(|n| n * magnitude(c.name("mag").map(|m| m.as_str())) * f);
            push(m.start(), m.end(), ClaimKind::Money, v, cur);
        }
    }
    if want(ClaimKind::Percent) {
        for c in PERCENT.captures_iter(text) {
            let m = c.get(0).unwrap();
            push(m.start(), m.end(), ClaimKind::Percent, parse_num(&c["num"]), "%");
        }
    }
    if want(ClaimKind::Duration) {
        for c in DURATION.captures_iter(text) {
            let m = c.get(0).unwrap();
            let (unit, f) = duration_unit(&c["unit"]);
            push(m.start(), m.end(), ClaimKind::Duration, parse_num(&c["num"]).map(|n| n * f), unit);
        }
    }
    if want(ClaimKind::Number) {
        for c in NUMBER.captures_iter(text) {
            let m = c.get(0).unwrap();
            push(m.start(), m.end(), ClaimKind::Number, parse_num(m.as_str()), "");
        }
    }
    // Bare numbers sort after the typed claim starting at the same place or just before it
    // (`$40`'s number starts one byte later), so typed claims win overlaps.
    found.sort_by_key(|(s, e, c)| (*s, usize::MAX - *e, c.kind == ClaimKind::Number));
    let mut out: Vec<Claim> = Vec::with_capacity(found.len());
    let mut covered = 0;
    for (s, e, c) in found {
        if s >= covered {
            covered = e;
            out.push(c);
        } else if c.kind != ClaimKind::Number && out.last().is_some_and(|l| l.kind == ClaimKind::Number) {
            // A typed claim overlapping a bare number that started earlier replaces it.
            covered = covered.max(e);
            *out.last_mut().unwrap() = c;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPED: [ClaimKind; 3] = [ClaimKind::Money, ClaimKind::Percent, ClaimKind::Duration];

    fn claims(text: &str) -> Vec<(String, ClaimKind, f64, &'static str)> {
        extract(text, &TYPED).into_iter().map(|c| (c.text, c.kind, c.value, c.unit)).collect()
    }

    #[test]
    fn extracts_amounts_percentages_and_durations() {
        let c = claims("Refunds of $40 are issued within 30 days; a 15% fee applies after 2.5 hours.");
        assert_eq!(
            c,
            vec![
                ("$40".into(), ClaimKind::Money, 40.0, "USD"),
                ("30 days".into(), ClaimKind::Duration, 30.0 * 86_400.0, "s"),
                ("15%".into(), ClaimKind::Percent, 15.0, "%"),
                ("2.5 hours".into(), ClaimKind::Duration, 2.5 * 3600.0, "s"),
            ]
        );
    }

    #[test]
    fn equal_claims_written_differently_match() {
        let pairs = [
            ("$1,200", "1200 USD"),
            ("$1.5M", "$1,500,000"),
            ("2 weeks", "14 days"),
            ("30-day", "30 days"),
            ("90 minutes", "1.5 hrs"),
            ("15 percent", "15%"),
            ("50 cents", "$0.50"),
            ("5 business days", "5 working days"),
        ];
        for (a, b) in pairs {
            let (a1, b1) = (extract(a, &TYPED), extract(b, &TYPED));
            assert_eq!((a1.len(), b1.len()), (1, 1), "{a} / {b}: {a1:?} {b1:?}");
            assert!(a1[0].matches(&b1[0]), "{a} should match {b}: {a1:?} {b1:?}");
        }
    }

    #[test]
    fn different_claims_do_not_match() {
        for (a, b) in [("$40", "€40"), ("30 days", "30 hours"), ("3 months", "90 days"), ("15%", "$15"), ("5 business days", "5 days")] {
            let (a1, b1) = (extract(a, &TYPED), extract(b, &TYPED));
            assert!(!a1[0].matches(&b1[0]), "{a} should not match {b}");
        }
    }

    #[test]
    fn bare_numbers_are_opt_in_and_lose_overlaps_to_typed_claims() {
        assert!(extract("call 555 now", &TYPED).is_empty());
        let all = [ClaimKind::Money, ClaimKind::Number];
        let c = extract("pay $40 in 3 parts", &all);
        assert_eq!(
            c.iter().map(|c| (c.text.as_str(), c.kind)).collect::<Vec<_>>(),
            vec![("$40", ClaimKind::Money), ("3", ClaimKind::Number)]
        );
        let c = extract("40 dollars", &all);
        assert_eq!(c.iter().map(|c| (c.text.as_str(), c.kind)).collect::<Vec<_>>(), vec![("40 dollars", ClaimKind::Money)]);
    }

    #[test]
    fn words_that_merely_start_like_units_are_not_units() {
        assert!(extract("5 more things, 3 history books, the 5th", &TYPED).is_empty());
    }
}
