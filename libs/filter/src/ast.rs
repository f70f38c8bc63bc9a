//! The typed syntax tree of a filter, and its canonical text form.
//!
//! The parser checks every call against the field it names, so a tree only holds
//! combinations that make sense (no `gt(tags, 1)`), and literals are already converted to
//! the field's type: UUIDs, timestamps, durations in seconds.

use std::fmt;

use serde_json::{Map, Value};
use sextant_core::{RunId, Timestamp};

/// A parsed filter expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `and(a, b, …)`: every argument holds. Family comparisons among the direct arguments
    /// are paired: they must hold for the same feedback entry / metadata entry / input or
    /// output key (see the crate docs).
    And(Vec<Expr>),
    /// `or(a, b, …)`: some argument holds.
    Or(Vec<Expr>),
    /// `not(a)`.
    Not(Box<Expr>),
    /// `eq|neq|gt|gte|lt|lte(field, value)`.
    Cmp { op: CmpOp, field: Field, value: Literal },
    /// `in(field, [v, …])`: the field equals one of the values. On `tags`: some tag is one of them.
    In { field: Field, values: Vec<Literal> },
    /// `has(tags, "t")`: the run carries tag `t`.
    HasTag(String),
    /// `has(metadata, '{"k": v}')`: every given key is present at the top level of the
    /// document with an equal value.
    HasEntries { doc: Doc, entries: Map<String, Value> },
    /// `exists(metadata, "k")`: the document has top-level key `k` (whatever its value).
    Exists { doc: Doc, key: String },
    /// `search("text")` or `search(field, "text")`: case-insensitive substring match. Without
    /// a field: name, error, tags, metadata, inputs and outputs.
    Search { field: Option<Field>, text: String },
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CmpOp {
    pub fn name(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Neq => "neq",
            Self::Gt => "gt",
            Self::Gte => "gte",
            Self::Lt => "lt",
            Self::Lte => "lte",
        }
    }

    /// Whether this is an ordering (`gt`, `gte`, `lt`, `lte`) rather than (in)equality.
    pub fn is_ordering(self) -> bool {
        !matches!(self, Self::Eq | Self::Neq)
    }
}

/// A literal value, already converted to the type of the field it is compared with.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    /// Always finite. Durations (`"1.5s"`) are stored here in seconds; boolean feedback
    /// scores as 1 or 0.
    Number(f64),
    String(String),
    /// A UUID compared with an id field. `RunId` is only the carrier: `session_id` and
    /// `reference_example_id` values are UUIDs of projects and examples.
    Id(RunId),
    /// A point in time compared with `start_time` or `end_time`.
    Time(Timestamp),
}

/// A field a filter can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `name`, `run_type`, `status`, `error`, `thread_id`.
    Text(TextField),
    /// `id`, `trace_id`, `parent_run_id`, `session_id`, `reference_example_id`.
    Id(IdField),
    /// `start_time`, `end_time`.
    Time(TimeField),
    /// Latencies, token counts, costs, `execution_order`.
    Number(NumberField),
    /// `is_root`.
    IsRoot,
    /// `tags` (only with `has`, `in` and `search`).
    Tags,
    /// `feedback_key`, `feedback_score`, `feedback_value`, `feedback_source`.
    Feedback(FeedbackField),
    /// `metadata_key`, `input_key`, `output_key`: a top-level key of the document.
    Key(Doc),
    /// `metadata_value`, `input_value`, `output_value`: a top-level value of the document.
    Value(Doc),
    /// `metadata`, `inputs`, `outputs` as a whole (only with `has`, `exists` and `search`).
    Doc(Doc),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextField {
    Name,
    RunType,
    /// `"success"`, `"error"` or `"pending"`.
    Status,
    /// The error text; absent (or empty) when the run did not fail.
    Error,
    /// The run's thread (LangSmith's rule): `metadata.thread_id`, else `metadata.session_id`,
    /// else `metadata.conversation_id` (see [`crate::thread_id`]).
    ThreadId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdField {
    Id,
    TraceId,
    ParentRunId,
    SessionId,
    ReferenceExampleId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeField {
    StartTime,
    EndTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NumberField {
    /// `end_time - start_time`, in seconds.
    Latency,
    /// `first_token_time - start_time`, in seconds.
    FirstTokenTime,
    TotalTokens,
    PromptTokens,
    CompletionTokens,
    TotalCost,
    PromptCost,
    CompletionCost,
    /// 1 for a root run, 2 for any other.
    ExecutionOrder,
}

impl NumberField {
    /// Whether string literals are read as durations (`"200ms"`, `"1.5s"`, `"2m"`).
    pub fn is_duration(self) -> bool {
        matches!(self, Self::Latency | Self::FirstTokenTime)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeedbackField {
    Key,
    /// Numeric score; boolean scores count as 1 and 0.
    Score,
    Value,
    /// The feedback source type, e.g. `"api"` or `"model"`.
    Source,
}

/// A JSON document of a run whose top-level entries filters can look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Doc {
    /// `extra.metadata`.
    Metadata,
    Inputs,
    Outputs,
}

/// Every field name, with the field it denotes.
const FIELDS: &[(&str, Field)] = &[
    ("id", Field::Id(IdField::Id)),
    ("name", Field::Text(TextField::Name)),
    ("run_type", Field::Text(TextField::RunType)),
    ("status", Field::Text(TextField::Status)),
    ("start_time", Field::Time(TimeField::StartTime)),
    ("end_time", Field::Time(TimeField::EndTime)),
    ("latency", Field::Number(NumberField::Latency)),
    ("first_token_time", Field::Number(NumberField::FirstTokenTime)),
    ("total_tokens", Field::Number(NumberField::TotalTokens)),
    ("prompt_tokens", Field::Number(NumberField::PromptTokens)),
    ("completion_tokens", Field::Number(NumberField::CompletionTokens)),
    ("total_cost", Field::Number(NumberField::TotalCost)),
    ("prompt_cost", Field::Number(NumberField::PromptCost)),
    ("completion_cost", Field::Number(NumberField::CompletionCost)),
    ("error", Field::Text(TextField::Error)),
    ("thread_id", Field::Text(TextField::ThreadId)),
    ("tags", Field::Tags),
    ("trace_id", Field::Id(IdField::TraceId)),
    ("parent_run_id", Field::Id(IdField::ParentRunId)),
    ("session_id", Field::Id(IdField::SessionId)),
    ("reference_example_id", Field::Id(IdField::ReferenceExampleId)),
    ("is_root", Field::IsRoot),
    ("execution_order", Field::Number(NumberField::ExecutionOrder)),
    ("feedback_key", Field::Feedback(FeedbackField::Key)),
    ("feedback_score", Field::Feedback(FeedbackField::Score)),
    ("feedback_value", Field::Feedback(FeedbackField::Value)),
    ("feedback_source", Field::Feedback(FeedbackField::Source)),
    ("metadata_key", Field::Key(Doc::Metadata)),
    ("metadata_value", Field::Value(Doc::Metadata)),
    ("input_key", Field::Key(Doc::Inputs)),
    ("input_value", Field::Value(Doc::Inputs)),
    ("output_key", Field::Key(Doc::Outputs)),
    ("output_value", Field::Value(Doc::Outputs)),
    ("metadata", Field::Doc(Doc::Metadata)),
    ("inputs", Field::Doc(Doc::Inputs)),
    ("outputs", Field::Doc(Doc::Outputs)),
];

impl Field {
    /// The field called `name` in filters (case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        FIELDS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The name filters use for this field.
    pub fn name(self) -> &'static str {
        FIELDS.iter().find(|(_, f)| *f == self).map(|(n, _)| *n).expect("every field has a name")
    }

    /// All field names, for error messages and documentation.
    pub fn names() -> impl Iterator<Item = &'static str> {
        FIELDS.iter().map(|(n, _)| *n)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Doc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Field::Doc(*self).fmt(f)
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Number(n) => write_number(f, *n),
            Self::String(s) => write_quoted(f, s),
            Self::Id(id) => write!(f, "\"{id}\""),
            Self::Time(t) => write!(f, "\"{}\"", t.to_iso()),
        }
    }
}

/// Writes a finite number so that the lexer reads back the same `f64`: whole numbers
/// without a fraction, others in Rust's shortest round-trip form (`0.4`, `1e300`).
fn write_number(f: &mut fmt::Formatter<'_>, n: f64) -> fmt::Result {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        write!(f, "{}", n as i64)
    } else {
        write!(f, "{n:?}")
    }
}

/// Writes a double-quoted string with the escapes the lexer understands.
pub(crate) fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Canonical form: lowercase function names, `, ` between arguments, double-quoted strings,
/// durations in seconds, ids and times as strings. Parsing it gives back the same tree.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, items: &[impl fmt::Display]) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                item.fmt(f)?;
            }
            Ok(())
        }
        match self {
            Self::And(args) => {
                f.write_str("and(")?;
                list(f, args)?;
                f.write_str(")")
            }
            Self::Or(args) => {
                f.write_str("or(")?;
                list(f, args)?;
                f.write_str(")")
            }
            Self::Not(arg) => write!(f, "not({arg})"),
            Self::Cmp { op, field, value } => write!(f, "{}({field}, {value})", op.name()),
            Self::In { field, values } => {
                write!(f, "in({field}, [")?;
                list(f, values)?;
                f.write_str("])")
            }
            Self::HasTag(tag) => {
                f.write_str("has(tags, ")?;
                write_quoted(f, tag)?;
                f.write_str(")")
            }
            Self::HasEntries { doc, entries } => {
                write!(f, "has({doc}, ")?;
                write_quoted(f, &Value::Object(entries.clone()).to_string())?;
                f.write_str(")")
            }
            Self::Exists { doc, key } => {
                write!(f, "exists({doc}, ")?;
                write_quoted(f, key)?;
                f.write_str(")")
            }
            Self::Search { field, text } => {
                f.write_str("search(")?;
                if let Some(field) = field {
                    write!(f, "{field}, ")?;
                }
                write_quoted(f, text)?;
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_round_trip() {
        for name in Field::names() {
            assert_eq!(Field::from_name(name).unwrap().name(), name);
        }
        assert_eq!(Field::names().count(), 36);
        assert_eq!(Field::from_name("Name"), None);
    }

    #[test]
    fn literals_print_canonically() {
        let show = |l: Literal| l.to_string();
        assert_eq!(show(Literal::Number(5.0)), "5");
        assert_eq!(show(Literal::Number(-0.25)), "-0.25");
        assert_eq!(show(Literal::Number(1e300)), "1e300");
        assert_eq!(show(Literal::String("a\"b\\c\n\u{1}é".into())), r#""a\"b\\c\n\u0001é""#);
        assert_eq!(show(Literal::Time(Timestamp(1_500_000))), "\"1970-01-01T00:00:01.500000\"");
    }
}
