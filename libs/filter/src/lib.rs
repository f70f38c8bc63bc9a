//! The LangSmith run filter language (`filter`, `trace_filter` and `tree_filter` of
//! `POST /runs/query`): parsing to a typed tree, evaluation against one run, and the hints
//! storage adapters use to narrow a scan. No I/O lives here; storage reaches runs through
//! the [`Record`] trait.
//!
//! ```text
//! and(eq(run_type, "llm"), gt(latency, "1.5s"), has(tags, 'prod'),
//!     and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4)))
//! ```
//!
//! # Semantics
//!
//! * Comparators `eq neq gt gte lt lte`, `in(field, [..])`, `has(tags, "t")`,
//!   `has(metadata, '{"k": "v"}')`, `exists(metadata, "k")`, `search([field,] "text")`,
//!   `and or not`. Function names and `null`/`true`/`false` are case-insensitive (`None` is
//!   read as `null`).
//! * A missing value fails `eq`, `gt`, `gte`, `lt`, `lte` and `in`, and passes `neq`;
//!   `eq(x, null)` holds exactly when `x` is missing. `neq` is always the negation of `eq`.
//! * Durations (`"200ms"`, `"1.5s"`, `"2m"`, `"1h"`) are accepted for `latency` and
//!   `first_token_time`; `start_time` / `end_time` take ISO 8601 strings.
//! * **Pairing.** The feedback fields range over the run's feedback entries, and
//!   `metadata_*`, `input_*`, `output_*` over the top-level entries of the metadata, inputs and
//!   outputs objects. Among the direct arguments of one `and(...)`, the comparisons on one such
//!   family must hold for the same entry: `and(eq(feedback_key, "user_rating"),
//!   lt(feedback_score, 0.4))` means "has a user_rating feedback scored below 0.4". An
//!   `or(...)` of comparisons on a single family joins the pairing as one predicate. Elsewhere
//!   a family comparison means "some entry satisfies it".
//! * `neq(feedback_key | metadata_key | input_key | output_key, "k")` means "no entry has
//!   key k" wherever it appears, so `and(neq(metadata_key, "k"))` is "no key k". Other
//!   negations pair as usual: `and(eq(metadata_key, "k"), neq(metadata_value, "v"))` is "k is
//!   present with a value other than v".
//! * `thread_id` is the run's thread as LangSmith defines it: `metadata.thread_id`, else
//!   `metadata.session_id`, else `metadata.conversation_id` ([`thread_id`]).
//! * A filter looks at one run only. `trace_filter` is this crate's filter evaluated on the
//!   trace's root; `tree_filter` holds when it matches some run of the trace.

mod ast;
mod eval;
mod hints;
mod lexer;
mod parser;
mod record;

use std::fmt;
use std::str::FromStr;

pub use ast::{CmpOp, Doc, Expr, FeedbackField, Field, IdField, Literal, NumberField, TextField, TimeField};
pub use eval::Needs;
pub use hints::Hint;
pub use parser::{MAX_DEPTH, MAX_FILTER_LEN};
pub use record::{score_from_json, thread_id, FeedbackRow, Record, RunView, THREAD_KEYS};

use eval::Plan;

/// Why a filter was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at position {position}: {message}")]
pub struct ParseError {
    /// Byte offset (0-based) in the filter text where the problem is.
    pub position: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(position: usize, message: impl Into<String>) -> Self {
        Self { position, message: message.into() }
    }
}

/// A parsed, checked filter, ready to evaluate.
#[derive(Clone, Debug)]
pub struct Filter {
    expr: Expr,
    plan: Plan,
}

/// Parses a filter. Inputs longer than [`MAX_FILTER_LEN`] bytes or nested deeper than
/// [`MAX_DEPTH`] are rejected; no input makes this panic.
pub fn parse(src: &str) -> Result<Filter, ParseError> {
    parser::parse_expr(src).map(Filter::new)
}

impl Filter {
    /// Wraps a tree built by hand (or taken from another filter).
    pub fn new(expr: Expr) -> Self {
        let plan = Plan::compile(&expr);
        Self { expr, plan }
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    pub fn into_expr(self) -> Expr {
        self.expr
    }

    /// Whether the record satisfies the filter.
    /// Whether a stored run with this feedback matches.
    pub fn matches_run(&self, run: &sextant_core::Run, feedback: &[sextant_core::Feedback]) -> bool {
        let rows: Vec<FeedbackRow> = feedback.iter().map(FeedbackRow::from).collect();
        self.matches(&RunView::new(run, &rows))
    }

    pub fn matches<R: Record + ?Sized>(&self, record: &R) -> bool {
        self.plan.eval(record)
    }

    /// Which costly parts of a record evaluation may read; the others need not be loaded.
    pub fn needs(&self) -> Needs {
        Needs::of(&self.expr)
    }

    /// Constraints an index can serve (see [`Hint`]). Always a safe over-approximation: a
    /// record that matches the filter satisfies every hint.
    pub fn hints(&self) -> Vec<Hint> {
        hints::hints(&self.expr)
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl FromStr for Filter {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// The canonical form of the filter (see [`Expr`]'s `Display`).
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

#[cfg(test)]
mod tests;
