//! Signed feedback tokens: an expiring grant to post feedback with one key on one run,
//! without an API key, carried inside the token and authenticated by HMAC-SHA256 under a key
//! derived from the server's signing key.
//!
//! Tokens are now issued as stored UUIDs (the SDK parses the token URL's last segment as a
//! UUID; see `FeedbackService::create_token`). This form is only verified, so the signed
//! tokens handed out before keep working until they expire (90 days at most).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use sextant_core::{RunId, TenantId, Timestamp};

/// What a token grants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// The token id; feedback posted with the token gets this id, so posting again (a user
    /// changing a thumbs-up to a thumbs-down) updates that one entry.
    pub id: Uuid,
    pub tenant: TenantId,
    pub run_id: RunId,
    pub key: String,
    /// Expiry, microseconds since the epoch.
    pub expires_us: i64,
    #[serde(default)]
    pub feedback_config: Option<serde_json::Value>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired(Timestamp),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed => f.write_str("feedback token is malformed"),
            Self::BadSignature => f.write_str("feedback token signature is invalid"),
            Self::Expired(at) => write!(f, "feedback token expired at {}", at.to_iso()),
        }
    }
}

#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
}

impl TokenSigner {
    /// `server_key` is the server's signing key; tokens use a key derived from it, so a
    /// token can never be confused with another signed value.
    pub fn new(server_key: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(server_key).expect("HMAC takes any key length");
        mac.update(b"sextant feedback tokens v1");
        Self { key: mac.finalize().into_bytes().to_vec() }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(payload);
        mac
    }

    /// `v1.<hex payload>.<hex signature>`: URL-safe as it is.
    pub fn issue(&self, grant: &Grant) -> String {
        let payload = serde_json::to_vec(grant).expect("a grant serialises");
        let sig = self.mac(&payload).finalize().into_bytes();
        format!("v1.{}.{}", hex::encode(&payload), hex::encode(sig))
    }

    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Grant, TokenError> {
        let mut parts = token.split('.');
        let (Some("v1"), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let payload = hex::decode(payload).map_err(|_| TokenError::Malformed)?;
        let sig = hex::decode(sig).map_err(|_| TokenError::Malformed)?;
        self.mac(&payload).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let grant: Grant = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if grant.expires_us <= now.micros() {
            return Err(TokenError::Expired(Timestamp(grant.expires_us)));
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(expires_us: i64) -> Grant {
        Grant {
            id: Uuid::now_v7(),
            tenant: TenantId(Uuid::now_v7()),
            run_id: RunId(Uuid::now_v7()),
            key: "thumbs".into(),
            expires_us,
            feedback_config: None,
        }
    }

    #[test]
    fn tokens_verify_only_unexpired_and_untampered() {
        let s = TokenSigner::new(b"server key");
        let g = grant(Timestamp::now().micros() + 60_000_000);
        let t = s.issue(&g);
        assert_eq!(s.verify(&t, Timestamp::now()), Ok(g.clone()));
        assert!(matches!(s.verify(&t, Timestamp(g.expires_us)), Err(TokenError::Expired(_))));
        assert_eq!(TokenSigner::new(b"other key").verify(&t, Timestamp::now()), Err(TokenError::BadSignature));
        // Change the key inside the payload (hex of "thumbs" -> "thumbz"): the signature no longer fits.
        let forged = t.replacen(&hex::encode("thumbs"), &hex::encode("thumbz"), 1);
        assert_ne!(forged, t);
        assert_eq!(s.verify(&forged, Timestamp::now()), Err(TokenError::BadSignature));
        for bad in ["", "v1", "v2.00.00", "v1.zz.00", "v1.00.00.00"] {
            assert!(s.verify(bad, Timestamp::now()).is_err(), "{bad}");
        }
    }
}
