//! Which thread a piece of work runs on. The `tollgate` crate serves connections on one
//! single-threaded tokio runtime per core (its `threads` module); resources made per serving thread
//! (a Redis connection, the drain's gathered wakes) keep a request's work on its own thread, where
//! the multi-threaded runtime that runs the background work would hand it between threads.

/// Whether the caller runs on a single-threaded tokio runtime: a serving thread.
pub(crate) fn on_serving_thread() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}
