//! Index hints: constraints a storage adapter can serve from an index, read off the
//! conjunctive top level of a filter. Each hint over-approximates the filter: a record that
//! matches the filter satisfies every hint, so an adapter may use any subset of them to
//! narrow its scan and must still evaluate the filter on what it reads.

use sextant_core::{ProjectId, RunId, Timestamp};

use crate::ast::{CmpOp, Doc, Expr, Field, IdField, Literal, NumberField, TextField, TimeField};

/// A constraint every matching record satisfies. Set-valued hints list every value the
/// field may take (an empty list: nothing matches).
#[derive(Clone, Debug, PartialEq)]
pub enum Hint {
    /// The run's id is one of these.
    Ids(Vec<RunId>),
    /// The run's trace id is one of these.
    TraceIds(Vec<RunId>),
    /// The run's parent is one of these (so the run is not a root).
    ParentRunIds(Vec<RunId>),
    /// The run is in one of these projects.
    SessionIds(Vec<ProjectId>),
    /// The run's `run_type` is one of these.
    RunTypes(Vec<String>),
    /// The run's `name` is one of these.
    Names(Vec<String>),
    /// The run carries this tag.
    Tag(String),
    /// The run is (or is not) a root.
    IsRoot(bool),
    /// The run has a start time within these inclusive bounds.
    StartTime { min: Option<Timestamp>, max: Option<Timestamp> },
    /// The run's top-level `extra.metadata[key]` is the JSON string `value` (emitted only for
    /// `and(eq(metadata_key, k), eq(metadata_value, "v"))` with a non-numeric string `v`).
    MetadataPair { key: String, value: String },
}

/// What is known to hold, accumulated over a conjunction.
#[derive(Clone, Debug, Default)]
struct Known {
    ids: Option<Vec<RunId>>,
    trace_ids: Option<Vec<RunId>>,
    parent_ids: Option<Vec<RunId>>,
    session_ids: Option<Vec<RunId>>,
    run_types: Option<Vec<String>>,
    names: Option<Vec<String>>,
    tags: Vec<String>,
    is_root: Option<bool>,
    start_min: Option<Timestamp>,
    start_max: Option<Timestamp>,
    metadata_pairs: Vec<(String, String)>,
}

/// Both constraints hold: keep the values in both sets.
fn intersect<T: PartialEq>(a: &mut Option<Vec<T>>, b: Option<Vec<T>>) {
    match (a.as_mut(), b) {
        (Some(a), Some(b)) => a.retain(|x| b.contains(x)),
        (None, b) => *a = b,
        (Some(_), None) => {}
    }
}

/// One of the constraints holds: keep the values of either, if both constrain the field.
fn union<T: PartialEq>(a: Option<Vec<T>>, b: Option<Vec<T>>) -> Option<Vec<T>> {
    let (mut a, b) = (a?, b?);
    for x in b {
        if !a.contains(&x) {
            a.push(x);
        }
    }
    Some(a)
}

fn bound(a: Option<Timestamp>, b: Option<Timestamp>, pick: fn(Timestamp, Timestamp) -> Timestamp) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}

impl Known {
    fn and(&mut self, other: Self) {
        intersect(&mut self.ids, other.ids);
        intersect(&mut self.trace_ids, other.trace_ids);
        intersect(&mut self.parent_ids, other.parent_ids);
        intersect(&mut self.session_ids, other.session_ids);
        intersect(&mut self.run_types, other.run_types);
        intersect(&mut self.names, other.names);
        for t in other.tags {
            if !self.tags.contains(&t) {
                self.tags.push(t);
            }
        }
        // On a contradiction keep the first: dropping a constraint is always safe.
        self.is_root = self.is_root.or(other.is_root);
        self.start_min = bound(self.start_min, other.start_min, Timestamp::max);
        self.start_max = bound(self.start_max, other.start_max, Timestamp::min);
        for p in other.metadata_pairs {
            if !self.metadata_pairs.contains(&p) {
                self.metadata_pairs.push(p);
            }
        }
    }

    fn or(self, other: Self) -> Self {
        let both = |a: Option<Timestamp>, b: Option<Timestamp>, pick: fn(Timestamp, Timestamp) -> Timestamp| Some(pick(a?, b?));
        Self {
            ids: union(self.ids, other.ids),
            trace_ids: union(self.trace_ids, other.trace_ids),
            parent_ids: union(self.parent_ids, other.parent_ids),
            session_ids: union(self.session_ids, other.session_ids),
            run_types: union(self.run_types, other.run_types),
            names: union(self.names, other.names),
            tags: self.tags.into_iter().filter(|t| other.tags.contains(t)).collect(),
            is_root: self.is_root.filter(|r| other.is_root == Some(*r)),
            start_min: both(self.start_min, other.start_min, Timestamp::min),
            start_max: both(self.start_max, other.start_max, Timestamp::max),
            metadata_pairs: self.metadata_pairs.into_iter().filter(|p| other.metadata_pairs.contains(p)).collect(),
        }
    }

    fn of(expr: &Expr) -> Self {
        let mut k = Self::default();
        match expr {
            Expr::And(args) => {
                for arg in args {
                    k.and(Self::of(arg));
                }
                k.metadata_pairs.extend(metadata_pair(args));
            }
            Expr::Or(args) => {
                let mut branches = args.iter().map(Self::of);
                let first = branches.next().unwrap_or_default();
                k = branches.fold(first, Self::or);
            }
            Expr::Cmp { op, field, value } => k.cmp(*op, *field, value),
            Expr::In { field, values } => k.one_of(*field, values),
            Expr::HasTag(tag) => k.tags.push(tag.clone()),
            Expr::Not(_) | Expr::HasEntries { .. } | Expr::Exists { .. } | Expr::Search { .. } => {}
        }
        k
    }

    fn cmp(&mut self, op: CmpOp, field: Field, value: &Literal) {
        match (op, field, value) {
            (CmpOp::Eq, _, _) => self.one_of(field, std::slice::from_ref(value)),
            (CmpOp::Neq, Field::IsRoot, Literal::Bool(b)) => self.is_root = Some(!b),
            (CmpOp::Neq, Field::Id(IdField::ParentRunId), Literal::Null) => self.is_root = Some(false),
            (CmpOp::Gt | CmpOp::Gte, Field::Time(TimeField::StartTime), Literal::Time(t)) => self.start_min = Some(*t),
            (CmpOp::Lt | CmpOp::Lte, Field::Time(TimeField::StartTime), Literal::Time(t)) => self.start_max = Some(*t),
            _ => {}
        }
    }

    /// The field equals one of `values`.
    fn one_of(&mut self, field: Field, values: &[Literal]) {
        fn all<T>(values: &[Literal], f: impl Fn(&Literal) -> Option<T>) -> Option<Vec<T>> {
            values.iter().map(f).collect()
        }
        let id = |l: &Literal| match l {
            Literal::Id(id) => Some(*id),
            _ => None,
        };
        let text = |l: &Literal| match l {
            Literal::String(s) => Some(s.clone()),
            _ => None,
        };
        match field {
            Field::Id(IdField::Id) => self.ids = all(values, id),
            Field::Id(IdField::TraceId) => self.trace_ids = all(values, id),
            Field::Id(IdField::SessionId) => self.session_ids = all(values, id),
            Field::Id(IdField::ParentRunId) => match values {
                [Literal::Null] => self.is_root = Some(true),
                _ => {
                    self.parent_ids = all(values, id);
                    if self.parent_ids.is_some() {
                        self.is_root = Some(false);
                    }
                }
            },
            Field::Text(TextField::RunType) => self.run_types = all(values, text),
            Field::Text(TextField::Name) => self.names = all(values, text),
            Field::IsRoot => {
                if let [Literal::Bool(b)] = values {
                    self.is_root = Some(*b);
                }
            }
            Field::Number(NumberField::ExecutionOrder) => {
                if let [Literal::Number(n)] = values {
                    self.is_root = Some(*n == 1.0);
                }
            }
            Field::Time(TimeField::StartTime) => {
                if let [Literal::Time(t)] = values {
                    self.start_min = Some(*t);
                    self.start_max = Some(*t);
                }
            }
            _ => {}
        }
    }

    fn into_hints(self) -> Vec<Hint> {
        let mut hints = Vec::new();
        hints.extend(self.ids.map(Hint::Ids));
        hints.extend(self.trace_ids.map(Hint::TraceIds));
        hints.extend(self.parent_ids.map(Hint::ParentRunIds));
        hints.extend(self.session_ids.map(|ids| Hint::SessionIds(ids.into_iter().map(|id| ProjectId(id.0)).collect())));
        hints.extend(self.run_types.map(Hint::RunTypes));
        hints.extend(self.names.map(Hint::Names));
        hints.extend(self.tags.into_iter().map(Hint::Tag));
        hints.extend(self.is_root.map(Hint::IsRoot));
        if self.start_min.is_some() || self.start_max.is_some() {
            hints.push(Hint::StartTime { min: self.start_min, max: self.start_max });
        }
        hints.extend(self.metadata_pairs.into_iter().map(|(key, value)| Hint::MetadataPair { key, value }));
        hints
    }
}

/// A metadata key and value compared for equality side by side in one `and` (so, by the
/// pairing rule, on the same entry). Only string values that cannot compare equal to a
/// number, boolean or null qualify, so the hint is exact about the stored JSON type.
fn metadata_pair(args: &[Expr]) -> Option<(String, String)> {
    let mut keys = args.iter().filter_map(|a| match a {
        Expr::Cmp { op: CmpOp::Eq, field: Field::Key(Doc::Metadata), value: Literal::String(k) } => Some(k),
        _ => None,
    });
    let mut values = args.iter().filter_map(|a| match a {
        Expr::Cmp { op: CmpOp::Eq, field: Field::Value(Doc::Metadata), value: Literal::String(v) } => Some(v),
        _ => None,
    });
    let (key, value) = (keys.next()?, values.next()?);
    if keys.next().is_some() || values.next().is_some() {
        return None;
    }
    let t = value.trim();
    if t.parse::<f64>().is_ok() || ["true", "false", "null", "none"].contains(&t.to_ascii_lowercase().as_str()) {
        return None;
    }
    Some((key.clone(), value.clone()))
}

pub(crate) fn hints(expr: &Expr) -> Vec<Hint> {
    Known::of(expr).into_hints()
}
