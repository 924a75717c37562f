//! The threads that serve connections: one single-threaded tokio runtime per core, each
//! connection handed whole to the thread with the fewest open (`http::serve` accepts them).
//!
//! Why not the multi-threaded runtime that runs everything else: behind the gateway, one request
//! wakes four tasks in turn (the client's connection, the handler, the product's connection, and
//! back), and a work-stealing runtime moves them between cores, paying a cross-thread wake-up and
//! cold caches at each step. Measured with a bare hyper proxy in front of nginx on two cores
//! (`wrk -t1 -c32`), that alone was 15.5k requests/s against 20–22k with a connection's tasks
//! kept on one thread. What a handler spawns (a WebSocket tunnel, the product's connection) runs
//! on its connection's thread; background work (the drain, the KV's connections) stays on the
//! main runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// Which serving thread this is (`None` on any other thread).
    static SERVING_THREAD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// How many serving threads a server starts: one per core the process may use.
pub(crate) fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The serving thread the caller runs on, if it is one: per-thread resources (the gateway's
/// connection pools) are picked by it.
pub(crate) fn current() -> Option<usize> {
    SERVING_THREAD.with(Cell::get)
}

struct Worker {
    handle: Handle,
    /// Connections this thread is serving.
    open: Arc<AtomicUsize>,
    /// Dropping it ends the thread's runtime (and whatever still runs on it).
    _stop: oneshot::Sender<()>,
}

/// The serving threads of one server; they stop when this is dropped.
pub(crate) struct ServingThreads {
    workers: Vec<Worker>,
}

impl ServingThreads {
    pub(crate) fn start() -> std::io::Result<ServingThreads> {
        let workers = (0..count()).map(start_worker).collect::<std::io::Result<Vec<_>>>()?;
        Ok(ServingThreads { workers })
    }

    /// Serve one connection on the least busy thread. `connection` is called there, so that it
    /// registers its socket with that thread's reactor.
    pub(crate) fn spawn<F, Fut>(&self, connection: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self.workers.iter().min_by_key(|w| w.open.load(Ordering::Relaxed)).expect("at least one serving thread");
        let open = Open::count(worker.open.clone());
        worker.handle.spawn(async move {
            let _open = open;
            connection().await
        });
    }
}

fn start_worker(index: usize) -> std::io::Result<Worker> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new().name(format!("tollgate-serve-{index}")).spawn(move || {
        SERVING_THREAD.with(|t| t.set(Some(index)));
        let _ = runtime.block_on(stopped);
        // Connections still open (the server was dropped, not shut down) end with their tasks.
        runtime.shutdown_background();
    })?;
    Ok(Worker { handle, open: Arc::new(AtomicUsize::new(0)), _stop: stop })
}

/// One connection on a thread's count, until its task ends or is dropped.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn count(open: Arc<AtomicUsize>) -> Open {
        open.fetch_add(1, Ordering::Relaxed);
        Open(open)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
