//! Projects (the LangSmith API's "sessions"): a named bucket of runs within a tenant.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{ProjectId, TenantId};
use crate::time::Timestamp;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: ProjectId,
    pub tenant_id: TenantId,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `extra.metadata` holds the project's metadata (evaluate() puts dataset versions here).
    #[serde(default)]
    pub extra: Map<String, Value>,
    #[serde(default)]
    pub reference_dataset_id: Option<uuid::Uuid>,
    pub start_time: Timestamp,
    #[serde(default)]
    pub end_time: Option<Timestamp>,
    /// Experiment bookkeeping the SDK sends on creation (`num_examples`, `evaluator_keys`, ...),
    /// kept verbatim.
    #[serde(default)]
    pub experiment: Map<String, Value>,
}

/// A partial update: `None` leaves a field unchanged. `end_time: Some(None)` clears it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub extra: Option<Map<String, Value>>,
    #[serde(default)]
    pub end_time: Option<Option<Timestamp>>,
}

impl Project {
    /// A project created now, with nothing but its id and name.
    pub fn new(tenant: TenantId, id: ProjectId, name: String) -> Self {
        Self {
            id,
            tenant_id: tenant,
            name,
            description: None,
            extra: Map::new(),
            reference_dataset_id: None,
            start_time: Timestamp::now(),
            end_time: None,
            experiment: Map::new(),
        }
    }

    pub fn apply(&mut self, p: &ProjectPatch) {
        if let Some(n) = &p.name {
            self.name = n.clone();
        }
        if let Some(d) = &p.description {
            self.description = Some(d.clone());
        }
        if let Some(e) = &p.extra {
            for (k, v) in e {
                self.extra.insert(k.clone(), v.clone());
            }
        }
        if let Some(e) = p.end_time {
            self.end_time = e;
        }
    }

    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.extra.get("metadata").and_then(Value::as_object)
    }
}

/// Project names are user input that ends up in URLs and logs: bound them.
pub fn validate_project_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("project name must not be empty".into());
    }
    if name.len() > 1024 {
        return Err(format!("project name is {} bytes; the limit is 1024", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err("project name must not contain control characters".into());
    }
    Ok(())
}
