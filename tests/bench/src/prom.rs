//! Reading the server's Prometheus histograms from `/metrics`, so a benchmark reports what the
//! server measured during its timed phase only (the difference of two scrapes).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::client::Conn;

/// One histogram summed over its label sets: cumulative counts per upper bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)`, ascending, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
    pub sum: f64,
}

/// Finds `name` in a Prometheus text exposition; label sets other than `le` are added up.
pub fn parse(text: &str, name: &str) -> Option<Histogram> {
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new(); // ordered by the bound's bits (all >= 0)
    let (mut count, mut sum, mut seen) = (0.0, 0.0, false);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let Some((series, value)) = rest.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        if let Some(labels) = series.strip_prefix("_bucket{") {
            let Some(le) = labels.split("le=\"").nth(1).and_then(|s| s.split('"').next()) else { continue };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else if let Ok(x) = le.parse::<f64>() {
                x
            } else {
                continue;
            };
            by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += v;
            seen = true;
        } else if series == "_count" || series.starts_with("_count{") {
            count += v;
        } else if series == "_sum" || series.starts_with("_sum{") {
            sum += v;
        }
    }
    seen.then(|| Histogram { buckets: by_le.into_values().collect(), count, sum })
}

impl Histogram {
    /// What was recorded between `earlier` and this scrape.
    pub fn since(&self, earlier: Option<&Histogram>) -> Histogram {
        let Some(e) = earlier else { return self.clone() };
        let before = |le: f64| e.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
        Histogram {
            buckets: self.buckets.iter().map(|(le, c)| (*le, c - before(*le))).collect(),
            count: self.count - e.count,
            sum: self.sum - e.sum,
        }
    }

    /// The `q` quantile as Prometheus' `histogram_quantile` estimates it: linear within the
    /// bucket it falls in; in the `+Inf` bucket, the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, c) in &self.buckets {
            if c >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let inside = c - below;
                return Some(if inside > 0.0 { lower + (le - lower) * (rank - below) / inside } else { le });
            }
            (lower, below) = (le, c);
        }
        Some(lower)
    }

    /// Share of samples at or under `bound` (exact when `bound` is a bucket bound).
    pub fn share_within(&self, bound: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        let at = self.buckets.iter().take_while(|(le, _)| *le <= bound).last().map_or(0.0, |(_, c)| *c);
        (total > 0.0).then(|| at / total)
    }

    /// `{count, mean, p50, p90, p99, within: {bound: share}}` for a RESULT line.
    pub fn to_json(&self, bounds: &[f64]) -> Value {
        let r = |x: Option<f64>| x.map(|v| (v * 1e4).round() / 1e4);
        let within: serde_json::Map<String, Value> = bounds.iter().map(|b| (b.to_string(), json!(r(self.share_within(*b))))).collect();
        json!({
            "count": self.count,
            "mean": r((self.count > 0.0).then(|| self.sum / self.count)),
            "p50": r(self.quantile(0.5)),
            "p90": r(self.quantile(0.9)),
            "p99": r(self.quantile(0.99)),
            "within": within,
        })
    }
}

/// One scrape of `/metrics`.
pub async fn scrape(conn: &mut Conn) -> Result<String> {
    let (status, body) = conn.get("/metrics", Duration::from_secs(10)).await?;
    if !status.is_success() {
        bail!("GET /metrics answered {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE lag_seconds histogram
lag_seconds_bucket{le="0.1"} 50
lag_seconds_bucket{le="1"} 90
lag_seconds_bucket{le="2"} 99
lag_seconds_bucket{le="+Inf"} 100
lag_seconds_sum 60
lag_seconds_count 100
req_seconds_bucket{route="/a",le="1"} 3
req_seconds_bucket{route="/a",le="+Inf"} 4
req_seconds_bucket{route="/b",le="1"} 5
req_seconds_bucket{route="/b",le="+Inf"} 5
req_seconds_count{route="/a"} 4
req_seconds_count{route="/b"} 5
"#;

    #[test]
    fn quantiles_interpolate_within_a_bucket_like_prometheus() {
        let h = parse(TEXT, "lag_seconds").unwrap();
        assert_eq!(h.count, 100.0);
        assert_eq!(h.quantile(0.5), Some(0.1));
        assert!((h.quantile(0.7).unwrap() - 0.55).abs() < 1e-9, "{:?}", h.quantile(0.7));
        assert_eq!(h.quantile(0.99), Some(2.0));
        assert_eq!(h.quantile(1.0), Some(2.0), "the +Inf bucket answers the largest finite bound");
        assert_eq!(h.share_within(2.0), Some(0.99));
        assert_eq!(h.share_within(0.05), Some(0.0));
    }

    #[test]
    fn label_sets_add_up_and_a_difference_keeps_only_the_interval() {
        let h = parse(TEXT, "req_seconds").unwrap();
        assert_eq!(h.buckets, vec![(1.0, 8.0), (f64::INFINITY, 9.0)]);
        assert_eq!(h.count, 9.0);
        let later =
            parse(&TEXT.replace("lag_seconds_bucket{le=\"+Inf\"} 100", "lag_seconds_bucket{le=\"+Inf\"} 110"), "lag_seconds").unwrap();
        let d = later.since(parse(TEXT, "lag_seconds").as_ref());
        assert_eq!(d.buckets.last(), Some(&(f64::INFINITY, 10.0)));
        assert_eq!(d.quantile(0.5), Some(2.0), "all ten new samples are over 2 s");
        assert!(parse(TEXT, "missing_seconds").is_none());
    }
}
