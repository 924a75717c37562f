//! `Stripe-Signature` verification: HMAC-SHA256 over `"{t}.{raw body}"` keyed by the endpoint secret,
//! any `v1` may match (secrets being rolled), compared in constant time, and only timestamps older
//! than the tolerance rejected (as Stripe's SDKs do).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TOLERANCE_SECONDS: i64 = 300;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("Stripe-Signature has no timestamp or no v1 signature")]
    Malformed,
    #[error("no v1 signature matches this payload")]
    Mismatch,
    #[error("timestamp outside the {TOLERANCE_SECONDS} s tolerance")]
    Stale,
}

pub fn verify(payload: &[u8], header: Option<&str>, secret: &str, now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse().ok(),
            Some(("v1", sig)) => signatures.extend(hex::decode(sig).ok()),
            _ => {} // other schemes (v0) are ignored, against downgrade attacks
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    if !signatures.iter().any(|sig| mac.clone().verify_slice(sig).is_ok()) {
        return Err(SignatureError::Mismatch);
    }
    if now - timestamp > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stripe_emulator::signature_header;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn accepts_what_stripe_signs() {
        let body = br#"{"id":"evt_1"}"#;
        let header = signature_header(SECRET, 1_000_000, body);
        assert_eq!(verify(body, Some(&header), SECRET, 1_000_000 + 299), Ok(()));
        // A second v1 (secret roll) and a v0 are tolerated.
        let rolled = format!("{},v1={},v0=deadbeef", header, "00".repeat(32));
        assert_eq!(verify(body, Some(&rolled), SECRET, 1_000_000), Ok(()));
        // Future timestamps are not rejected (only stale ones), as in Stripe's SDKs.
        assert_eq!(verify(body, Some(&header), SECRET, 999_000), Ok(()));
    }

    #[test]
    fn rejects_everything_else() {
        let body = br#"{"id":"evt_1"}"#;
        let header = signature_header(SECRET, 1_000_000, body);
        assert_eq!(verify(body, None, SECRET, 1_000_000), Err(SignatureError::Missing));
        assert_eq!(verify(body, Some("garbage"), SECRET, 1_000_000), Err(SignatureError::Malformed));
        assert_eq!(verify(body, Some("t=1000000"), SECRET, 1_000_000), Err(SignatureError::Malformed));
        assert_eq!(verify(br#"{"id":"evt_2"}"#, Some(&header), SECRET, 1_000_000), Err(SignatureError::Mismatch));
        assert_eq!(verify(body, Some(&header), "whsec_other", 1_000_000), Err(SignatureError::Mismatch));
        assert_eq!(verify(body, Some(&header), SECRET, 1_000_000 + 301), Err(SignatureError::Stale));
        let only_v0 = header.replace("v1=", "v0=");
        assert_eq!(verify(body, Some(&only_v0), SECRET, 1_000_000), Err(SignatureError::Malformed));
    }

    proptest::proptest! {
        /// Any `Stripe-Signature` text: no panic, and only a correct signature of these exact bytes
        /// is accepted.
        #[test]
        fn only_the_signed_bytes_verify(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), header in proptest::prelude::any::<String>(), flip in 0usize..256) {
            let now = 1_000_000;
            proptest::prop_assert!(verify(&body, Some(&header), SECRET, now).is_err() || header.contains("v1="));
            let signed = signature_header(SECRET, now, &body);
            proptest::prop_assert_eq!(verify(&body, Some(&signed), SECRET, now), Ok(()));
            if !body.is_empty() {
                let mut tampered = body.clone();
                tampered[flip % body.len()] ^= 0x01;
                proptest::prop_assert!(verify(&tampered, Some(&signed), SECRET, now).is_err());
            }
        }
    }
}
