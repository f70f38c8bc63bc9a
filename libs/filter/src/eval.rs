//! Evaluation. A parsed [`Expr`] is compiled once into a [`Plan`] that has the key/value
//! pairing of `and(...)` worked out, so evaluating a record does no analysis and no
//! allocation beyond what search needs.

use std::cmp::Ordering;

use serde_json::{Map, Value};
use sextant_core::{RunId, Timestamp};

use crate::ast::{CmpOp, Doc, Expr, FeedbackField, Field, Literal, TextField};
use crate::record::{FeedbackRow, Record};

/// Which costly parts of a record evaluating a filter may read, so callers can skip
/// loading the others. Metadata is part of the run and always available.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub feedback: bool,
    pub inputs: bool,
    pub outputs: bool,
}

impl Needs {
    fn doc(&mut self, doc: Doc) {
        match doc {
            Doc::Metadata => {}
            Doc::Inputs => self.inputs = true,
            Doc::Outputs => self.outputs = true,
        }
    }

    fn field(&mut self, field: Field) {
        match field {
            Field::Feedback(_) => self.feedback = true,
            Field::Key(doc) | Field::Value(doc) | Field::Doc(doc) => self.doc(doc),
            _ => {}
        }
    }

    pub(crate) fn of(expr: &Expr) -> Self {
        let mut needs = Self::default();
        needs.visit(expr);
        needs
    }

    fn visit(&mut self, expr: &Expr) {
        match expr {
            Expr::And(args) | Expr::Or(args) => args.iter().for_each(|a| self.visit(a)),
            Expr::Not(arg) => self.visit(arg),
            Expr::Cmp { field, .. } | Expr::In { field, .. } => self.field(*field),
            Expr::HasTag(_) => {}
            Expr::HasEntries { doc, .. } | Expr::Exists { doc, .. } => self.doc(*doc),
            Expr::Search { field: Some(field), .. } => self.field(*field),
            Expr::Search { field: None, .. } => {
                self.inputs = true;
                self.outputs = true;
            }
        }
    }
}

/// The rows a key/value family ranges over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// The run's feedback entries.
    Feedback,
    /// The top-level entries of a JSON object.
    Doc(Doc),
}

impl Rows {
    fn of(field: Field) -> Option<Self> {
        match field {
            Field::Feedback(_) => Some(Self::Feedback),
            Field::Key(doc) | Field::Value(doc) => Some(Self::Doc(doc)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Test {
    Cmp(CmpOp, Literal),
    In(Vec<Literal>),
}

#[derive(Clone, Debug)]
pub(crate) enum RowPred {
    Test(Field, Test),
    Any(Vec<RowPred>),
}

#[derive(Clone, Debug)]
pub(crate) enum Plan {
    All(Vec<Plan>),
    Any(Vec<Plan>),
    Not(Box<Plan>),
    /// A test on a single-valued field of the record.
    Test(Field, Test),
    TagIn(Vec<String>),
    HasTag(String),
    HasEntries(Doc, Map<String, Value>),
    Exists(Doc, String),
    /// Lowercased needle.
    Search(Option<Field>, String),
    /// Some row satisfies every predicate.
    SomeRow(Rows, Vec<RowPred>),
    /// No row has this key.
    NoRowWithKey(Rows, String),
}

/// `neq(X_key, "k")`: always "no row has key k", alone or inside `and`.
fn neq_key(expr: &Expr) -> Option<(Rows, &str)> {
    match expr {
        Expr::Cmp { op: CmpOp::Neq, field: field @ (Field::Key(_) | Field::Feedback(FeedbackField::Key)), value: Literal::String(key) } => {
            Some((Rows::of(*field)?, key))
        }
        _ => None,
    }
}

/// A comparison on a family field, as a row predicate.
fn row_test(expr: &Expr) -> Option<(Rows, RowPred)> {
    if neq_key(expr).is_some() {
        return None;
    }
    match expr {
        Expr::Cmp { op, field, value } => Some((Rows::of(*field)?, RowPred::Test(*field, Test::Cmp(*op, value.clone())))),
        Expr::In { field, values } => Some((Rows::of(*field)?, RowPred::Test(*field, Test::In(values.clone())))),
        _ => None,
    }
}

/// `or(...)` of comparisons on one family only: a row predicate too.
fn row_or(expr: &Expr) -> Option<(Rows, RowPred)> {
    let Expr::Or(args) = expr else { return None };
    let mut rows = None;
    let mut preds = Vec::with_capacity(args.len());
    for arg in args {
        let (r, pred) = row_test(arg).or_else(|| row_or(arg))?;
        if rows.is_some_and(|rows| rows != r) {
            return None;
        }
        rows = Some(r);
        preds.push(pred);
    }
    Some((rows?, RowPred::Any(preds)))
}

impl Plan {
    pub(crate) fn compile(expr: &Expr) -> Self {
        match expr {
            Expr::And(args) => Self::compile_and(args),
            Expr::Or(args) => Self::Any(args.iter().map(Self::compile).collect()),
            Expr::Not(arg) => Self::Not(Box::new(Self::compile(arg))),
            _ => {
                if let Some((rows, key)) = neq_key(expr) {
                    return Self::NoRowWithKey(rows, key.to_owned());
                }
                if let Some((rows, pred)) = row_test(expr) {
                    return Self::SomeRow(rows, vec![pred]);
                }
                Self::leaf(expr)
            }
        }
    }

    /// Groups the family comparisons among `args` by family: each group must hold for one row.
    /// Record-level tests run first, as they are the cheapest.
    fn compile_and(args: &[Expr]) -> Self {
        let mut plans = Vec::new();
        let mut groups: Vec<(Rows, Vec<RowPred>)> = Vec::new();
        for arg in args {
            if let Some((rows, pred)) = row_test(arg).or_else(|| row_or(arg)) {
                match groups.iter_mut().find(|(r, _)| *r == rows) {
                    Some((_, preds)) => preds.push(pred),
                    None => groups.push((rows, vec![pred])),
                }
            } else {
                plans.push(Self::compile(arg));
            }
        }
        plans.extend(groups.into_iter().map(|(rows, preds)| Self::SomeRow(rows, preds)));
        if plans.len() == 1 {
            plans.pop().expect("one plan")
        } else {
            Self::All(plans)
        }
    }

    fn leaf(expr: &Expr) -> Self {
        match expr {
            Expr::Cmp { op, field, value } => Self::Test(*field, Test::Cmp(*op, value.clone())),
            Expr::In { field: Field::Tags, values } => Self::TagIn(
                values
                    .iter()
                    .filter_map(|v| match v {
                        Literal::String(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            Expr::In { field, values } => Self::Test(*field, Test::In(values.clone())),
            Expr::HasTag(tag) => Self::HasTag(tag.clone()),
            Expr::HasEntries { doc, entries } => Self::HasEntries(*doc, entries.clone()),
            Expr::Exists { doc, key } => Self::Exists(*doc, key.clone()),
            Expr::Search { field, text } => Self::Search(*field, text.to_lowercase()),
            Expr::And(_) | Expr::Or(_) | Expr::Not(_) => Self::compile(expr),
        }
    }

    pub(crate) fn eval<R: Record + ?Sized>(&self, r: &R) -> bool {
        match self {
            Self::All(plans) => plans.iter().all(|p| p.eval(r)),
            Self::Any(plans) => plans.iter().any(|p| p.eval(r)),
            Self::Not(plan) => !plan.eval(r),
            Self::Test(field, test) => test.holds(record_cell(r, *field)),
            Self::TagIn(tags) => r.tags().iter().any(|t| tags.contains(t)),
            Self::HasTag(tag) => r.tags().iter().any(|t| t == tag),
            Self::HasEntries(doc, entries) => match r.document(*doc) {
                Some(Value::Object(map)) => entries.iter().all(|(k, want)| map.get(k).is_some_and(|have| json_eq(have, want))),
                _ => false,
            },
            Self::Exists(doc, key) => {
                matches!(r.document(*doc), Some(Value::Object(map)) if map.contains_key(key))
            }
            Self::Search(field, needle) => search(r, *field, needle),
            Self::SomeRow(Rows::Feedback, preds) => r.feedback().iter().any(|f| preds.iter().all(|p| p.holds(Row::Feedback(f)))),
            Self::SomeRow(Rows::Doc(doc), preds) => match r.document(*doc) {
                Some(Value::Object(map)) => map.iter().any(|(k, v)| preds.iter().all(|p| p.holds(Row::Entry(k, v)))),
                _ => false,
            },
            Self::NoRowWithKey(Rows::Feedback, key) => !r.feedback().iter().any(|f| f.key == *key),
            Self::NoRowWithKey(Rows::Doc(doc), key) => !matches!(r.document(*doc), Some(Value::Object(map)) if map.contains_key(key)),
        }
    }
}

#[derive(Clone, Copy)]
enum Row<'a> {
    Feedback(&'a FeedbackRow),
    Entry(&'a str, &'a Value),
}

impl RowPred {
    fn holds(&self, row: Row<'_>) -> bool {
        match self {
            Self::Test(field, test) => test.holds(row_cell(row, *field)),
            Self::Any(preds) => preds.iter().any(|p| p.holds(row)),
        }
    }
}

/// One value taken from a record or a row, to compare with a literal.
#[derive(Clone, Copy, Debug)]
enum Cell<'a> {
    Missing,
    Str(&'a str),
    Num(f64),
    Bool(bool),
    Id(RunId),
    Time(Timestamp),
    /// An object or array: equal to no literal.
    Composite,
}

impl<'a> Cell<'a> {
    fn json(v: Option<&'a Value>) -> Self {
        match v {
            None | Some(Value::Null) => Self::Missing,
            Some(Value::String(s)) => Self::Str(s),
            Some(Value::Number(n)) => n.as_f64().map_or(Self::Missing, Self::Num),
            Some(Value::Bool(b)) => Self::Bool(*b),
            Some(Value::Array(_) | Value::Object(_)) => Self::Composite,
        }
    }
}

fn record_cell<R: Record + ?Sized>(r: &R, field: Field) -> Cell<'_> {
    match field {
        Field::Text(f) => r.text(f).map_or(Cell::Missing, Cell::Str),
        Field::Id(f) => r.id(f).map_or(Cell::Missing, Cell::Id),
        Field::Time(f) => r.time(f).map_or(Cell::Missing, Cell::Time),
        Field::Number(f) => r.number(f).filter(|n| !n.is_nan()).map_or(Cell::Missing, Cell::Num),
        Field::IsRoot => Cell::Bool(r.is_root()),
        // Rejected by the parser or handled by other plans.
        Field::Tags | Field::Feedback(_) | Field::Key(_) | Field::Value(_) | Field::Doc(_) => Cell::Missing,
    }
}

fn row_cell(row: Row<'_>, field: Field) -> Cell<'_> {
    match (row, field) {
        (Row::Feedback(f), Field::Feedback(FeedbackField::Key)) => Cell::Str(&f.key),
        (Row::Feedback(f), Field::Feedback(FeedbackField::Score)) => f.score.filter(|n| !n.is_nan()).map_or(Cell::Missing, Cell::Num),
        (Row::Feedback(f), Field::Feedback(FeedbackField::Value)) => Cell::json(f.value.as_ref()),
        (Row::Feedback(f), Field::Feedback(FeedbackField::Source)) => f.source.as_deref().map_or(Cell::Missing, Cell::Str),
        (Row::Entry(k, _), Field::Key(_)) => Cell::Str(k),
        (Row::Entry(_, v), Field::Value(_)) => Cell::json(Some(v)),
        _ => Cell::Missing,
    }
}

impl Test {
    fn holds(&self, cell: Cell<'_>) -> bool {
        match self {
            Self::Cmp(CmpOp::Eq, lit) => equals(cell, lit),
            Self::Cmp(CmpOp::Neq, lit) => !equals(cell, lit),
            Self::Cmp(op, lit) => compare(cell, lit).is_some_and(|ord| match op {
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Gte => ord != Ordering::Less,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Lte => ord != Ordering::Greater,
                CmpOp::Eq | CmpOp::Neq => unreachable!("handled above"),
            }),
            Self::In(lits) => lits.iter().any(|lit| equals(cell, lit)),
        }
    }
}

fn equals(cell: Cell<'_>, lit: &Literal) -> bool {
    match lit {
        Literal::Null => matches!(cell, Cell::Missing),
        lit => compare(cell, lit) == Some(Ordering::Equal),
    }
}

/// Orders a present value against a literal: strings as strings, numbers as numbers, and
/// across the two when the string reads as a number. `None` when they do not compare.
fn compare(cell: Cell<'_>, lit: &Literal) -> Option<Ordering> {
    match (cell, lit) {
        (Cell::Str(a), Literal::String(b)) => Some(a.cmp(b.as_str())),
        (Cell::Str(a), Literal::Number(b)) => number_in(a)?.partial_cmp(b),
        (Cell::Str(a), Literal::Bool(b)) => bool_in(a)?.partial_cmp(b),
        (Cell::Num(a), Literal::Number(b)) => a.partial_cmp(b),
        (Cell::Num(a), Literal::String(b)) => a.partial_cmp(&number_in(b)?),
        (Cell::Num(a), Literal::Bool(b)) => a.partial_cmp(&f64::from(u8::from(*b))),
        (Cell::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Cell::Bool(a), Literal::Number(b)) => f64::from(u8::from(a)).partial_cmp(b),
        (Cell::Bool(a), Literal::String(b)) => Some(a.cmp(&bool_in(b)?)),
        (Cell::Id(a), Literal::Id(b)) => Some(a.cmp(b)),
        (Cell::Time(a), Literal::Time(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn number_in(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn bool_in(s: &str) -> Option<bool> {
    match s.trim() {
        t if t.eq_ignore_ascii_case("true") => Some(true),
        t if t.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w))),
        (a, b) => a == b,
    }
}

fn search<R: Record + ?Sized>(r: &R, field: Option<Field>, needle: &str) -> bool {
    let text = |f| r.text(f).is_some_and(|t| contains_ci(t, needle));
    let tags = || r.tags().iter().any(|t| contains_ci(t, needle));
    let doc = |d| r.document(d).is_some_and(|v| json_contains(v, needle));
    match field {
        None => text(TextField::Name) || text(TextField::Error) || tags() || doc(Doc::Metadata) || doc(Doc::Inputs) || doc(Doc::Outputs),
        Some(Field::Text(f)) => text(f),
        Some(Field::Tags) => tags(),
        Some(Field::Doc(d)) => doc(d),
        Some(_) => false,
    }
}

/// Whether a string or number anywhere in `v` contains the (lowercase) needle.
fn json_contains(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => contains_ci(s, needle),
        Value::Number(n) => contains_ci(&n.to_string(), needle),
        Value::Array(items) => items.iter().any(|v| json_contains(v, needle)),
        Value::Object(map) => map.values().any(|v| json_contains(v, needle)),
        Value::Null | Value::Bool(_) => false,
    }
}

/// Case-insensitive substring test; `needle` is already lowercase.
fn contains_ci(hay: &str, needle: &str) -> bool {
    if needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        hay.to_lowercase().contains(needle)
    }
}
