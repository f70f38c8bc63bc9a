//! Typed identifiers. Each is a UUID on the wire and 16 big-endian bytes in storage keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
            pub fn from_bytes(b: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(b))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

uuid_id!(
    /// An isolated customer: every stored key and every event carries one.
    TenantId
);
uuid_id!(
    /// A project, which the LangSmith API calls a "session".
    ProjectId
);
uuid_id!(
    /// A run (one traced call). A trace is identified by its root run's id.
    RunId
);
uuid_id!(
    /// A feedback entry (client-generated, UUIDv7 from the SDK).
    FeedbackId
);
uuid_id!(
    /// An annotation queue.
    QueueId
);
uuid_id!(
    /// A dataset (a versioned set of examples).
    DatasetId
);
uuid_id!(
    /// An example of a dataset; the same id across the example's versions.
    ExampleId
);
uuid_id!(
    /// A prompt repository of the prompt hub (its handle can be reused after a delete; the id
    /// cannot, so a deleted repository's commits never reappear under a new one).
    RepoId
);

/// Namespace for deriving the ids of projects created implicitly by name, so that every
/// replica that sees the same unknown name derives the same id.
const PROJECT_NAME_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a55_9b0e_4c1d_8a77_3e5d_0c4b_9f21);

impl ProjectId {
    /// The id of a project that is created because a run named it (`session_name`).
    pub fn derived_from_name(tenant: TenantId, name: &str) -> Self {
        let mut seed = Vec::with_capacity(16 + name.len());
        seed.extend_from_slice(tenant.as_bytes());
        seed.extend_from_slice(name.as_bytes());
        Self(Uuid::new_v5(&PROJECT_NAME_NAMESPACE, &seed))
    }
}
