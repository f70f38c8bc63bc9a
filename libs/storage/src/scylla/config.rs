//! The ScyllaDB adapter's configuration: one struct, serde-loadable, validated before use.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest TTL ScyllaDB accepts (20 years), in seconds.
const MAX_TTL_SECS: u64 = 630_720_000;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// `host:port` of nodes to bootstrap from; the driver discovers the rest.
    pub contact_points: Vec<String>,
    /// When set, the load balancer is token- and DC-aware and keeps requests in this
    /// datacenter (no failover to remote DCs: data residency matters more than availability).
    pub local_datacenter: Option<String>,
    pub keyspace: String,
    pub replication: ReplicationConfig,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout_ms: u64,
    /// Client-side timeout of one request, retries by the driver included.
    pub request_timeout_ms: u64,
    /// Requests in flight at once from this process; further ones wait for a permit.
    pub max_concurrent_requests: usize,
    /// Retention of runs, their indexes and attachments; 0 keeps them forever.
    pub run_ttl_secs: u64,
    /// Rows per page of scans.
    pub page_size: i32,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            contact_points: vec!["127.0.0.1:9042".into()],
            local_datacenter: None,
            keyspace: "sextant".into(),
            replication: ReplicationConfig::default(),
            username: None,
            password: None,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            max_concurrent_requests: 256,
            run_ttl_secs: 0,
            page_size: 1_000,
        }
    }
}

/// Never prints the password.
impl fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("contact_points", &self.contact_points)
            .field("local_datacenter", &self.local_datacenter)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("run_ttl_secs", &self.run_ttl_secs)
            .field("page_size", &self.page_size)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    pub strategy: ReplicationStrategy,
    /// Replicas, for `SimpleStrategy`.
    pub replication_factor: u32,
    /// Replicas per datacenter, for `NetworkTopologyStrategy`. Only the datacenters listed
    /// hold data: an EU deployment lists only its EU datacenters.
    pub datacenters: BTreeMap<String, u32>,
}

impl Default for ReplicationConfig {
    /// One replica: what a single development node can serve at `LOCAL_QUORUM`.
    fn default() -> Self {
        Self { strategy: ReplicationStrategy::SimpleStrategy, replication_factor: 1, datacenters: BTreeMap::new() }
    }
}

/// CQL replication classes, spelled as CQL spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ReplicationStrategy {
    #[default]
    #[serde(rename = "SimpleStrategy")]
    SimpleStrategy,
    #[serde(rename = "NetworkTopologyStrategy")]
    NetworkTopologyStrategy,
}

impl ReplicationStrategy {
    pub fn class_name(self) -> &'static str {
        match self {
            Self::SimpleStrategy => "SimpleStrategy",
            Self::NetworkTopologyStrategy => "NetworkTopologyStrategy",
        }
    }
}

/// `[a-z_][a-z0-9_]{0,47}`: unquoted, so it needs no escaping in any statement.
fn is_keyspace_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 48
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Datacenter names go inside a quoted CQL string: refuse anything that would need escaping.
fn is_datacenter_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

impl ScyllaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.contact_points.is_empty() {
            return Err("scylla.contact_points is empty: list at least one host:port".into());
        }
        if let Some(bad) = self.contact_points.iter().find(|c| c.trim().is_empty()) {
            return Err(format!("scylla.contact_points holds an empty entry ({bad:?})"));
        }
        if !is_keyspace_name(&self.keyspace) {
            return Err(format!(
                "scylla.keyspace {:?} is not a valid keyspace name: use 1-48 characters of [a-z0-9_], not starting with a digit",
                self.keyspace
            ));
        }
        let r = &self.replication;
        match r.strategy {
            ReplicationStrategy::SimpleStrategy => {
                if r.replication_factor == 0 {
                    return Err("scylla.replication.replication_factor must be at least 1".into());
                }
                if !r.datacenters.is_empty() {
                    return Err("scylla.replication.datacenters is only used by NetworkTopologyStrategy".into());
                }
            }
            ReplicationStrategy::NetworkTopologyStrategy => {
                if r.datacenters.is_empty() {
                    return Err("scylla.replication: NetworkTopologyStrategy needs at least one entry in datacenters".into());
                }
                for (dc, n) in &r.datacenters {
                    if !is_datacenter_name(dc) {
                        return Err(format!("scylla.replication.datacenters: {dc:?} is not a datacenter name ([A-Za-z0-9_.-])"));
                    }
                    if *n == 0 {
                        return Err(format!("scylla.replication.datacenters.{dc} must be at least 1"));
                    }
                }
                if let Some(local) = &self.local_datacenter {
                    if !r.datacenters.contains_key(local) {
                        return Err(format!("scylla.local_datacenter {local:?} holds no replicas: it is not in replication.datacenters"));
                    }
                }
            }
        }
        if let Some(dc) = &self.local_datacenter {
            if !is_datacenter_name(dc) {
                return Err(format!("scylla.local_datacenter {dc:?} is not a datacenter name ([A-Za-z0-9_.-])"));
            }
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("scylla.username and scylla.password must be set together".into());
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err("scylla.connect_timeout_ms and scylla.request_timeout_ms must be positive".into());
        }
        if self.max_concurrent_requests == 0 {
            return Err("scylla.max_concurrent_requests must be at least 1".into());
        }
        if self.page_size < 1 {
            return Err("scylla.page_size must be at least 1".into());
        }
        if self.run_ttl_secs > MAX_TTL_SECS {
            return Err(format!("scylla.run_ttl_secs is {}; ScyllaDB's maximum TTL is {MAX_TTL_SECS} (20 years)", self.run_ttl_secs));
        }
        Ok(())
    }

    /// The CQL replication map, e.g. `{'class': 'NetworkTopologyStrategy', 'eu-west': 3}`.
    pub fn replication_cql(&self) -> String {
        let r = &self.replication;
        match r.strategy {
            ReplicationStrategy::SimpleStrategy => {
                format!("{{'class': '{}', 'replication_factor': {}}}", r.strategy.class_name(), r.replication_factor)
            }
            ReplicationStrategy::NetworkTopologyStrategy => {
                let dcs: Vec<String> = r.datacenters.iter().map(|(dc, n)| format!("'{dc}': {n}")).collect();
                format!("{{'class': '{}', {}}}", r.strategy.class_name(), dcs.join(", "))
            }
        }
    }

    /// The TTL bound to writes (`USING TTL`), 0 meaning none. Validated to fit.
    pub(crate) fn ttl(&self) -> i32 {
        self.run_ttl_secs.min(MAX_TTL_SECS) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eu() -> ScyllaConfig {
        ScyllaConfig {
            local_datacenter: Some("eu-west".into()),
            replication: ReplicationConfig {
                strategy: ReplicationStrategy::NetworkTopologyStrategy,
                replication_factor: 0,
                datacenters: BTreeMap::from([("eu-west".into(), 3), ("eu-central".into(), 3)]),
            },
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_valid_and_round_trip_through_serde() {
        let d = ScyllaConfig::default();
        d.validate().unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<ScyllaConfig>(&json).unwrap(), d);
        let partial: ScyllaConfig = serde_json::from_str(r#"{"keyspace": "obs"}"#).unwrap();
        assert_eq!(partial.contact_points, vec!["127.0.0.1:9042"]);
        assert!(serde_json::from_str::<ScyllaConfig>(r#"{"keyspac": "obs"}"#).is_err(), "unknown fields are refused");
    }

    #[test]
    fn strategy_uses_the_cql_class_names() {
        let r: ReplicationConfig = serde_json::from_str(r#"{"strategy": "NetworkTopologyStrategy", "datacenters": {"dc1": 3}}"#).unwrap();
        assert_eq!(r.strategy, ReplicationStrategy::NetworkTopologyStrategy);
        assert!(serde_json::from_str::<ReplicationConfig>(r#"{"strategy": "network_topology"}"#).is_err());
    }

    #[test]
    fn validation_explains_what_is_wrong() {
        let err = |f: &dyn Fn(&mut ScyllaConfig)| {
            let mut c = eu();
            f(&mut c);
            c.validate().unwrap_err()
        };
        eu().validate().unwrap();
        assert!(err(&|c| c.replication.datacenters.clear()).contains("needs at least one entry in datacenters"));
        assert!(err(&|c| c.contact_points.clear()).contains("contact_points is empty"));
        for bad in ["Sextant", "1abc", "a-b", "", "x\"; DROP KEYSPACE y", &"a".repeat(49)] {
            assert!(err(&|c| c.keyspace = bad.into()).contains("not a valid keyspace name"), "{bad:?} accepted");
        }
        for good in ["sextant", "_x", "a1_b2", &"a".repeat(48)] {
            let mut c = eu();
            c.keyspace = good.into();
            c.validate().unwrap();
        }
        assert!(err(&|c| c.local_datacenter = Some("us-east".into())).contains("holds no replicas"));
        assert!(err(&|c| {
            c.replication.datacenters.insert("eu'x".into(), 3);
        })
        .contains("not a datacenter name"));
        assert!(err(&|c| c.password = Some("p".into())).contains("set together"));
        assert!(err(&|c| c.run_ttl_secs = MAX_TTL_SECS + 1).contains("maximum TTL"));
        assert!(err(&|c| c.max_concurrent_requests = 0).contains("max_concurrent_requests"));
        let mut simple = ScyllaConfig::default();
        simple.replication.datacenters.insert("dc1".into(), 1);
        assert!(simple.validate().unwrap_err().contains("only used by NetworkTopologyStrategy"));
    }

    #[test]
    fn replication_lists_exactly_the_configured_datacenters() {
        assert_eq!(eu().replication_cql(), "{'class': 'NetworkTopologyStrategy', 'eu-central': 3, 'eu-west': 3}");
        assert_eq!(ScyllaConfig::default().replication_cql(), "{'class': 'SimpleStrategy', 'replication_factor': 1}");
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = ScyllaConfig { username: Some("u".into()), password: Some("hunter2".into()), ..Default::default() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
