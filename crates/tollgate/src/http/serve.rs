//! The accept loop: HTTP/1.1 connections served by hyper with the limits a public server needs,
//! which `axum::serve` does not set — a deadline for each request's headers (a client that sends
//! them slowly, or never, is disconnected), a cap on open connections (beyond it a new
//! connection is closed at once), and graceful shutdown that lets requests in flight finish.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tower::ServiceExt;

/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections open at once.
const MAX_CONNECTIONS: usize = 4096;

pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    // Closing `stop` asks every connection to finish; each holds a `done` sender until it has.
    let (stop, stopped) = watch::channel(());
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let slots = std::sync::Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // over capacity: the stream is dropped, which closes it
        };
        let _ = stream.set_nodelay(true);
        // Handlers see the peer's address as axum's `ConnectInfo` (sign-in throttling uses it).
        let service =
            TowerToHyperService::new(router.clone().map_request(move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                request
            }));
        let (mut stopped, done) = (stopped.clone(), done.clone());
        tokio::spawn(async move {
            let (_slot, _done) = (slot, done);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    drop(stop);
    drop(done);
    let _ = all_done.recv().await; // every connection has finished
    Ok(())
}
