//! Signed, expiring URLs for attachment downloads. The SDK fetches `s3_urls` without any
//! credentials, so the URL itself must authorise exactly one object for a limited time.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use sextant_core::{RunId, TenantId, Timestamp};

const URL_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl UrlSigner {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn sign(&self, tenant: TenantId, run: RunId, name: &str, expires: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{tenant}/{run}/{name}/{expires}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A relative URL (the SDK resolves it against its endpoint).
    pub fn attachment_url(&self, tenant: TenantId, run: RunId, name: &str) -> String {
        let expires = Timestamp::now().millis() / 1000 + URL_LIFETIME.as_secs() as i64;
        let sig = self.sign(tenant, run, name, expires);
        format!("/public/attachments/{tenant}/{run}/{}?expires={expires}&signature={sig}", percent_encode(name))
    }

    pub fn verify(&self, tenant: TenantId, run: RunId, name: &str, expires: i64, signature: &str) -> bool {
        if expires < Timestamp::now().millis() / 1000 {
            return false;
        }
        let Ok(given) = hex::decode(signature) else { return false };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{tenant}/{run}/{name}/{expires}").as_bytes());
        mac.verify_slice(&given).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_part_and_expire() {
        let s = UrlSigner::new(b"secret".to_vec());
        let (t, r) = (TenantId(uuid::Uuid::from_u128(1)), RunId(uuid::Uuid::from_u128(2)));
        let exp = Timestamp::now().millis() / 1000 + 60;
        let sig = s.sign(t, r, "image", exp);
        assert!(s.verify(t, r, "image", exp, &sig));
        assert!(!s.verify(t, r, "other", exp, &sig));
        assert!(!s.verify(TenantId(uuid::Uuid::from_u128(9)), r, "image", exp, &sig));
        assert!(!s.verify(t, r, "image", exp + 1, &sig));
        assert!(!s.verify(t, r, "image", 1, &s.sign(t, r, "image", 1)), "expired");
        assert!(!UrlSigner::new(b"other".to_vec()).verify(t, r, "image", exp, &sig));
        assert!(s.attachment_url(t, r, "a b").contains("/a%20b?"));
    }
}
