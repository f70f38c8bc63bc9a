//! Reading a score out of an LLM judge's answer, robustly but never by guessing.
//!
//! Accepted, in order: a JSON object with a `score` (or `rating`, `grade`) anywhere in the
//! answer, code fences included, with its `reasoning` (or `explanation`, `rationale`, ...); a
//! labelled score in prose (`Score: 8/10`, `**Rating**: 4 out of 5`, `score of 70%`, the last
//! one wins); an answer that is only a number (`0.7`, `8/10`, `85%`). Anything else is an
//! error: a stray number in prose ("I weighed 3 aspects") is not a score, and nothing falls
//! back to a midpoint.
//!
//! Scales: a plain number is on the evaluator's `min..max` scale; `n/d` is too when `d` is
//! `max` (`8/10` on a 1..10 scale), otherwise it is the fraction `n/d` of that scale, as is a
//! percentage; `true`/`false` are `max`/`min`. The result must lie within `min..max`.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::text::{self, quote, truncate};

/// Only this much of an answer is searched, bounding the work a runaway answer can cause.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// JSON parse attempts at `{` positions.
const MAX_JSON_ATTEMPTS: usize = 64;
const SCORE_KEYS: [&str; 3] = ["score", "rating", "grade"];
const REASON_KEYS: [&str; 6] = ["reasoning", "explanation", "rationale", "reason", "justification", "comment"];

static FENCE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```").unwrap());
static LABELLED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:score|rating|grade)\b[\s*_:=]*(?:(?:is|of)\b)?[\s*_:=]*(-?\d+(?:\.\d+)?)\**\s*(?:(?:/|out\s+of)\s*(\d+(?:\.\d+)?)|(%))?",
    )
    .unwrap()
});
static BARE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(-?\d+(?:\.\d+)?)\s*(?:(?:/|out\s+of)\s*(\d+(?:\.\d+)?)|(%))?$").unwrap());

/// A score as the judge wrote it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scalar {
    Plain(f64),
    Fraction(f64, f64),
    Percent(f64),
    Bool(bool),
}

/// The score read from an answer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Answer {
    /// On the evaluator's `min..max` scale.
    pub score: f64,
    /// How it was read, for the comment (`"8/10"`, `0.7`).
    pub read: String,
    /// The judge's explanation, if it gave one.
    pub reasoning: Option<String>,
}

pub(crate) fn parse(answer: &str, min: f64, max: f64) -> Result<Answer, String> {
    let mut cut = answer.len().min(MAX_ANSWER_BYTES);
    while !answer.is_char_boundary(cut) {
        cut -= 1;
    }
    let s = answer[..cut].trim();
    let (scalar, read, reasoning) = match from_json(s)? {
        Some(found) => found,
        None => match from_prose(s) {
            Some((scalar, read)) => {
                let bare = BARE.is_match(clean_bare(s));
                (scalar, read, (!bare).then(|| s.to_owned()))
            }
            None => return Err(format!("the judge's answer has no score: {}", quote(&truncate(s, 200)))),
        },
    };
    let score = on_scale(scalar, min, max).ok_or_else(|| format!("the judge's score {read} is not a usable number"))?;
    let eps = 1e-9 * (max - min).abs().max(1.0);
    if !(min - eps..=max + eps).contains(&score) {
        return Err(format!(
            "the judge's score {read} is outside the evaluator's bounds {min}..{max} (set `min`/`max` to the judge's scale)"
        ));
    }
    Ok(Answer { score: score.clamp(min, max), read, reasoning })
}

fn on_scale(s: Scalar, min: f64, max: f64) -> Option<f64> {
    let v = match s {
        Scalar::Plain(x) => x,
        Scalar::Fraction(n, d) if d == max => n,
        Scalar::Fraction(_, d) if d <= 0.0 => return None,
        Scalar::Fraction(n, d) => min + n / d * (max - min),
        Scalar::Percent(p) => min + p / 100.0 * (max - min),
        Scalar::Bool(b) => {
            if b {
                max
            } else {
                min
            }
        }
    };
    v.is_finite().then_some(v)
}

/// The first JSON object with a score key: in code fences first, then at any `{`.
/// `Ok(None)` when there is none; an error when there is one but its score is unusable.
fn from_json(s: &str) -> Result<Option<(Scalar, String, Option<String>)>, String> {
    let fenced = FENCE.captures_iter(s).filter_map(|c| serde_json::from_str::<Value>(c[1].trim()).ok());
    let inline = s
        .match_indices('{')
        .take(MAX_JSON_ATTEMPTS)
        .filter_map(|(at, _)| serde_json::Deserializer::from_str(&s[at..]).into_iter::<Value>().next().and_then(Result::ok));
    for v in fenced.chain(inline) {
        let Value::Object(m) = &v else { continue };
        let Some(score) = SCORE_KEYS.iter().find_map(|k| m.get(*k)) else { continue };
        let scalar = match score {
            Value::Number(n) => n.as_f64().map(Scalar::Plain),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::String(t) => scalar_of(t.trim()),
            _ => None,
        }
        .ok_or_else(|| format!("the judge's JSON has an unusable score: {}", truncate(&score.to_string(), 100)))?;
        let reasoning = REASON_KEYS.iter().find_map(|k| m.get(*k)).map(|r| text::as_text(r).into_owned()).filter(|r| !r.trim().is_empty());
        return Ok(Some((scalar, score.to_string(), reasoning)));
    }
    Ok(None)
}

/// A labelled score in prose (the last one), or an answer that is only a number.
fn from_prose(s: &str) -> Option<(Scalar, String)> {
    if let Some(c) = LABELLED.captures_iter(s).last() {
        return Some((captured(&c)?, quote(c.get(0).unwrap().as_str().trim())));
    }
    let bare = clean_bare(s);
    BARE.captures(bare).and_then(|c| Some((captured(&c)?, bare.to_owned())))
}

/// A bare answer without the decoration models add: `**0.8**.`, `"7"`, `` `7` ``.
fn clean_bare(s: &str) -> &str {
    s.trim().trim_end_matches('.').trim_matches(|c| matches!(c, '*' | '"' | '\'' | '`')).trim()
}

fn scalar_of(s: &str) -> Option<Scalar> {
    BARE.captures(s).and_then(|c| captured(&c))
}

fn captured(c: &regex::Captures<'_>) -> Option<Scalar> {
    let n: f64 = c[1].parse().ok()?;
    Some(match (c.get(2), c.get(3)) {
        (Some(d), _) => Scalar::Fraction(n, d.as_str().parse().ok()?),
        (None, Some(_)) => Scalar::Percent(n),
        (None, None) => Scalar::Plain(n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(s: &str, min: f64, max: f64) -> Result<f64, String> {
        parse(s, min, max).map(|a| a.score)
    }

    #[test]
    fn json_in_fences_or_inline_with_reasoning() {
        let a = parse("Here you go:\n```json\n{\"score\": 0.8, \"reasoning\": \"mostly right\"}\n```", 0.0, 1.0).unwrap();
        assert_eq!((a.score, a.reasoning.as_deref()), (0.8, Some("mostly right")));
        let a = parse("Verdict {\"explanation\": \"fine {really}\", \"score\": \"7/10\"} done", 1.0, 10.0).unwrap();
        assert_eq!((a.score, a.reasoning.as_deref()), (7.0, Some("fine {really}")));
        assert_eq!(score("{\"score\": true}", 0.0, 1.0), Ok(1.0));
        assert_eq!(score("{\"rating\": 4}", 1.0, 5.0), Ok(4.0));
        // A JSON object without a score does not stop the search.
        assert_eq!(score("{\"note\": 1} Score: 0.5", 0.0, 1.0), Ok(0.5));
    }

    #[test]
    fn labelled_and_bare_scores() {
        assert_eq!(score("The answer is accurate.\nScore: 8/10", 1.0, 10.0), Ok(8.0));
        assert_eq!(score("**Rating**: 4 out of 5", 0.0, 5.0), Ok(4.0));
        assert_eq!(score("Final score: **0.9**", 0.0, 1.0), Ok(0.9));
        assert_eq!(score("score of 70%", 0.0, 1.0), Ok(0.7));
        assert_eq!(score("0.7", 0.0, 1.0), Ok(0.7));
        assert_eq!(score("**1**.", 0.0, 1.0), Ok(1.0));
        assert_eq!(parse("0.7", 0.0, 1.0).unwrap().reasoning, None);
        assert!(parse("Good. Score: 1", 0.0, 1.0).unwrap().reasoning.is_some());
        // The last labelled score wins (models restate the final one).
        assert_eq!(score("Initial score: 3/10. After review, score: 6/10", 0.0, 1.0), Ok(0.6));
    }

    #[test]
    fn fractions_with_another_denominator_are_fractions_of_the_scale() {
        assert_eq!(score("Score: 8/10", 0.0, 1.0), Ok(0.8));
        assert_eq!(score("Score: 4/5", 1.0, 10.0), Ok(1.0 + 0.8 * 9.0));
    }

    #[test]
    fn garbage_and_out_of_bounds_are_errors() {
        for garbage in
            ["I cannot evaluate this.", "", "I weighed 3 aspects carefully", "{\"score\": \"high\"}", "{\"score\": null}", "Score: 5/0"]
        {
            assert!(parse(garbage, 0.0, 1.0).is_err(), "{garbage:?} should not parse");
        }
        assert!(score("7", 0.0, 1.0).unwrap_err().contains("outside"));
        assert!(score("Score: 11/10", 1.0, 10.0).unwrap_err().contains("outside"));
        assert!(score("-1", 0.0, 1.0).is_err());
    }
}
