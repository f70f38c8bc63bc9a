//! API-key authentication and tenant resolution.
//!
//! Keys are configured as SHA-256 hashes (`sha256:<hex>`), each bound to one tenant; the
//! server never stores or logs a key in the clear. A request's `x-api-key` (or
//! `Authorization: Bearer`) selects the tenant; an `X-Tenant-Id` header, when sent, must name
//! that same tenant. With no keys configured the server runs open, as one local tenant.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use sextant_core::{TenantId, LOCAL_TENANT};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A label for logs and metrics (never the key).
    pub name: String,
    /// `sha256:<64 hex digits>` of the key; `sextant hash-key` prints it.
    pub hash: String,
    pub tenant: TenantId,
}

/// An operator key for the `/admin` endpoints (dead letters): not bound to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKeyConfig {
    pub name: String,
    /// `sha256:<64 hex digits>` of the key.
    pub hash: String,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    /// The key's label (`local` in open mode).
    pub key_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send it in the x-api-key header")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("X-Tenant-Id {0:?} does not match the API key's tenant")]
    TenantMismatch(String),
    #[error("operator endpoints need an admin key, and none is configured (auth.admin_keys)")]
    NoAdminKeys,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid API key configuration {name:?}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Principal>,
    admins: HashMap<[u8; 32], String>,
}

fn parse_hash(hash: &str) -> Result<[u8; 32], &'static str> {
    let hex_part = hash.strip_prefix("sha256:").ok_or("hash must start with sha256:")?;
    let bytes = hex::decode(hex_part).map_err(|_| "hash is not hexadecimal")?;
    bytes.try_into().map_err(|_| "hash must be 64 hex digits")
}

/// `sha256:<hex>` of a key, the form the configuration takes.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

impl Authenticator {
    pub fn new(keys: &[ApiKeyConfig]) -> Result<Self, ConfigError> {
        let mut by_hash = HashMap::new();
        for k in keys {
            let err = |reason: &str| ConfigError { name: k.name.clone(), reason: reason.into() };
            let digest = parse_hash(&k.hash).map_err(err)?;
            if by_hash.insert(digest, Principal { tenant: k.tenant, key_name: k.name.clone() }).is_some() {
                return Err(err("the same key is configured twice"));
            }
        }
        Ok(Self { by_hash, admins: HashMap::new() })
    }

    /// Adds operator keys (`auth.admin_keys`); a key may not be both a tenant's and an operator's.
    pub fn with_admin_keys(mut self, keys: &[AdminKeyConfig]) -> Result<Self, ConfigError> {
        for k in keys {
            let err = |reason: &str| ConfigError { name: k.name.clone(), reason: reason.into() };
            let digest = parse_hash(&k.hash).map_err(err)?;
            if self.by_hash.contains_key(&digest) || self.admins.insert(digest, k.name.clone()).is_some() {
                return Err(err("the same key is configured twice"));
            }
        }
        Ok(self)
    }

    /// An operator: any caller in open mode (no keys of either kind), else a configured admin
    /// key. Returns the key's label.
    pub fn authenticate_admin(&self, api_key: Option<&str>) -> Result<String, AuthError> {
        if self.admins.is_empty() {
            return if self.is_open() { Ok("local".into()) } else { Err(AuthError::NoAdminKeys) };
        }
        let key = api_key.map(str::trim).filter(|k| !k.is_empty()).ok_or(AuthError::MissingKey)?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.admins.get(&digest).cloned().ok_or(AuthError::InvalidKey)
    }

    /// No keys: every request is the local tenant.
    pub fn is_open(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// `api_key` is the `x-api-key` header or a bearer token; `tenant_header` is `X-Tenant-Id`.
    pub fn authenticate(&self, api_key: Option<&str>, tenant_header: Option<&str>) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal { tenant: LOCAL_TENANT, key_name: "local".into() });
        }
        let key = api_key.map(str::trim).filter(|k| !k.is_empty()).ok_or(AuthError::MissingKey)?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let principal = self.by_hash.get(&digest).ok_or(AuthError::InvalidKey)?;
        if let Some(h) = tenant_header.map(str::trim).filter(|h| !h.is_empty()) {
            match h.parse::<TenantId>() {
                Ok(t) if t == principal.tenant => {}
                _ => return Err(AuthError::TenantMismatch(h.chars().take(64).collect())),
            }
        }
        Ok(principal.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u128) -> TenantId {
        TenantId(uuid::Uuid::from_u128(n))
    }

    fn auth() -> Authenticator {
        Authenticator::new(&[
            ApiKeyConfig { name: "a".into(), hash: hash_key("key-a"), tenant: tenant(1) },
            ApiKeyConfig { name: "b".into(), hash: hash_key("key-b"), tenant: tenant(2) },
        ])
        .unwrap()
    }

    #[test]
    fn admin_keys_are_separate_from_tenant_keys() {
        let a = auth();
        assert_eq!(a.authenticate_admin(Some("key-a")), Err(AuthError::NoAdminKeys), "a tenant key is no operator key");
        let a = a.with_admin_keys(&[AdminKeyConfig { name: "ops".into(), hash: hash_key("ops-key") }]).unwrap();
        assert_eq!(a.authenticate_admin(Some("ops-key")).unwrap(), "ops");
        assert_eq!(a.authenticate_admin(Some("key-a")), Err(AuthError::InvalidKey));
        assert_eq!(a.authenticate_admin(None), Err(AuthError::MissingKey));
        assert_eq!(a.authenticate(Some("ops-key"), None), Err(AuthError::InvalidKey), "an operator key reads no tenant's data");
        assert!(Authenticator::new(&[]).unwrap().authenticate_admin(None).is_ok(), "open mode");
        let dup = auth().with_admin_keys(&[AdminKeyConfig { name: "x".into(), hash: hash_key("key-a") }]);
        assert!(dup.is_err());
    }

    #[test]
    fn keys_select_their_tenant() {
        let a = auth();
        assert_eq!(a.authenticate(Some("key-a"), None).unwrap().tenant, tenant(1));
        assert_eq!(a.authenticate(Some("key-b"), None).unwrap().tenant, tenant(2));
        assert_eq!(a.authenticate(Some("key-c"), None), Err(AuthError::InvalidKey));
        assert_eq!(a.authenticate(None, None), Err(AuthError::MissingKey));
        assert_eq!(a.authenticate(Some("  "), None), Err(AuthError::MissingKey));
    }

    #[test]
    fn tenant_header_must_match_the_key() {
        let a = auth();
        let t1 = tenant(1).to_string();
        let t2 = tenant(2).to_string();
        assert!(a.authenticate(Some("key-a"), Some(&t1)).is_ok());
        assert!(matches!(a.authenticate(Some("key-a"), Some(&t2)), Err(AuthError::TenantMismatch(_))));
        assert!(matches!(a.authenticate(Some("key-a"), Some("not-a-uuid")), Err(AuthError::TenantMismatch(_))));
    }

    #[test]
    fn open_mode_is_the_local_tenant() {
        let a = Authenticator::new(&[]).unwrap();
        assert!(a.is_open());
        assert_eq!(a.authenticate(None, None).unwrap().tenant, LOCAL_TENANT);
    }

    #[test]
    fn bad_configuration_is_rejected() {
        let bad = |hash: &str| Authenticator::new(&[ApiKeyConfig { name: "x".into(), hash: hash.into(), tenant: tenant(1) }]);
        assert!(bad("plaintext").is_err());
        assert!(bad("sha256:zz").is_err());
        assert!(bad("sha256:abcd").is_err());
        let dup = ApiKeyConfig { name: "x".into(), hash: hash_key("k"), tenant: tenant(1) };
        assert!(Authenticator::new(&[dup.clone(), dup]).is_err());
    }
}
