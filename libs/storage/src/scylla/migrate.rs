//! Schema migrations: the numbered files of `cql/`, applied in order and recorded in
//! `schema_migrations`. Every statement is `CREATE ... IF NOT EXISTS`, so applying a file
//! twice is harmless; the ledger says what a cluster has seen.
//!
//! Run it once per deployment (a job, `sextant migrate`), not from every replica: concurrent
//! DDL from several clients can leave ScyllaDB's schema in disagreement for a while.

use scylla::client::session::Session;
use scylla::value::CqlTimestamp;
use tracing::info;

use super::config::ScyllaConfig;
use super::shape::Schema;
use super::{build_session, driver_error};
use crate::{Result, StorageError, StorageErrorKind};

pub(crate) const KEYSPACE_CQL: &str = include_str!("../../cql/0001_keyspace.cql");
pub(crate) const TABLES_CQL: &str = include_str!("../../cql/0002_tables.cql");
pub(crate) const FEEDBACK_QUEUES_CQL: &str = include_str!("../../cql/0003_feedback_queues.cql");
pub(crate) const DATASETS_CQL: &str = include_str!("../../cql/0004_datasets.cql");
pub(crate) const PROMPTS_CQL: &str = include_str!("../../cql/0005_prompts.cql");
pub(crate) const FEEDBACK_TOKENS_CONFIGS_CQL: &str = include_str!("../../cql/0006_feedback_tokens_configs.cql");
pub(crate) const RUN_SHARES_CQL: &str = include_str!("../../cql/0007_run_shares.cql");
pub(crate) const ONLINE_EVALUATORS_CQL: &str = include_str!("../../cql/0008_online_evaluators.cql");

/// `(file name, text)`, in the order they apply.
pub(crate) const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_keyspace.cql", KEYSPACE_CQL),
    ("0002_tables.cql", TABLES_CQL),
    ("0003_feedback_queues.cql", FEEDBACK_QUEUES_CQL),
    ("0004_datasets.cql", DATASETS_CQL),
    ("0005_prompts.cql", PROMPTS_CQL),
    ("0006_feedback_tokens_configs.cql", FEEDBACK_TOKENS_CONFIGS_CQL),
    ("0007_run_shares.cql", RUN_SHARES_CQL),
    ("0008_online_evaluators.cql", ONLINE_EVALUATORS_CQL),
];

/// Every table the adapter uses: the schema of all migrations after the keyspace's.
pub(crate) fn schema() -> Schema {
    let mut schema = Schema::default();
    for (_, text) in &MIGRATIONS[1..] {
        schema.tables.extend(Schema::parse(text).tables);
    }
    schema
}

/// A file with `{keyspace}` and `{replication}` filled in from the (validated) config.
pub(crate) fn render(cql: &str, cfg: &ScyllaConfig) -> String {
    cql.replace("{keyspace}", &cfg.keyspace).replace("{replication}", &cfg.replication_cql())
}

/// The statements of a file: comments dropped, split on `;`.
pub(crate) fn split_statements(cql: &str) -> Vec<String> {
    let without_comments: String = cql.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    without_comments.split(';').map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|s| !s.is_empty()).collect()
}

/// A stable fingerprint of a file's text (FNV-1a), recorded with it.
fn checksum(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Applies the migrations the cluster has not recorded and returns their names.
///
/// The keyspace file always runs first (the ledger lives in the keyspace it creates), which
/// is harmless: `IF NOT EXISTS` never alters an existing keyspace.
pub async fn migrate(cfg: &ScyllaConfig) -> Result<Vec<String>> {
    cfg.validate().map_err(|e| StorageError::new(StorageErrorKind::Invalid, e))?;
    let session = build_session(cfg, None).await?;
    let mut applied = Vec::new();
    for (i, (name, text)) in MIGRATIONS.iter().enumerate() {
        let rendered = render(text, cfg);
        if i > 0 && is_recorded(&session, cfg, name).await? {
            continue;
        }
        for stmt in split_statements(&rendered) {
            let stmt = if i == 0 { stmt } else { qualify(&stmt, &cfg.keyspace) };
            session.query_unpaged(stmt, ()).await.map_err(|e| driver_error("apply migration", e))?;
        }
        if i == 0 && is_recorded(&session, cfg, name).await? {
            continue;
        }
        let record = format!("INSERT INTO {}.schema_migrations (name, checksum, applied_at) VALUES (?, ?, ?)", cfg.keyspace);
        let now = CqlTimestamp(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64));
        session
            .query_unpaged(record, (name.to_string(), checksum(&rendered), now))
            .await
            .map_err(|e| driver_error("record migration", e))?;
        info!(migration = %name, keyspace = %cfg.keyspace, "applied migration");
        applied.push(name.to_string());
    }
    Ok(applied)
}

async fn is_recorded(session: &Session, cfg: &ScyllaConfig, name: &str) -> Result<bool> {
    let q = format!("SELECT name FROM {}.schema_migrations WHERE name = ?", cfg.keyspace);
    let res = session.query_unpaged(q, (name.to_string(),)).await.map_err(|e| driver_error("read migrations", e))?;
    let rows = res.into_rows_result().map_err(|e| StorageError::with_source(StorageErrorKind::Internal, "scylla: read migrations", e))?;
    Ok(rows.rows_num() > 0)
}

/// Qualifies `CREATE TABLE IF NOT EXISTS t` with the keyspace, so the session needs none.
fn qualify(stmt: &str, keyspace: &str) -> String {
    const CREATE: &str = "CREATE TABLE IF NOT EXISTS ";
    match stmt.strip_prefix(CREATE) {
        Some(rest) if !rest.split_whitespace().next().unwrap_or("").contains('.') => format!("{CREATE}{keyspace}.{rest}"),
        _ => stmt.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scylla::config::{ReplicationConfig, ReplicationStrategy};

    fn eu() -> ScyllaConfig {
        ScyllaConfig {
            keyspace: "sextant_eu".into(),
            replication: ReplicationConfig {
                strategy: ReplicationStrategy::NetworkTopologyStrategy,
                replication_factor: 0,
                datacenters: BTreeMap::from([("eu-west-1".into(), 3), ("eu-central-1".into(), 2)]),
            },
            ..Default::default()
        }
    }

    #[test]
    fn keyspace_renders_with_exactly_the_configured_datacenters() {
        let stmts = split_statements(&render(KEYSPACE_CQL, &eu()));
        assert_eq!(stmts.len(), 2);
        assert_eq!(
            stmts[0],
            "CREATE KEYSPACE IF NOT EXISTS sextant_eu WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'eu-central-1': 2, 'eu-west-1': 3} AND durable_writes = true"
        );
        assert!(stmts[1].starts_with("CREATE TABLE IF NOT EXISTS sextant_eu.schema_migrations"));
        for (_, text) in MIGRATIONS {
            let rendered = render(text, &eu());
            assert!(!rendered.contains('{') || rendered.contains("'class'"), "a placeholder is left in {rendered}");
        }
    }

    #[test]
    fn every_migration_statement_is_idempotent() {
        for (name, text) in MIGRATIONS {
            for stmt in split_statements(&render(text, &eu())) {
                assert!(
                    stmt.starts_with("CREATE KEYSPACE IF NOT EXISTS ") || stmt.starts_with("CREATE TABLE IF NOT EXISTS "),
                    "{name}: {stmt}"
                );
            }
        }
    }

    #[test]
    fn tables_are_qualified_with_the_keyspace() {
        for (_, text) in &MIGRATIONS[1..] {
            let stmts: Vec<_> = split_statements(text).iter().map(|s| qualify(s, "ks")).collect();
            assert!(stmts.iter().all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS ks.")), "{stmts:?}");
        }
        assert_eq!(
            qualify("CREATE TABLE IF NOT EXISTS other.t (a int PRIMARY KEY)", "ks"),
            "CREATE TABLE IF NOT EXISTS other.t (a int PRIMARY KEY)"
        );
    }

    #[test]
    fn the_schema_has_the_tables_the_adapter_uses() {
        let schema = schema();
        let names: Vec<_> = schema.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "run_by_id",
                "run_buckets",
                "runs",
                "roots",
                "trace_idx",
                "meta_idx",
                "projects",
                "project_names",
                "attachments",
                "feedback_by_id",
                "feedback_by_run",
                "feedback_by_project",
                "feedback_by_tenant",
                "feedback_orphans",
                "feedback_stats",
                "queues",
                "routed_queues",
                "queue_items",
                "queue_runs",
                "datasets",
                "dataset_names",
                "dataset_rules",
                "example_versions",
                "example_loc",
                "dataset_versions",
                "dataset_tags",
                "blobs",
                "curation_jobs",
                "prompt_repos",
                "prompt_names",
                "prompt_deleted",
                "prompt_commits",
                "prompt_commit_log",
                "prompt_tag_moves",
                "prompt_likes",
                "feedback_tokens",
                "feedback_tokens_by_run",
                "feedback_configs",
                "run_shares",
                "run_shares_by_token",
                "online_evaluators",
            ]
        );
        // Every partition starts with the tenant, except the cross-tenant registries of the
        // queue router and the curation rule consumer, and presigned tokens (found by id alone).
        let cross_tenant = ["routed_queues", "dataset_rules", "feedback_tokens", "run_shares_by_token"];
        for t in schema.tables.iter().filter(|t| !cross_tenant.contains(&t.name.as_str())) {
            assert_eq!(t.partition_key[0], "tenant", "{}", t.name);
        }
        assert_eq!(schema.table("queue_items").unwrap().partition_key, ["tenant", "queue_id"]);
        assert_eq!(schema.table("queue_items").unwrap().clustering, ["item_id"]);
        assert_eq!(schema.table("queue_runs").unwrap().partition_key, ["tenant", "queue_id", "run_id"]);
        assert_eq!(schema.table("feedback_by_id").unwrap().partition_key, ["tenant", "feedback_id"]);
        assert_eq!(schema.table("feedback_stats").unwrap().partition_key, ["tenant", "kind", "owner"]);
        assert_eq!(schema.table("feedback_by_project").unwrap().partition_key, ["tenant", "project", "shard"]);
        let runs = schema.table("runs").unwrap();
        assert_eq!(runs.partition_key, ["tenant", "project", "bucket"]);
        assert_eq!(runs.clustering, ["start_us", "run_id"]);
        assert!(TABLES_CQL.contains("CLUSTERING ORDER BY (start_us DESC, run_id DESC)"));
        assert_eq!(schema.table("run_by_id").unwrap().partition_key, ["tenant", "run_id"]);
        let examples = schema.table("example_versions").unwrap();
        assert_eq!(examples.partition_key, ["tenant", "dataset_id", "shard"]);
        assert_eq!(examples.clustering, ["example_id", "as_of"]);
        assert!(DATASETS_CQL.contains("CLUSTERING ORDER BY (example_id ASC, as_of DESC)"));
        assert_eq!(schema.table("dataset_names").unwrap().partition_key, ["tenant", "name"]);
        assert_eq!(schema.table("example_loc").unwrap().partition_key, ["tenant", "example_id"]);
        assert_eq!(schema.table("prompt_names").unwrap().partition_key, ["tenant", "handle"]);
        for t in ["prompt_commits", "prompt_commit_log", "prompt_tag_moves", "prompt_likes"] {
            assert_eq!(schema.table(t).unwrap().partition_key, ["tenant", "repo_id"], "{t}: one partition per repository");
        }
        assert_eq!(Schema::parse(&render(KEYSPACE_CQL, &eu())).table("schema_migrations").unwrap().partition_key, ["name"]);
    }

    #[test]
    fn checksums_differ_with_the_text() {
        assert_ne!(checksum("a"), checksum("b"));
        assert_eq!(checksum(TABLES_CQL), checksum(TABLES_CQL));
    }

    #[test]
    fn migrations_are_numbered_in_order_and_define_each_table_once() {
        for (i, (name, _)) in MIGRATIONS.iter().enumerate() {
            assert!(name.starts_with(&format!("{:04}_", i + 1)) && name.ends_with(".cql"), "{name}");
        }
        let schema = schema();
        let mut names: Vec<_> = schema.tables.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a table is created by two migrations");
    }
}
