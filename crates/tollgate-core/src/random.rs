//! Random tokens (ids, idempotency keys, lease holders).

/// A random token of letters and digits.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(len).map(char::from).collect()
}
