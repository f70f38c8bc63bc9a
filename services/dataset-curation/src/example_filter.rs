//! The filter language (`sextant-filter`) over examples: `GET /examples?filter=...`.
//!
//! Examples have metadata, inputs, outputs and an id, so a filter may use `has`, `exists`
//! and `search` on `metadata` / `inputs` / `outputs`, the `metadata_*` / `input_*` /
//! `output_*` key-value families, `eq(id, ...)` / `in(id, [...])`, and `and` / `or` / `not`.
//! A field only runs have (`latency`, `tags`, `feedback_*`, ...) is refused with its name,
//! rather than silently matching nothing.

use std::cell::OnceCell;

use serde_json::Value;

use sextant_core::{DatasetId, Example, RunId, TenantId, Timestamp};
use sextant_filter::{Doc, Expr, FeedbackRow, Field, IdField, NumberField, Record, TextField, TimeField};
use sextant_proto::ApiError;
use sextant_storage::ExampleQuery;

use crate::core::{storage_error, Datasets, MAX_LIST_LIMIT};

/// A filter checked to name only example fields.
pub struct ExampleFilter(sextant_filter::Filter);

impl ExampleFilter {
    /// Parses `src`; a syntax error or a run-only field is a 422 naming the problem.
    pub fn parse(src: &str) -> Result<Self, ApiError> {
        let f = sextant_filter::parse(src).map_err(|e| ApiError::unprocessable(format!("filter: {e}")))?;
        check(f.expr())?;
        Ok(Self(f))
    }

    pub fn matches(&self, e: &Example) -> bool {
        self.0.matches(&ExampleView::new(e))
    }
}

impl Datasets {
    /// [`Datasets::list_examples`] narrowed by a filter: examples are read a page at a time in
    /// id order and filtered before `q.offset` and `q.limit` apply, so pages are never short
    /// while more examples match.
    pub async fn list_examples_filtered(
        &self,
        tenant: TenantId,
        id: DatasetId,
        q: ExampleQuery,
        filter: &ExampleFilter,
    ) -> Result<Vec<Example>, ApiError> {
        if q.limit == 0 || q.limit > MAX_LIST_LIMIT {
            return Err(ApiError::unprocessable(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
        }
        self.get_dataset(tenant, id).await?;
        let (mut skip, limit) = (q.offset, q.limit);
        let mut page_q = ExampleQuery { offset: 0, limit: SCAN_PAGE, ..q };
        let mut out = Vec::with_capacity(limit);
        loop {
            let page = self.store().list_examples(tenant, id, &page_q).await.map_err(storage_error)?;
            let n = page.len();
            page_q.after = page.last().map(|e| e.id).or(page_q.after);
            for e in page.into_iter().filter(|e| filter.matches(e)) {
                if skip > 0 {
                    skip -= 1;
                } else {
                    out.push(e);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if n < SCAN_PAGE {
                return Ok(out);
            }
        }
    }
}

/// Examples read per step of a filtered listing.
const SCAN_PAGE: usize = 1000;

fn allowed(field: Field) -> bool {
    matches!(field, Field::Id(IdField::Id) | Field::Key(_) | Field::Value(_) | Field::Doc(_))
}

fn refuse(what: impl std::fmt::Display) -> ApiError {
    ApiError::unprocessable(format!(
        "filter: {what} is a run field; example filters can use id, metadata, inputs, outputs and the \
         metadata_key/value, input_key/value and output_key/value pairs"
    ))
}

fn check(e: &Expr) -> Result<(), ApiError> {
    match e {
        Expr::And(xs) | Expr::Or(xs) => xs.iter().try_for_each(check),
        Expr::Not(x) => check(x),
        Expr::Cmp { field, .. } | Expr::In { field, .. } if !allowed(*field) => Err(refuse(field)),
        Expr::Search { field: Some(field), .. } if !allowed(*field) => Err(refuse(field)),
        Expr::HasTag(_) => Err(refuse("tags")),
        _ => Ok(()),
    }
}

/// An example as the filter sees it; documents are parsed at most once, on first use.
struct ExampleView<'a> {
    e: &'a Example,
    metadata: OnceCell<Option<Value>>,
    inputs: OnceCell<Option<Value>>,
    outputs: OnceCell<Option<Value>>,
}

impl<'a> ExampleView<'a> {
    fn new(e: &'a Example) -> Self {
        Self { e, metadata: OnceCell::new(), inputs: OnceCell::new(), outputs: OnceCell::new() }
    }
}

impl Record for ExampleView<'_> {
    fn text(&self, _field: TextField) -> Option<&str> {
        None
    }

    fn id(&self, field: IdField) -> Option<RunId> {
        // `RunId` only carries the UUID (see `Literal::Id`).
        (field == IdField::Id).then_some(RunId(self.e.id.0))
    }

    fn time(&self, _field: TimeField) -> Option<Timestamp> {
        None
    }

    fn number(&self, _field: NumberField) -> Option<f64> {
        None
    }

    fn is_root(&self) -> bool {
        false
    }

    fn tags(&self) -> &[String] {
        &[]
    }

    fn document(&self, doc: Doc) -> Option<&Value> {
        // Stored JSON was validated when written; a corrupt value reads as absent.
        match doc {
            Doc::Metadata => self.metadata.get_or_init(|| self.e.metadata.to_value().ok()).as_ref(),
            Doc::Inputs => self.inputs.get_or_init(|| self.e.inputs.to_value().ok()).as_ref(),
            Doc::Outputs => self.outputs.get_or_init(|| self.e.outputs.as_ref().and_then(|o| o.to_value().ok())).as_ref(),
        }
    }

    fn feedback(&self) -> &[FeedbackRow] {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_core::{ExampleId, RawJson};
    use uuid::Uuid;

    fn example(metadata: Value) -> Example {
        Example {
            id: ExampleId(Uuid::now_v7()),
            dataset_id: DatasetId(Uuid::now_v7()),
            inputs: RawJson::from_value(&serde_json::json!({"q": "refund?"})),
            outputs: None,
            metadata: RawJson::from_value(&metadata),
            source_run_id: None,
            attachments: Vec::new(),
            created_at: Timestamp(0),
            modified_at: Timestamp(0),
        }
    }

    #[test]
    fn metadata_filters_match_examples() {
        let e = example(serde_json::json!({"team": "support", "tier": 2}));
        let yes = |f: &str| ExampleFilter::parse(f).unwrap().matches(&e);
        assert!(yes(r#"exists(metadata, "team")"#));
        assert!(!yes(r#"exists(metadata, "nope")"#));
        assert!(yes(r#"has(metadata, '{"team": "support"}')"#));
        assert!(!yes(r#"has(metadata, '{"team": "sales"}')"#));
        assert!(yes(r#"and(not(has(metadata, '{"team": "sales"}')), exists(metadata, "tier"))"#));
        assert!(yes(r#"search(inputs, "REFUND")"#));
        assert!(yes(&format!(r#"eq(id, "{}")"#, e.id.0)));
    }

    #[test]
    fn run_fields_and_bad_syntax_are_named() {
        let msg = |f: &str| ExampleFilter::parse(f).err().expect("refused").message;
        assert!(msg(r#"gt(latency, "1s")"#).contains("latency is a run field"));
        assert!(msg(r#"has(tags, "x")"#).contains("tags is a run field"));
        assert!(msg(r#"and(exists(metadata, "k"), eq(feedback_key, "x"))"#).contains("feedback_key"));
        assert!(msg(r#"exists(metadata"#).starts_with("filter: invalid filter at position"));
    }
}
