//! Importing examples from JSONL or CSV, streamed: a file of a million rows is read one row at
//! a time, never held in memory.
//!
//! * JSONL: one example object per line, as the export writes it or as `POST /examples`
//!   takes it (`inputs`, `outputs`, `metadata`, `split`, `id`, `source_run_id`).
//! * CSV with a header: either the export's columns (`inputs`, `outputs` and `metadata` hold
//!   JSON objects; `id`, `source_run_id` and `split` are optional), or plain columns named by
//!   `input_keys`, `output_keys` and `metadata_keys`, whose cells become string fields (as
//!   LangSmith's `upload_csv`).
//!
//! Every row is validated as an example write is (JSON Schemas, ids unused and not repeated).
//! Bad rows are reported by line number. The caller chooses what a bad row means:
//! * atomic (the default): nothing is written unless every row is valid. Valid rows are
//!   spooled to a temporary file while the rest is read, then written;
//! * partial: valid rows are written as they come, bad rows are reported and skipped.
//!
//! Either way the rows written form one dataset version. Ids in the file are kept (so a file
//! imported twice is refused row by row) unless the caller asks for fresh ones (copying a
//! dataset from its export).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tracing::{info, instrument};

use sextant_core::dataset::ExampleChange;
use sextant_core::{DatasetId, Example, ExampleId, TenantId, Timestamp};
use sextant_proto::ApiError;

use crate::core::{storage_error, Datasets, ExampleInput};

/// Examples written per dataset event batch.
const WRITE_CHUNK: usize = 1000;
/// Row errors kept in the report (the count covers all of them).
pub const MAX_REPORTED_ERRORS: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct CsvColumns {
    pub input_keys: Vec<String>,
    pub output_keys: Vec<String>,
    pub metadata_keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum ImportFormat {
    Jsonl,
    Csv(CsvColumns),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RowError {
    /// 1-based line of the file where the row starts.
    pub line: u64,
    pub error: String,
}

#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub rows: u64,
    pub imported: u64,
    pub rejected: u64,
    /// The first [`MAX_REPORTED_ERRORS`] bad rows.
    pub errors: Vec<RowError>,
    /// The version the rows were written in (none if nothing was written).
    pub as_of: Option<Timestamp>,
    pub atomic: bool,
}

impl ImportReport {
    pub fn to_json(&self) -> Value {
        json!({
            "rows": self.rows,
            "imported": self.imported,
            "rejected": self.rejected,
            "errors": self.errors,
            "errors_truncated": self.rejected as usize > self.errors.len(),
            "as_of": self.as_of.map(Timestamp::to_iso),
            "atomic": self.atomic,
        })
    }

    fn reject(&mut self, line: u64, error: String) {
        self.rejected += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(RowError { line, error });
        }
    }
}

/// A parsed row, or why it is not one.
type Row = (u64, Result<ExampleInput, String>);

impl Datasets {
    /// Imports the rows of `file` (read from its start) into the dataset. Row errors are in the
    /// report; `Err` is for what stops the whole import (unknown dataset, a CSV header that
    /// lacks a named column, the store or bus failing).
    #[instrument(name = "datasets.import", skip_all, fields(tenant = %tenant, dataset = %id, atomic))]
    pub async fn import_examples(
        &self,
        tenant: TenantId,
        id: DatasetId,
        file: std::fs::File,
        format: ImportFormat,
        atomic: bool,
        fresh_ids: bool,
    ) -> Result<ImportReport, ApiError> {
        let validator = self.new_example_validator(tenant, id).await?;
        let mut report = ImportReport { atomic, ..Default::default() };
        let (tx, mut rx) = mpsc::channel::<Row>(1024);
        let (header_tx, header_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
        let parser = tokio::task::spawn_blocking(move || parse_rows(file, format, tx, header_tx));
        header_rx.await.map_err(|_| ApiError::internal())??;

        let mut spool = if atomic { Some(BufWriter::new(tempfile::tempfile().map_err(io_error)?)) } else { None };
        let mut pending: Vec<ExampleChange> = Vec::new();
        let mut ids: HashSet<ExampleId> = HashSet::new();
        while let Some((line, row)) = rx.recv().await {
            report.rows += 1;
            let example = match row {
                Ok(mut input) => {
                    if fresh_ids {
                        input.id = None;
                    }
                    let explicit_id = input.id.is_some();
                    match validator.build(&format!("line {line}"), input) {
                        Ok(e) if !ids.insert(e.id) => Err(format!("line {line}: id {} appears earlier in the file", e.id)),
                        Ok(e) if explicit_id => match self.store().get_example(tenant, e.id, None).await.map_err(storage_error)? {
                            Some(existing) => {
                                Err(format!("line {line}: example {} already exists (in dataset {})", e.id, existing.dataset_id))
                            }
                            None => Ok(e),
                        },
                        Ok(e) => Ok(e),
                        Err(e) => Err(e.message),
                    }
                }
                Err(e) => Err(e),
            };
            match (example, spool.as_mut()) {
                (Err(e), _) => report.reject(line, e),
                (Ok(e), Some(spool)) if report.rejected == 0 => {
                    serde_json::to_writer(&mut *spool, &e).map_err(|e| io_error(e.into()))?;
                    spool.write_all(b"\n").map_err(io_error)?;
                }
                // Atomic and already failed: keep reading only to report every bad row.
                (Ok(_), Some(_)) => {}
                (Ok(e), None) => {
                    pending.push(ExampleChange::Put(e));
                    if pending.len() == WRITE_CHUNK {
                        self.write_version(tenant, id, validator.as_of, std::mem::take(&mut pending)).await?;
                        report.imported += WRITE_CHUNK as u64;
                    }
                }
            }
        }
        parser.await.map_err(|_| ApiError::internal())?;
        if report.rows == 0 {
            return Err(ApiError::unprocessable("the file has no rows"));
        }
        if let Some(spool) = spool {
            if report.rejected > 0 {
                info!(rows = report.rows, rejected = report.rejected, "atomic import refused: nothing written");
                return Ok(report);
            }
            let mut file = spool.into_inner().map_err(|e| io_error(e.into_error()))?;
            file.rewind().map_err(io_error)?;
            for line in BufReader::new(file).lines() {
                let e: Example = serde_json::from_str(&line.map_err(io_error)?).map_err(|e| io_error(e.into()))?;
                pending.push(ExampleChange::Put(e));
                if pending.len() == WRITE_CHUNK {
                    self.write_version(tenant, id, validator.as_of, std::mem::take(&mut pending)).await?;
                    report.imported += WRITE_CHUNK as u64;
                }
            }
        }
        if !pending.is_empty() {
            report.imported += pending.len() as u64;
            self.write_version(tenant, id, validator.as_of, pending).await?;
        }
        if report.imported > 0 {
            report.as_of = Some(validator.as_of);
        }
        info!(rows = report.rows, imported = report.imported, rejected = report.rejected, "import finished");
        metrics::counter!("sextant_dataset_examples_imported_total").increment(report.imported);
        Ok(report)
    }
}

fn io_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "import spool failed");
    ApiError::internal()
}

/// Reads rows on a blocking thread and sends them on. The header (CSV) is checked first and
/// its verdict sent on `header`; a closed channel (the import gave up) stops the reading.
fn parse_rows(
    file: std::fs::File,
    format: ImportFormat,
    tx: mpsc::Sender<Row>,
    header: tokio::sync::oneshot::Sender<Result<(), ApiError>>,
) {
    let reader = BufReader::with_capacity(256 * 1024, file);
    match format {
        ImportFormat::Jsonl => {
            let _ = header.send(Ok(()));
            parse_jsonl(reader, &tx);
        }
        ImportFormat::Csv(columns) => parse_csv(reader, &columns, &tx, header),
    }
}

fn parse_jsonl(mut reader: impl BufRead, tx: &mpsc::Sender<Row>) {
    let mut line = String::new();
    let mut n = 0u64;
    loop {
        line.clear();
        n += 1;
        let row = match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.trim().is_empty() => continue,
            Ok(_) => match serde_json::from_str::<Value>(&line) {
                Ok(v) => ExampleInput::from_json(&v, &format!("line {n}")).map(|(input, _)| input).map_err(|e| e.message),
                Err(e) => Err(format!("line {n}: not valid JSON: {e}")),
            },
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                // Not UTF-8: skip to the end of the line and report it.
                let mut rest = Vec::new();
                let _ = reader.read_until(b'\n', &mut rest);
                Err(format!("line {n}: not valid UTF-8"))
            }
            Err(e) => Err(format!("line {n}: cannot be read: {e}")),
        };
        if tx.blocking_send((n, row)).is_err() {
            return;
        }
    }
}

/// Where each part of an example comes from in a CSV row.
enum CsvLayout {
    /// The export's columns: JSON objects in `inputs`, `outputs`, `metadata`.
    Json {
        inputs: usize,
        outputs: Option<usize>,
        metadata: Option<usize>,
        id: Option<usize>,
        source_run_id: Option<usize>,
        split: Option<usize>,
    },
    /// Plain columns named by the caller.
    Keys { inputs: Vec<(String, usize)>, outputs: Vec<(String, usize)>, metadata: Vec<(String, usize)>, split: Option<usize> },
}

fn csv_layout(headers: &csv::StringRecord, columns: &CsvColumns) -> Result<CsvLayout, ApiError> {
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let named = |param: &str, keys: &[String]| -> Result<Vec<(String, usize)>, ApiError> {
        keys.iter()
            .map(|k| {
                find(k)
                    .map(|i| (k.clone(), i))
                    .ok_or_else(|| ApiError::unprocessable(format!("{param}: column {k:?} is not in the CSV header")))
            })
            .collect()
    };
    if columns.input_keys.is_empty() {
        let inputs = find("inputs").ok_or_else(|| {
            ApiError::unprocessable("the CSV header has no \"inputs\" column: name the input columns with input_keys (and output_keys)")
        })?;
        return Ok(CsvLayout::Json {
            inputs,
            outputs: find("outputs"),
            metadata: find("metadata"),
            id: find("id"),
            source_run_id: find("source_run_id"),
            split: find("split"),
        });
    }
    Ok(CsvLayout::Keys {
        inputs: named("input_keys", &columns.input_keys)?,
        outputs: named("output_keys", &columns.output_keys)?,
        metadata: named("metadata_keys", &columns.metadata_keys)?,
        split: find("split"),
    })
}

fn csv_row(layout: &CsvLayout, record: &csv::StringRecord, line: u64) -> Result<ExampleInput, String> {
    let cell = |i: usize| record.get(i).unwrap_or("");
    let mut o = Map::new();
    match layout {
        CsvLayout::Json { inputs, outputs, metadata, id, source_run_id, split } => {
            let json_cell = |name: &str, i: usize| -> Result<Option<Value>, String> {
                match cell(i).trim() {
                    "" => Ok(None),
                    s => serde_json::from_str(s).map(Some).map_err(|e| format!("line {line}: column {name}: not valid JSON: {e}")),
                }
            };
            o.insert("inputs".into(), json_cell("inputs", *inputs)?.unwrap_or(Value::Null));
            for (name, col) in [("outputs", outputs), ("metadata", metadata)] {
                if let Some(v) = col.map(|i| json_cell(name, i)).transpose()?.flatten() {
                    o.insert(name.into(), v);
                }
            }
            for (name, col) in [("id", id), ("source_run_id", source_run_id)] {
                if let Some(s) = col.map(cell).map(str::trim).filter(|s| !s.is_empty()) {
                    o.insert(name.into(), json!(s));
                }
            }
            if let Some(s) = split.map(cell).map(str::trim).filter(|s| !s.is_empty()) {
                o.insert("split".into(), json!(s));
            }
        }
        CsvLayout::Keys { inputs, outputs, metadata, split } => {
            let object = |cols: &[(String, usize)]| Value::Object(cols.iter().map(|(k, i)| (k.clone(), json!(cell(*i)))).collect());
            o.insert("inputs".into(), object(inputs));
            if !outputs.is_empty() {
                o.insert("outputs".into(), object(outputs));
            }
            if !metadata.is_empty() {
                o.insert("metadata".into(), object(metadata));
            }
            if let Some(s) = split.map(cell).map(str::trim).filter(|s| !s.is_empty()) {
                o.insert("split".into(), json!(s));
            }
        }
    }
    ExampleInput::from_json(&Value::Object(o), &format!("line {line}")).map(|(input, _)| input).map_err(|e| e.message)
}

fn parse_csv(reader: impl Read, columns: &CsvColumns, tx: &mpsc::Sender<Row>, header: tokio::sync::oneshot::Sender<Result<(), ApiError>>) {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(reader);
    let layout = match csv.headers() {
        Ok(h) => csv_layout(h, columns),
        Err(e) => Err(ApiError::unprocessable(format!("line 1: the CSV header cannot be read: {e}"))),
    };
    let layout = match layout {
        Ok(l) => {
            let _ = header.send(Ok(()));
            l
        }
        Err(e) => {
            let _ = header.send(Err(e));
            return;
        }
    };
    let mut record = csv::StringRecord::new();
    loop {
        let before = csv.position().line();
        let (line, row) = match csv.read_record(&mut record) {
            Ok(false) => return,
            Ok(true) if record.iter().all(|c| c.trim().is_empty()) => continue,
            Ok(true) => {
                let line = record.position().map_or(before, |p| p.line());
                (line, csv_row(&layout, &record, line))
            }
            Err(e) => {
                let line = e.position().map_or(before, |p| p.line());
                if let csv::ErrorKind::Io(_) = e.kind() {
                    let _ = tx.blocking_send((line, Err(format!("line {line}: cannot be read: {e}"))));
                    return;
                }
                (line, Err(format!("line {line}: {e}")))
            }
        };
        if tx.blocking_send((line, row)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header's verdict, and each row's line and inputs/outputs/split (or error).
    type Parsed = (Result<(), String>, Vec<(u64, Result<String, String>)>);

    fn rows(format: ImportFormat, text: &str) -> Parsed {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.rewind().unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        let (htx, mut hrx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || parse_rows(f, format, tx, htx)).join().unwrap();
        let header = hrx.try_recv().unwrap().map_err(|e| e.message);
        let mut out = Vec::new();
        while let Ok((line, r)) = rx.try_recv() {
            out.push((line, r.map(|i| serde_json::to_string(&(i.inputs, i.outputs, i.split)).unwrap())));
        }
        (header, out)
    }

    #[test]
    fn jsonl_rows_carry_their_line_numbers_and_errors() {
        let (h, r) = rows(
            ImportFormat::Jsonl,
            "{\"inputs\":{\"q\":1}}\n\nnot json\n{\"inputs\":[1]}\n{\"inputs\":{\"q\":2},\"outputs\":{\"a\":3},\"split\":\"test\"}\n",
        );
        assert_eq!(h, Ok(()));
        assert_eq!(r.len(), 4, "the blank line is not a row: {r:?}");
        assert_eq!(r[0], (1, Ok(r#"[{"q":1},null,null]"#.to_owned())));
        assert_eq!(r[1].0, 3);
        assert!(r[1].1.as_ref().unwrap_err().starts_with("line 3: not valid JSON"), "{r:?}");
        assert_eq!(r[2], (4, Err("line 4.inputs: expected a JSON object".to_owned())));
        assert_eq!(r[3], (5, Ok(r#"[{"q":2},{"a":3},"test"]"#.to_owned())));
    }

    #[test]
    fn csv_with_named_columns_and_a_multi_line_cell() {
        let cols = CsvColumns { input_keys: vec!["question".into()], output_keys: vec!["answer".into()], metadata_keys: vec![] };
        let (h, r) = rows(ImportFormat::Csv(cols), "question,answer,extra\n\"two\nlines\",yes,x\nq2,no,y\n");
        assert_eq!(h, Ok(()));
        assert_eq!(r[0], (2, Ok(r#"[{"question":"two\nlines"},{"answer":"yes"},null]"#.to_owned())));
        assert_eq!(r[1], (4, Ok(r#"[{"question":"q2"},{"answer":"no"},null]"#.to_owned())), "rows are numbered by the line they start on");
    }

    #[test]
    fn csv_in_export_layout_parses_json_cells_and_reports_bad_ones() {
        let (h, r) = rows(ImportFormat::Csv(CsvColumns::default()), "id,inputs,outputs\n,\"{\"\"q\"\":1}\",\n,{oops},\n");
        assert_eq!(h, Ok(()));
        assert_eq!(r[0], (2, Ok(r#"[{"q":1},null,null]"#.to_owned())));
        assert!(r[1].1.as_ref().unwrap_err().starts_with("line 3: column inputs: not valid JSON"), "{r:?}");
    }

    #[test]
    fn csv_header_without_the_named_columns_is_refused_before_any_row() {
        let cols = CsvColumns { input_keys: vec!["prompt".into()], ..Default::default() };
        let (h, r) = rows(ImportFormat::Csv(cols), "question,answer\na,b\n");
        assert_eq!(h, Err("input_keys: column \"prompt\" is not in the CSV header".to_owned()));
        assert!(r.is_empty());
        let (h, _) = rows(ImportFormat::Csv(CsvColumns::default()), "question,answer\na,b\n");
        assert!(h.unwrap_err().contains("no \"inputs\" column"));
    }
}
