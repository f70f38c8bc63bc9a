//! Rule evaluators: deterministic, local, microseconds per run. Each rule parses its config
//! once (compiling regexes and schemas, lowercasing needles) and then scores text chosen by
//! `text::select` (the `field` / `reference_field` options).
//!
//! | type | score |
//! |---|---|
//! | `keywords` | fraction of the keywords present |
//! | `forbidden` | 1 if no phrase is present, else 0 |
//! | `length` | 1 if the length in chars or words is within bounds, else 0 |
//! | `regex` | 1 if the pattern matches (`mode: "match"`) or does not (`"no_match"`) |
//! | `json` | 1 if the output is valid JSON |
//! | `json_schema` | 1 if the output conforms to the schema |
//! | `exact_match` | 1 if the output equals the reference after normalization |
//! | `fuzzy_match` | similarity to the reference in 0..1, or 0/1 against a `threshold` |
//! | `numeric_claims` | fraction of the reference's amounts, percentages, durations present |

use std::borrow::Cow;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::claims::{self, Claim, ClaimKind};
use super::config::{ConfigError, Fields};
use super::text::{self, quote, quote_list, truncate};
use super::{Failure, ScoreInput, Scored};

/// A parsed rule.
pub(crate) trait Rule: Send + Sync {
    fn score(&self, input: &ScoreInput) -> Result<Scored, Failure>;

    /// Whether it compares against the example's reference outputs.
    fn needs_reference(&self) -> bool {
        false
    }
}

/// Longest regex pattern accepted, in bytes.
pub const MAX_PATTERN_BYTES: usize = 4096;
/// Compiled-regex size limits: the `regex` crate matches in linear time, so these bound memory
/// (and compile time) for patterns such as `\w{1000}{1000}`.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_DFA_SIZE_LIMIT: usize = 2 << 20;
/// Default and largest `max_chars` for fuzzy matching: Levenshtein is quadratic.
const FUZZY_DEFAULT_MAX_CHARS: u64 = 5_000;
const FUZZY_LIMIT_MAX_CHARS: u64 = 100_000;

pub(crate) fn parse(kind: &str, f: &mut Fields<'_>) -> Result<Box<dyn Rule>, ConfigError> {
    Ok(match kind {
        "keywords" => Box::new(Keywords::parse(f)?),
        "forbidden" => Box::new(Forbidden::parse(f)?),
        "length" => Box::new(Length::parse(f)?),
        "regex" => Box::new(RegexRule::parse(f)?),
        "json" => Box::new(Json::parse(f)?),
        "json_schema" => Box::new(JsonSchema::parse(f)?),
        "exact_match" => Box::new(ExactMatch::parse(f)?),
        "fuzzy_match" => Box::new(FuzzyMatch::parse(f)?),
        "numeric_claims" => Box::new(NumericClaims::parse(f)?),
        other => unreachable!("not a rule type: {other}"),
    })
}

fn field_opt(f: &mut Fields<'_>, name: &'static str) -> Result<Option<String>, ConfigError> {
    Ok(f.opt_str(name)?.map(str::to_owned))
}

fn output<'i>(input: &'i ScoreInput, field: &Option<String>) -> Result<Cow<'i, str>, Failure> {
    text::output_text(&input.outputs, field.as_deref()).map_err(Failure::input)
}

fn reference<'i>(input: &'i ScoreInput, field: &Option<String>) -> Result<Cow<'i, str>, Failure> {
    text::reference_text(input.reference.as_ref(), field.as_deref()).map_err(Failure::input)
}

fn pass(ok: bool) -> f64 {
    if ok {
        1.0
    } else {
        0.0
    }
}

/// Phrases searched for in text, optionally case-insensitively and as whole words.
struct Needles {
    phrases: Vec<String>,
    /// `phrases`, lowercased unless case-sensitive.
    needles: Vec<String>,
    case_sensitive: bool,
    whole_words: bool,
}

impl Needles {
    fn parse(f: &mut Fields<'_>, name: &'static str) -> Result<Self, ConfigError> {
        let phrases = f.req_str_list(name)?;
        let case_sensitive = f.opt_bool("case_sensitive", false)?;
        let whole_words = f.opt_bool("whole_words", false)?;
        let needles = phrases.iter().map(|p| if case_sensitive { p.clone() } else { p.to_lowercase() }).collect();
        Ok(Self { phrases, needles, case_sensitive, whole_words })
    }

    /// For each phrase, whether it occurs in `hay`.
    fn present(&self, hay: &str) -> Vec<bool> {
        let hay: Cow<'_, str> = if self.case_sensitive { Cow::Borrowed(hay) } else { Cow::Owned(hay.to_lowercase()) };
        self.needles.iter().map(|n| if self.whole_words { contains_word(&hay, n) } else { hay.contains(n.as_str()) }).collect()
    }
}

/// Whether `needle` occurs in `hay` with no letter or digit right before or after it.
fn contains_word(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(at, m)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + m.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

struct Keywords {
    field: Option<String>,
    words: Needles,
}

impl Keywords {
    fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(Self { words: Needles::parse(f, "keywords")?, field: field_opt(f, "field")? })
    }
}

impl Rule for Keywords {
    fn score(&self, input: &ScoreInput) -> Result<Scored, Failure> {
        let text = output(input, &self.field)?;
        let present = self.words.present(&text);
        let missing: Vec<&str> = self.words.phrases.iter().zip(&present).filter(|(_, p)| !**p).map(|(k, _)| k.as_str()).collect();
        let n = present.len();
        let found = n - missing.len();
        let comment = if missing.is_empty() {
            format!("all {n} keywords present")
        } else {
            format!("{found}/{n} keywords present; missing: {}", quote_list(missing))
        };
        Ok(Scored { score: found as f64 / n as f64, comment })
    }
}

struct Forbidden {
    field: Option<String>,
    phrases: Needles,
}

impl Forbidden {
    fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(Self { phrases: Needles::parse(f, "phrases")?, field: field_opt(f, "field")? })
    }
}

impl Rule for Forbidden {
    fn score(&self, input: &ScoreInput) -> Result<Scored, Failure> {
        let text = output(input, &self.field)?;
        let present = self.phrases.present(&text);
        let found: Vec<&str> = self.phrases.phrases.iter().zip(&present).filter(|(_, p)| **p).map(|(k, _)| k.as_str()).collect();
        let comment = if found.is_empty() {
            format!("none of the {} forbidden phrases present", present.len())
        } else {
            format!("forbidden phrases present: {}", quote_list(found.iter().copied()))
        };
        Ok(Scored { score: pass(found.is_empty()), comment })
    }
}

struct Length {
    field: Option<String>,
    words: bool,
    min: Option<u64>,
    max: Option<u64>,
}

impl Length {
    fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        let words = f.opt_choice("unit", &["chars", "words"], "chars")? == "words";
        let (min, max) = (f.opt_u64("min")?, f.opt_u64("max")?);
        match (min, max) {
            (None, None) => return Err(ConfigError::field("min", "give `min`, `max` or both")),
            (Some(lo), Some(hi)) if lo > hi => return Err(ConfigError::field("max", format!("must be at least `min` ({lo})"))),
            _ => {}
        }
        Ok(Self { field: field_opt(f, "field")?, words, min, max })
    }
}

impl Rule for Length {
    fn score(&self, input: &ScoreInput) -> Result<Scored, Failure> {
        let text = output(input, &self.field)?;
        let (n, unit) = if self.words { (text.split_whitespace().count() as u64, "words") } else { (text.chars().count() as u64, "chars") };
        let bounds = match (self.min, self.max) {
            (Some(lo), Some(hi)) => format!("{lo}..={hi}"),
            (Some(lo), None) => format!("at least {lo}"),
            (None, Some(hi)) => format!("at most {hi}"),
            (None, None) => unreachable!("checked at parse"),
        };
        let (ok, comment) = if self.min.is_some_and(|lo| n < lo) {
            (false, format!("{n} {unit}: fewer than the minimum ({bounds})"))
        } else if self.max.is_some_and(|hi| n > hi) {
            (false, format!("{n} {unit}: more than the maximum ({bounds})"))
        } else {
            (true, format!("{n} {unit}: within bounds ({bounds})"))
        };
        Ok(Scored { score: pass(ok), comment })
    }
}

struct RegexRule {
    field: Option<String>,
    regex: Regex,
    must_match: bool,
}

impl RegexRule {
    fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        let pattern = f.req_str("pattern")?;
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(ConfigError::field("pattern", format!("longer than {MAX_PATTERN_BYTES} bytes")));
        }
        let must_match = f.opt_choice("mode", &["match", "no_match"], "match")? == "match";
        let case_insensitive = f.opt_bool("case_insensitive", false)?;
        let regex = RegexBuilder::new(pattern)
            .case_insensitive(case_insensitive)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| ConfigError::field("pattern", format!("not a valid regex: {e}")))?;
        Ok(Self { field: field_opt(f, "field")?, regex, must_match })
    }
}

impl Rule for RegexRule {
    fn score(&self, input: &ScoreInput) -> Result<Scored, Failure> {
        let text = output(input, &self.field)?;
        let pattern = truncate(self.regex.as_str(), 80);
        let found = self.regex.find(&text);
        let at = |m: regex::Match<'_>| format!("{} at char {}", quote(m.as_str()), text[..m.start()].chars().count());
        let comment = match (found, self.must_match) {
            (Some(m), true) => format!("matches /{pattern}/: {}", at(m)),
            (None, true) => format!("does not match /{pattern}/"),
            (Some(m), false) => format!("must not match /{pattern}/ but does: {}", at(m)),
            (None, false) => format!("does not match /{pattern}/, as required"),
        };
        Ok(Scored { score: pass(found.is_some() == self.must_match), comment })
    }
}

/// The output as a JSON document: a text output is parsed (after stripping a code fence if
/// asked); a structured output already is one.
fn as_document(selected: &Value, strip_fences: bool) -> Result<Cow<'_, Value>, String> {
    match selected {
        Value::String(s) => {
            let s = if strip_fences { text::strip_fence(s) } else { s };
            serde_json::from_str(s).map(Cow::Owned).map_err(|e| format!("not valid JSON: {e}"))
        }
        other => Ok(Cow::Borrowed(other)),
    }
}

struct Json {
    field: Option<String>,
    strip_fences: bool,
}

impl Json {
    fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(Self { field: field_opt(f, "field")?, strip_fences: f.opt_bool("strip_fences", false)? })
    }
}

impl Rule for Json {
    fn score(&self, input: &ScoreInput) -> Result<Scored, Failure> {
        let selected = text::select(&input.outputs, self.field.as_deref(), "outputs").map_err(Failure::input)?;
        Ok(match as_document(selected, self.strip_fences) {
            Ok(doc) if !selected.is_string() => {
                Scored { score: 1.0, comment: format!("the output is already structured JSON ({})", super::config::type_name(&doc)) }
            }
            Ok(doc) => Scored { score: 1.0, comment: format!("valid JSON ({})", super::config::type_name(&doc)) },
            Err(e) => Scored { score: 0.0, comment: e },
        })
    }
}

struct JsonSchema {
    field: Option<String>,
    strip_fences: bool,
    validator: jsonschema::Validator,
}

impl JsonSchema {
    fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        let schema = f.req("schema")?;
        if !schema.is_object() && !schema.is_boolean() {
            return Err(super::config::expected("schema", "a JSON Schema (an object or a boolean)", schema));
        }
        let validator =
            jsonschema::validator_for(schema).map_err(|e| ConfigError::field("schema", format!("not a valid JSON Schema: {e}")))?;
        Ok(Self { field: field_opt(f, "field")?, strip_fences: f.opt_bool("strip_fences", false)?, validator })
    }
}

impl Rule for JsonSchema {
    fn score(&self, input: &ScoreInput) -> Result<Scored, Failure> {
        let selected = text::select(&input.outputs, self.field.as_deref(), "outputs").map_err(Failure::input)?;
        let doc = match as_document(selected, self.strip_fences) {
            Ok(doc) => doc,
            Err(e) => return Ok(Scored { score: 0.0, comment: e }),
        };
        const SHOWN: usize = 3;
        let mut errors = Vec::new();
        let mut total = 0;
        for e in self.validator.iter_errors(&doc) {
            total += 1;
            if errors.len() < SHOWN {
                let path = e.instance_path().to_string();
                let at = if path.is_empty() { "at the root".to_owned() } else { format!("at {path}") };
                errors.push(format!("{at}: {}", truncate(&e.to_string(), 200)));
            }
        }
        Ok(if total == 0 {
            Scored { score: 1.0, comment: "conforms to the schema".into() }
        } else {
            let more = if total > SHOWN { format!(" (and {} more)", total - SHOWN) } else { String::new() };
            Scored { score: 0.0, comment: format!("does not conform to the schema: {}{more}", errors.join("; ")) }
        })
    }
}

struct ExactMatch {
    field: Option<String>,
    reference_field: Option<String>,
    trim: bool,
    case_sensitive: bool,
    collapse_whitespace: bool,
}

impl ExactMatch {
    fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            field: field_opt(f, "field")?,
            reference_field: field_opt(f, "reference_field")?,
            trim: f.opt_bool("trim", true)?,
            case_sensitive: f.opt_bool("case_sensitive", true)?,
            collapse_whitespace: f.opt_bool("collapse_whitespace", false)?,
        })
    }

    fn norm<'s>(&self, s: &'s str) -> Cow<'s, str> {
        let s = if self.trim { s.trim() } else { s };
        if self.case_sensitive && !self.collapse_whitespace {
            Cow::Borrowed(s)
        } else {
            Cow::Owned(text::normalize(s, !self.case_sensitive, self.collapse_whitespace))
        }
    }
}

impl Rule for ExactMatch {
    fn needs_reference(&self) -> bool {
        true
    }

    fn score(&self, input: &ScoreInput) -> Result<Scored, Failure> {
        let out = text::select(&input.outputs, self.field.as_deref(), "outputs").map_err(Failure::input)?;
        let reference = match input.reference.as_ref() {
            None | Some(Value::Null) => return Err(Failure::input(text::reference_text(None, None).unwrap_err())),
            Some(r) => text::select(r, self.reference_field.as_deref(), "the reference").map_err(Failure::input)?,
        };
        // Structured outputs compare as JSON values, so key order and spacing do not matter.
        if !out.is_string() && !reference.is_string() {
            let eq = out == reference;
            let comment = if eq { "equals the reference (as JSON)" } else { "differs from the reference (as JSON)" };
            return Ok(Scored { score: pass(eq), comment: comment.into() });
        }
        let (o, r) = (text::as_text(out), text::as_text(reference));
        let (o, r) = (self.norm(&o), self.norm(&r));
        if o == r {
            return Ok(Scored { score: 1.0, comment: "matches the reference".into() });
        }
        let at = o.chars().zip(r.chars()).take_while(|(a, b)| a == b).count();
        let tail = |s: &str| s.chars().skip(at).take(40).collect::<String>();
        let comment = format!("differs from the reference at char {at}: expected {}, got {}", quote(&tail(&r)), quote(&tail(&o)));
        Ok(Scored { score: 0.0, comment })
    }
}

struct FuzzyMatch {
    field: Option<String>,
    reference_field: Option<String>,
    token_set: bool,
    threshold: Option<f64>,
    case_sensitive: bool,
    max_chars: usize,
}

impl FuzzyMatch {
    fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        let token_set = f.opt_choice("method", &["levenshtein", "token_set"], "levenshtein")? == "token_set";
        let threshold = f.opt_f64("threshold")?;
        if threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err(ConfigError::field("threshold", "must be between 0 and 1"));
        }
        let max_chars = f.opt_u64("max_chars")?.unwrap_or(FUZZY_DEFAULT_MAX_CHARS);
        if max_chars == 0 || max_chars > FUZZY_LIMIT_MAX_CHARS {
            return Err(ConfigError::field("max_chars", format!("must be 1 to {FUZZY_LIMIT_MAX_CHARS}")));
        }
        Ok(Self {
            field: field_opt(f, "field")?,
            reference_field: field_opt(f, "reference_field")?,
            token_set,
            threshold,
            case_sensitive: f.opt_bool("case_sensitive", false)?,
            max_chars: max_chars as usize,
        })
    }
}

/// Token-set similarity (as fuzzywuzzy's `token_set_ratio`, over normalized Levenshtein):
/// insensitive to word order and repetition; 1 when one side's words are a subset of the other's.
fn token_set_similarity(a: &str, b: &str) -> f64 {
    use std::collections::BTreeSet;
    let tokens = |s: &str| s.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_owned).collect::<BTreeSet<_>>();
    let (ta, tb) = (tokens(a), tokens(b));
    if ta.is_empty() && tb.is_empty() {
        return 1.0;
    }
    let join = |it: &mut dyn Iterator<Item = &String>| it.map(String::as_str).collect::<Vec<_>>().join(" ");
    let common = join(&mut ta.intersection(&tb));
    let with = |rest: String| if common.is_empty() { rest } else { format!("{common} {rest}").trim_end().to_owned() };
    let sa = with(join(&mut ta.difference(&tb)));
    let sb = with(join(&mut tb.difference(&ta)));
    let sim = strsim::normalized_levenshtein;
    let mut best = sim(&sa, &sb);
    if !common.is_empty() {
        best = best.max(sim(&common, &sa)).max(sim(&common, &sb));
    }
    best
}

impl Rule for FuzzyMatch {
    fn needs_reference(&self) -> bool {
        true
    }

    fn score(&self, input: &ScoreInput) -> Result<Scored, Failure> {
        let (o, r) = (output(input, &self.field)?, reference(input, &self.reference_field)?);
        let (o, r) = (text::normalize(&o, !self.case_sensitive, true), text::normalize(&r, !self.case_sensitive, true));
        let longest = o.chars().count().max(r.chars().count());
        if longest > self.max_chars {
            return Err(Failure::input(format!(
                "text of {longest} chars is longer than max_chars ({}); fuzzy matching is quadratic in length",
                self.max_chars
            )));
        }
        let (sim, method) = if self.token_set {
            (token_set_similarity(&o, &r), "token-set similarity")
        } else {
            (strsim::normalized_levenshtein(&o, &r), "normalized Levenshtein similarity")
        };
        // Scores are stored to 4 decimals.
        let sim = (sim * 1e4).round() / 1e4;
        Ok(match self.threshold {
            None => Scored { score: sim, comment: format!("{method} to the reference: {sim}") },
            Some(t) => {
                let ok = sim >= t;
                let cmp = if ok { "at least" } else { "below" };
                Scored { score: pass(ok), comment: format!("{method} to the reference: {sim}, {cmp} the threshold {t}") }
            }
        })
    }
}

struct NumericClaims {
    field: Option<String>,
    reference_field: Option<String>,
    kinds: Vec<ClaimKind>,
    fail_without_claims: bool,
}

impl NumericClaims {
    fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        let kinds = match f.opt("kinds") {
            None => vec![ClaimKind::Money, ClaimKind::Percent, ClaimKind::Duration],
            Some(_) => f
                .req_str_list("kinds")?
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    ClaimKind::from_name(k).ok_or_else(|| {
                        ConfigError::field(
                            format!("kinds[{i}]"),
                            format!("unknown kind {k:?}; expected one of {}", ClaimKind::NAMES.join(", ")),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Self {
            field: field_opt(f, "field")?,
            reference_field: field_opt(f, "reference_field")?,
            kinds,
            fail_without_claims: f.opt_choice("on_no_claims", &["pass", "error"], "pass")? == "error",
        })
    }
}

impl Rule for NumericClaims {
    fn needs_reference(&self) -> bool {
        true
    }

    fn score(&self, input: &ScoreInput) -> Result<Scored, Failure> {
        let r = reference(input, &self.reference_field)?;
        let mut expected: Vec<Claim> = Vec::new();
        for c in claims::extract(&r, &self.kinds) {
            if !expected.iter().any(|e| e.matches(&c) && c.matches(e)) {
                expected.push(c);
            }
        }
        if expected.is_empty() {
            let msg = "the reference states no amounts, percentages or durations";
            return if self.fail_without_claims {
                Err(Failure::input(format!("{msg} (on_no_claims: error)")))
            } else {
                Ok(Scored { score: 1.0, comment: format!("{msg}: nothing to check") })
            };
        }
        let o = output(input, &self.field)?;
        // Every kind is looked for in the output, so a bare number in the reference can match a
        // typed claim there.
        let stated = claims::extract(&o, &[ClaimKind::Money, ClaimKind::Percent, ClaimKind::Duration, ClaimKind::Number]);
        let missing: Vec<&str> = expected.iter().filter(|e| !stated.iter().any(|s| e.matches(s))).map(|e| e.text.as_str()).collect();
        let n = expected.len();
        let found = n - missing.len();
        let comment = if missing.is_empty() {
            format!("all {n} numeric claims of the reference present: {}", quote_list(expected.iter().map(|e| e.text.as_str())))
        } else {
            format!("{found}/{n} numeric claims of the reference present; missing: {}", quote_list(missing))
        };
        Ok(Scored { score: found as f64 / n as f64, comment })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words() {
        assert!(contains_word("the cat sat", "cat"));
        assert!(!contains_word("category", "cat"));
        assert!(contains_word("use c++ here", "c++"));
        assert!(contains_word("cat", "cat"));
    }

    #[test]
    fn token_set_ignores_order_and_subsets() {
        assert_eq!(token_set_similarity("refund within 30 days", "30 days within refund"), 1.0);
        assert_eq!(token_set_similarity("refund within 30 days", "refund within 30 days, no questions asked"), 1.0);
        assert!(token_set_similarity("apples", "oranges") < 0.5);
        assert_eq!(token_set_similarity("", ""), 1.0);
    }
}
