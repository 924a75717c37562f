//! What every KV operation returns: [`KvFuture`], an answer known at the call or one to await.
//!
//! Why not simply a boxed future: the memory store answers in the call, and a box per call (two,
//! with `Metered`'s wrapper around it) made 4 of the 31 allocations of an API request through the
//! gateway (its quota check and its usage count). A known answer is carried as it is, and
//! `Metered` labels a future with its operation instead of wrapping it in another.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use super::KvError;

/// A KV operation's outcome (see the module's doc). Awaiting it is all a caller does.
#[must_use = "a KV operation's outcome is known only once awaited"]
pub struct KvFuture<'a, T> {
    outcome: Outcome<'a, T>,
    /// The operation a failure is counted under (`tollgate_kv_errors_total`), when `Metered` set it.
    counted_as: Option<&'static str>,
}

enum Outcome<'a, T> {
    /// Taken by the poll that answers.
    Known(Option<Result<T, KvError>>),
    Awaited(Pin<Box<dyn Future<Output = Result<T, KvError>> + Send + 'a>>),
}

impl<'a, T> KvFuture<'a, T> {
    /// An operation that runs when awaited (a Redis round trip, a redb transaction).
    pub fn new(operation: impl Future<Output = Result<T, KvError>> + Send + 'a) -> KvFuture<'a, T> {
        KvFuture { outcome: Outcome::Awaited(Box::pin(operation)), counted_as: None }
    }

    /// An operation already done: its outcome.
    pub fn ready(outcome: Result<T, KvError>) -> KvFuture<'a, T> {
        KvFuture { outcome: Outcome::Known(Some(outcome)), counted_as: None }
    }

    /// The same operation, its failure counted under `operation` (`Metered`).
    pub(crate) fn counted_as(mut self, operation: &'static str) -> KvFuture<'a, T> {
        self.counted_as = Some(operation);
        self
    }
}

impl<T: Unpin> Future for KvFuture<'_, T> {
    type Output = Result<T, KvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = match &mut this.outcome {
            Outcome::Known(outcome) => {
                outcome.take().unwrap_or_else(|| Err(KvError::Unavailable("a KV operation was awaited twice".to_string())))
            }
            Outcome::Awaited(operation) => ready!(operation.as_mut().poll(cx)),
        };
        if let (Err(_), Some(operation)) = (&outcome, this.counted_as) {
            crate::metrics::METRICS.kv_errors.with_label_values(&[operation]).inc();
        }
        Poll::Ready(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(operation: &str) -> u64 {
        crate::metrics::METRICS.kv_errors.with_label_values(&[operation]).get()
    }

    fn down() -> KvError {
        KvError::Unavailable("down".to_string())
    }

    /// A failure is counted once, under its label, whether the store answered in the call or
    /// later; a success, or a failure nobody labelled, is not.
    #[tokio::test]
    async fn a_labelled_failure_is_counted_once_known_or_awaited() {
        let (known, awaited) = ("test_future_known", "test_future_awaited");
        assert_eq!(KvFuture::ready(Ok(7)).counted_as(known).await.ok(), Some(7));
        assert!(KvFuture::<()>::ready(Err(down())).await.is_err(), "unlabelled");
        assert_eq!(failures(known), 0);
        assert!(KvFuture::<()>::ready(Err(down())).counted_as(known).await.is_err());
        assert_eq!(failures(known), 1);

        assert_eq!(
            KvFuture::new(async {
                tokio::task::yield_now().await;
                Ok("v")
            })
            .counted_as(awaited)
            .await
            .ok(),
            Some("v")
        );
        assert_eq!(failures(awaited), 0);
        let failing = KvFuture::<()>::new(async {
            tokio::task::yield_now().await;
            Err(down())
        });
        assert!(failing.counted_as(awaited).await.is_err());
        assert_eq!(failures(awaited), 1);
    }

    /// Through `Metered`, the memory store still does an operation in the call: a caller dropped
    /// before awaiting (a client hanging up) leaves it done whole (`kv::memory`'s promise).
    #[tokio::test]
    async fn the_metered_memory_store_has_done_an_operation_before_it_is_awaited() {
        use crate::kv::Kv;
        let kv = crate::kv::metered::Metered(std::sync::Arc::new(crate::kv::memory::MemoryKv::default()));
        drop(kv.set("k", "v"));
        assert_eq!(kv.get("k").await.unwrap().as_deref(), Some("v"));
        assert!(kv.set_if_absent("k", "other").await.is_ok_and(|stored| !stored));
        assert_eq!(kv.get("k").await.unwrap().as_deref(), Some("v"));
    }
}
