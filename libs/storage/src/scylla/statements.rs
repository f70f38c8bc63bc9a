//! Every CQL statement the adapter runs, each typed with the values it binds.
//!
//! Markers are named (`:tenant`), and each statement's values are a `SerializeRow` struct whose
//! fields carry the same names: the driver matches values to markers by name, so a value can
//! never land in the wrong marker, and `Stmt<V>` makes binding the wrong struct a compile error.
//! The unit tests check every statement against the schema in `cql/` (see `shape.rs`).

use std::marker::PhantomData;

use scylla::SerializeRow;
use uuid::Uuid;

/// A statement whose values are a `V`.
pub(crate) struct Stmt<V> {
    pub(crate) id: Id,
    _values: PhantomData<fn(&V)>,
}

impl<V> Stmt<V> {
    const fn new(id: Id) -> Self {
        Self { id, _values: PhantomData }
    }
    pub(crate) fn index(&self) -> usize {
        self.id as usize
    }
    pub(crate) fn name(&self) -> &'static str {
        ALL[self.index()].0
    }
}

macro_rules! statements {
    ($($name:ident: $values:ty = $cql:expr;)*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug)]
        pub(crate) enum Id { $($name),* }

        $(pub(crate) const $name: Stmt<$values> = Stmt::new(Id::$name);)*

        /// `(name, cql)` of every statement, indexed by `Id`.
        pub(crate) const ALL: &[(&str, &str)] = &[$((stringify!($name), $cql)),*];

        /// Calls `f` with each statement and a sample of its values (for shape tests).
        #[cfg(test)]
        pub(crate) fn for_each_with_sample(f: &mut dyn FnMut(&str, &str, &dyn scylla::serialize::row::SerializeRow)) {
            $(f(stringify!($name), $cql, &<$values as Default>::default());)*
        }
    };
}

statements! {
    // Runs by id: the source of truth, versioned by compare-and-set.
    GET_HEAD: RunKey = "SELECT body, version, write_ts FROM run_by_id WHERE tenant = :tenant AND run_id = :run_id";
    // The same read through Paxos (LOCAL_SERIAL), after a lost compare-and-set.
    GET_HEAD_SERIAL: RunKey = "SELECT body, version, write_ts FROM run_by_id WHERE tenant = :tenant AND run_id = :run_id";
    INSERT_HEAD: InsertHead = "INSERT INTO run_by_id (tenant, run_id, body, version, write_ts) \
        VALUES (:tenant, :run_id, :body, :version, :write_ts) IF NOT EXISTS USING TTL :run_ttl";
    UPDATE_HEAD: UpdateHead = "UPDATE run_by_id USING TTL :run_ttl SET body = :body, version = :version, write_ts = :write_ts \
        WHERE tenant = :tenant AND run_id = :run_id IF version = :expected_version";
    // Through Paxos too: a plain delete's timestamp could lose to the last ballot's under clock skew.
    DELETE_HEAD: RunKey = "DELETE FROM run_by_id WHERE tenant = :tenant AND run_id = :run_id IF EXISTS";

    // The hour buckets of a project that hold runs.
    LIST_BUCKETS: BucketRange = "SELECT bucket FROM run_buckets WHERE tenant = :tenant AND project = :project \
        AND bucket >= :lo_bucket AND bucket <= :hi_bucket";
    INSERT_BUCKET: BucketRow = "INSERT INTO run_buckets (tenant, project, bucket) VALUES (:tenant, :project, :bucket) \
        USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_BUCKETS: ProjectKeyAt = "DELETE FROM run_buckets USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project";

    // A project's runs, newest first, within one bucket.
    SCAN_RUNS: KeyRange = "SELECT start_us, run_id FROM runs WHERE tenant = :tenant AND project = :project AND bucket = :bucket \
        AND (start_us, run_id) >= (:lo_start, :lo_run) AND (start_us, run_id) < (:hi_start, :hi_run)";
    INSERT_RUN_KEY: TimeKeyRow = "INSERT INTO runs (tenant, project, bucket, start_us, run_id) \
        VALUES (:tenant, :project, :bucket, :start_us, :run_id) USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_RUN_KEY: TimeKeyAt = "DELETE FROM runs USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project \
        AND bucket = :bucket AND start_us = :start_us AND run_id = :run_id";
    DELETE_RUN_BUCKET: BucketAt = "DELETE FROM runs USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project AND bucket = :bucket";

    // Root runs, keyed like runs.
    SCAN_ROOTS: KeyRange = "SELECT start_us, run_id FROM roots WHERE tenant = :tenant AND project = :project AND bucket = :bucket \
        AND (start_us, run_id) >= (:lo_start, :lo_run) AND (start_us, run_id) < (:hi_start, :hi_run)";
    INSERT_ROOT_KEY: TimeKeyRow = "INSERT INTO roots (tenant, project, bucket, start_us, run_id) \
        VALUES (:tenant, :project, :bucket, :start_us, :run_id) USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_ROOT_KEY: TimeKeyAt = "DELETE FROM roots USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project \
        AND bucket = :bucket AND start_us = :start_us AND run_id = :run_id";
    DELETE_ROOT_BUCKET: BucketAt = "DELETE FROM roots USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project AND bucket = :bucket";

    // The runs of a trace.
    TRACE_MEMBERS: TraceKey = "SELECT run_id FROM trace_idx WHERE tenant = :tenant AND trace_id = :trace_id";
    INSERT_TRACE_MEMBER: TraceRow = "INSERT INTO trace_idx (tenant, trace_id, run_id) VALUES (:tenant, :trace_id, :run_id) \
        USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_TRACE_MEMBER: TraceRowAt = "DELETE FROM trace_idx USING TIMESTAMP :write_ts \
        WHERE tenant = :tenant AND trace_id = :trace_id AND run_id = :run_id";

    // Metadata pairs.
    SCAN_META: MetaRange = "SELECT start_us, run_id FROM meta_idx WHERE tenant = :tenant AND project = :project \
        AND meta_key = :meta_key AND meta_value = :meta_value \
        AND (start_us, run_id) >= (:lo_start, :lo_run) AND (start_us, run_id) < (:hi_start, :hi_run)";
    INSERT_META: MetaRow = "INSERT INTO meta_idx (tenant, project, meta_key, meta_value, start_us, run_id) \
        VALUES (:tenant, :project, :meta_key, :meta_value, :start_us, :run_id) USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_META: MetaRowAt = "DELETE FROM meta_idx USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project \
        AND meta_key = :meta_key AND meta_value = :meta_value AND start_us = :start_us AND run_id = :run_id";

    // Attachments.
    GET_ATTACHMENT: AttachmentKey = "SELECT mime_type, data FROM attachments WHERE tenant = :tenant AND run_id = :run_id AND name = :name";
    INSERT_ATTACHMENT: AttachmentRow = "INSERT INTO attachments (tenant, run_id, name, mime_type, data) \
        VALUES (:tenant, :run_id, :name, :mime_type, :data) USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_ATTACHMENTS: RunKeyAt = "DELETE FROM attachments USING TIMESTAMP :write_ts WHERE tenant = :tenant AND run_id = :run_id";

    // Projects, versioned by compare-and-set.
    GET_PROJECT: ProjectKey = "SELECT body, version FROM projects WHERE tenant = :tenant AND project = :project";
    LIST_PROJECTS: TenantKey = "SELECT body FROM projects WHERE tenant = :tenant";
    INSERT_PROJECT: InsertProject = "INSERT INTO projects (tenant, project, body, version) \
        VALUES (:tenant, :project, :body, :version) IF NOT EXISTS";
    UPDATE_PROJECT: UpdateProject = "UPDATE projects SET body = :body, version = :version \
        WHERE tenant = :tenant AND project = :project IF version = :expected_version";
    DELETE_PROJECT: ProjectKey = "DELETE FROM projects WHERE tenant = :tenant AND project = :project IF EXISTS";

    // Project names, claimed and released by compare-and-set.
    GET_PROJECT_NAME: NameKey = "SELECT project FROM project_names WHERE tenant = :tenant AND name = :name";
    CLAIM_NAME: NameClaim = "INSERT INTO project_names (tenant, name, project) VALUES (:tenant, :name, :project) IF NOT EXISTS";
    RELEASE_NAME: NameClaim = "DELETE FROM project_names WHERE tenant = :tenant AND name = :name IF project = :project";
}

/// Whether a statement is a lightweight transaction (Paxos): never resent blindly, since a
/// timed-out attempt may have applied.
pub(crate) fn is_lwt(cql: &str) -> bool {
    cql.contains(" IF ")
}

// The values. Field names are the statements' marker names.

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct RunKey {
    pub tenant: Uuid,
    pub run_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct RunKeyAt {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct InsertHead {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
    pub write_ts: i64,
    pub run_ttl: i32,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct UpdateHead {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
    pub write_ts: i64,
    pub run_ttl: i32,
    pub expected_version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct BucketRange {
    pub tenant: Uuid,
    pub project: Uuid,
    pub lo_bucket: i64,
    pub hi_bucket: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct BucketRow {
    pub tenant: Uuid,
    pub project: Uuid,
    pub bucket: i64,
    pub run_ttl: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ProjectKeyAt {
    pub tenant: Uuid,
    pub project: Uuid,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct BucketAt {
    pub tenant: Uuid,
    pub project: Uuid,
    pub bucket: i64,
    pub write_ts: i64,
}

/// A `(start_us, run_id)` range of one bucket: `[lo, hi)`.
#[derive(SerializeRow, Default, Clone)]
pub(crate) struct KeyRange {
    pub tenant: Uuid,
    pub project: Uuid,
    pub bucket: i64,
    pub lo_start: i64,
    pub lo_run: Vec<u8>,
    pub hi_start: i64,
    pub hi_run: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TimeKeyRow {
    pub tenant: Uuid,
    pub project: Uuid,
    pub bucket: i64,
    pub start_us: i64,
    pub run_id: Vec<u8>,
    pub run_ttl: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TimeKeyAt {
    pub tenant: Uuid,
    pub project: Uuid,
    pub bucket: i64,
    pub start_us: i64,
    pub run_id: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TraceKey {
    pub tenant: Uuid,
    pub trace_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TraceRow {
    pub tenant: Uuid,
    pub trace_id: Uuid,
    pub run_id: Uuid,
    pub run_ttl: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TraceRowAt {
    pub tenant: Uuid,
    pub trace_id: Uuid,
    pub run_id: Uuid,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct MetaRange {
    pub tenant: Uuid,
    pub project: Uuid,
    pub meta_key: String,
    pub meta_value: String,
    pub lo_start: i64,
    pub lo_run: Vec<u8>,
    pub hi_start: i64,
    pub hi_run: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct MetaRow {
    pub tenant: Uuid,
    pub project: Uuid,
    pub meta_key: String,
    pub meta_value: String,
    pub start_us: i64,
    pub run_id: Vec<u8>,
    pub run_ttl: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct MetaRowAt {
    pub tenant: Uuid,
    pub project: Uuid,
    pub meta_key: String,
    pub meta_value: String,
    pub start_us: i64,
    pub run_id: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct AttachmentKey {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub name: String,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct AttachmentRow {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub name: String,
    pub mime_type: String,
    pub data: Vec<u8>,
    pub run_ttl: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ProjectKey {
    pub tenant: Uuid,
    pub project: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TenantKey {
    pub tenant: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct InsertProject {
    pub tenant: Uuid,
    pub project: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct UpdateProject {
    pub tenant: Uuid,
    pub project: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
    pub expected_version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct NameKey {
    pub tenant: Uuid,
    pub name: String,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct NameClaim {
    pub tenant: Uuid,
    pub name: String,
    pub project: Uuid,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use scylla::frame::response::result::{ColumnSpec, ColumnType, TableSpec};
    use scylla::serialize::row::{RowSerializationContext, SerializeRow as _};
    use scylla::serialize::writers::RowWriter;

    use super::*;
    use crate::scylla::shape::{self, Schema};

    const TTL_TABLES: &[&str] = &["run_by_id", "run_buckets", "runs", "roots", "trace_idx", "meta_idx", "attachments"];

    fn schema() -> Schema {
        Schema::parse(crate::scylla::migrate::TABLES_CQL)
    }

    #[test]
    fn every_statement_names_a_table_and_columns_of_the_schema() {
        let schema = schema();
        for (name, cql) in ALL {
            let s = shape::Statement::parse(cql).unwrap_or_else(|e| panic!("{name}: {e}"));
            let table = schema.table(&s.table).unwrap_or_else(|| panic!("{name}: no table {}", s.table));
            for m in &s.markers {
                assert!(m.column.starts_with('[') || table.column_type(&m.column).is_some(), "{name}: {} is not a column", m.column);
            }
            for c in s.selected.iter().chain(&s.restricted) {
                assert!(table.column_type(c).is_some(), "{name}: {c} is not a column of {}", s.table);
            }
        }
    }

    #[test]
    fn values_match_the_markers_by_name_and_type() {
        let schema = schema();
        let mut checked = 0;
        for_each_with_sample(&mut |name, cql, values| {
            let specs = shape::bind_specs(&schema, cql).unwrap_or_else(|e| panic!("{name}: {e}"));
            let specs: Vec<ColumnSpec<'_>> = specs
                .iter()
                .map(|(marker, ty)| ColumnSpec::borrowed(marker, ColumnType::Native(ty.clone()), TableSpec::borrowed("ks", "t")))
                .collect();
            let ctx = RowSerializationContext::from_specs(&specs);
            let mut buf = Vec::new();
            values.serialize(&ctx, &mut RowWriter::new(&mut buf)).unwrap_or_else(|e| panic!("{name}: values do not fit the markers: {e}"));
            checked += 1;
        });
        assert_eq!(checked, ALL.len());
    }

    /// The check above must be able to fail: a struct missing a marker, or with a field of the
    /// wrong type, is refused.
    #[test]
    fn the_value_check_catches_mismatches() {
        let schema = schema();
        let cql = ALL[GET_ATTACHMENT.index()].1;
        let specs = shape::bind_specs(&schema, cql).unwrap();
        let specs: Vec<ColumnSpec<'_>> =
            specs.iter().map(|(m, ty)| ColumnSpec::borrowed(m, ColumnType::Native(ty.clone()), TableSpec::borrowed("ks", "t"))).collect();
        let ctx = RowSerializationContext::from_specs(&specs);
        let mut buf = Vec::new();
        assert!(RunKey::default().serialize(&ctx, &mut RowWriter::new(&mut buf)).is_err(), "missing :name");
        #[derive(SerializeRow, Default)]
        struct WrongType {
            tenant: Uuid,
            run_id: Uuid,
            name: i64,
        }
        assert!(WrongType::default().serialize(&ctx, &mut RowWriter::new(&mut buf)).is_err(), "text bound as bigint");
    }

    #[test]
    fn every_query_restricts_the_whole_partition_key() {
        // No statement needs ALLOW FILTERING or touches more than one partition.
        let schema = schema();
        for (name, cql) in ALL {
            assert!(!cql.to_uppercase().contains("ALLOW FILTERING"), "{name}");
            let s = shape::Statement::parse(cql).unwrap();
            let table = schema.table(&s.table).unwrap();
            let restricted: HashSet<&str> = if s.verb == "INSERT" {
                s.markers.iter().map(|m| m.column.as_str()).collect()
            } else {
                s.restricted.iter().map(String::as_str).collect()
            };
            for pk in &table.partition_key {
                assert!(restricted.contains(pk.as_str()), "{name}: partition key column {pk} is not restricted by equality");
            }
        }
    }

    #[test]
    fn writes_to_retained_tables_carry_the_ttl() {
        for (name, cql) in ALL {
            let s = shape::Statement::parse(cql).unwrap();
            if TTL_TABLES.contains(&s.table.as_str()) && (s.verb == "INSERT" || s.verb == "UPDATE") {
                assert!(cql.contains("USING TTL :run_ttl"), "{name} writes {} without USING TTL", s.table);
            }
            if !TTL_TABLES.contains(&s.table.as_str()) {
                assert!(!cql.contains("TTL"), "{name}: {} is not a retained table", s.table);
            }
        }
    }

    #[test]
    fn index_writes_are_timestamped_and_lwt_tables_are_only_written_by_lwt() {
        // Index rows are ordered by the run's version (USING TIMESTAMP); Paxos-managed rows
        // (runs by id, projects, names) are never written outside Paxos.
        for (name, cql) in ALL {
            let s = shape::Statement::parse(cql).unwrap();
            let write = s.verb != "SELECT";
            match s.table.as_str() {
                "projects" | "project_names" | "run_by_id" if write => assert!(is_lwt(cql), "{name} writes {} outside Paxos", s.table),
                "run_by_id" | "projects" | "project_names" => {}
                _ if write => assert!(cql.contains("TIMESTAMP :write_ts"), "{name} is not timestamped"),
                _ => {}
            }
        }
    }

    #[test]
    fn scans_bound_both_ends_of_the_clustering_range() {
        for stmt in [SCAN_RUNS.index(), SCAN_ROOTS.index(), SCAN_META.index()] {
            let (name, cql) = ALL[stmt];
            assert!(cql.contains("(start_us, run_id) >= (:lo_start, :lo_run)"), "{name}");
            assert!(cql.contains("(start_us, run_id) < (:hi_start, :hi_run)"), "{name}");
        }
    }

    #[test]
    fn statement_names_match_their_ids() {
        assert_eq!(GET_HEAD.name(), "GET_HEAD");
        assert_eq!(RELEASE_NAME.name(), "RELEASE_NAME");
        let names: HashSet<_> = ALL.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), ALL.len());
    }
}
