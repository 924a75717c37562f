//! Clerk's webhooks are signed by Svix (the Standard Webhooks scheme): HMAC-SHA256 with the
//! base64 secret after `whsec_`, over `{svix-id}.{svix-timestamp}.{raw body}`, any `v1,` entry of
//! `svix-signature` may match, and the timestamp must be within 300 s. Hand-written on `hmac` and
//! `sha2` (which Tollgate already uses for Stripe's signatures): the `svix` crate is a whole API
//! client for these twenty lines.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a delivery's timestamp may be from now, either way.
pub(crate) const TOLERANCE_SECONDS: i64 = 300;

#[derive(Clone)]
pub(crate) struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// `whsec_<base64>` (the prefix is optional).
    pub(crate) fn parse(secret: &str) -> Option<SigningSecret> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        base64::engine::general_purpose::STANDARD.decode(encoded).ok().filter(|k| !k.is_empty()).map(SigningSecret)
    }

    fn signature(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `v1,…` signature of a message.
    #[cfg(test)]
    fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let bytes = self.signature(id, &timestamp.to_string(), body).finalize().into_bytes();
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

/// The three headers of a delivery, as received.
pub(crate) struct Delivery<'a> {
    pub(crate) id: Option<&'a str>,
    pub(crate) timestamp: Option<&'a str>,
    pub(crate) signature: Option<&'a str>,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum SvixError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("svix-timestamp is not a number")]
    BadTimestamp,
    #[error("the delivery is more than {TOLERANCE_SECONDS} s old or in the future")]
    OutsideTolerance,
    #[error("no signature matches")]
    NoMatch,
}

/// Check a delivery at `now` (unix seconds); on success, its id (for replay protection).
pub(crate) fn verify<'a>(secret: &SigningSecret, delivery: &Delivery<'a>, body: &[u8], now: i64) -> Result<&'a str, SvixError> {
    let id = delivery.id.ok_or(SvixError::MissingHeader("svix-id"))?;
    let timestamp = delivery.timestamp.ok_or(SvixError::MissingHeader("svix-timestamp"))?;
    let signatures = delivery.signature.ok_or(SvixError::MissingHeader("svix-signature"))?;
    let seconds: i64 = timestamp.parse().map_err(|_| SvixError::BadTimestamp)?;
    if (now - seconds).abs() > TOLERANCE_SECONDS {
        return Err(SvixError::OutsideTolerance);
    }
    let matches = signatures.split(' ').filter_map(|entry| entry.strip_prefix("v1,")).any(|encoded| {
        let Ok(sent) = base64::engine::general_purpose::STANDARD.decode(encoded) else { return false };
        // `verify_slice` compares in constant time.
        secret.signature(id, timestamp, body).verify_slice(&sent).is_ok()
    });
    if matches {
        Ok(id)
    } else {
        Err(SvixError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn delivery<'a>(signature: &'a str, timestamp: &'a str) -> Delivery<'a> {
        Delivery { id: Some(ID), timestamp: Some(timestamp), signature: Some(signature) }
    }

    /// The vector from Svix's own test suite.
    #[test]
    fn the_published_vector_verifies() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TS, BODY), SIGNATURE);
        assert_eq!(verify(&secret, &delivery(SIGNATURE, &TS.to_string()), BODY, TS), Ok(ID));
        let unprefixed = SigningSecret::parse(SECRET.trim_start_matches("whsec_")).unwrap();
        assert_eq!(verify(&unprefixed, &delivery(SIGNATURE, &TS.to_string()), BODY, TS + 299), Ok(ID));
    }

    #[test]
    fn bad_stale_and_malformed_deliveries_are_refused() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let ts = TS.to_string();
        let check = |d: &Delivery, body: &[u8], now: i64| verify(&secret, d, body, now).map(str::to_string);
        assert_eq!(check(&delivery(SIGNATURE, &ts), br#"{"test": 2432232315}"#, TS), Err(SvixError::NoMatch), "one byte changed");
        let other = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx").unwrap();
        assert_eq!(verify(&other, &delivery(SIGNATURE, &ts), BODY, TS), Err(SvixError::NoMatch), "another secret");
        assert_eq!(check(&delivery(SIGNATURE, &ts), BODY, TS + 301), Err(SvixError::OutsideTolerance), "stale");
        assert_eq!(check(&delivery(SIGNATURE, &ts), BODY, TS - 301), Err(SvixError::OutsideTolerance), "from the future");
        assert_eq!(check(&delivery(SIGNATURE, &ts), BODY, TS - 299), Ok(ID.to_string()));
        assert_eq!(check(&delivery(SIGNATURE, "soon"), BODY, TS), Err(SvixError::BadTimestamp));
        let several = format!("v1,bm90IGl0 {SIGNATURE}");
        assert_eq!(check(&delivery(&several, &ts), BODY, TS), Ok(ID.to_string()), "any v1 entry may match");
        let v2 = SIGNATURE.replace("v1,", "v2,");
        assert_eq!(check(&delivery(&v2, &ts), BODY, TS), Err(SvixError::NoMatch), "only v1 counts");
        assert_eq!(check(&delivery("v1,***", &ts), BODY, TS), Err(SvixError::NoMatch));
        for (missing, d) in [
            ("svix-id", Delivery { id: None, ..delivery(SIGNATURE, &ts) }),
            ("svix-timestamp", Delivery { timestamp: None, ..delivery(SIGNATURE, &ts) }),
            ("svix-signature", Delivery { signature: None, ..delivery(SIGNATURE, &ts) }),
        ] {
            assert_eq!(check(&d, BODY, TS), Err(SvixError::MissingHeader(missing)));
        }
    }

    proptest::proptest! {
        /// Whatever the headers hold, verification answers (never panics), and only the true
        /// signature passes.
        #[test]
        fn arbitrary_headers_never_verify(signature in ".{0,200}", timestamp in "[0-9a-z-]{0,12}") {
            let secret = SigningSecret::parse(SECRET).unwrap();
            let outcome = verify(&secret, &Delivery { id: Some(ID), timestamp: Some(&timestamp), signature: Some(&signature) }, BODY, TS);
            proptest::prop_assert!(outcome.is_err() || signature.contains(&SIGNATURE[3..]));
        }
    }
}
