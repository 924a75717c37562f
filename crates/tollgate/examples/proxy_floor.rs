//! The floor of a hyper proxy on this machine, to compare the gateway with: a bare HTTP/1 proxy
//! (no gate, no routing, no logging) in front of a product, on the work-stealing runtime (`mt`)
//! or on one single-threaded runtime per thread sharing the port (`st`, SO_REUSEPORT).
//!
//! Usage: `proxy_floor mt|st <listen port> <product port> [threads]`, then load it with
//! `wrk -t1 -c32` as `bench_gate` does (ARCHITECTURE.md has the numbers).
use axum::body::Body;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;

fn client() -> Client<HttpConnector, hyper::body::Incoming> {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(c)
}

async fn serve(listener: tokio::net::TcpListener, up: u16) {
    let client = client();
    loop {
        let (s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let client = client.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let client = client.clone();
                async move {
                    let pq = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
                    *req.uri_mut() = format!("http://127.0.0.1:{up}{pq}").parse().unwrap();
                    let r = client.request(req).await.unwrap();
                    Ok::<_, Infallible>(r.map(Body::new))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
        });
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap();
    let port: u16 = std::env::args().nth(2).unwrap().parse().unwrap();
    let up: u16 = std::env::args().nth(3).unwrap().parse().unwrap();
    let threads: usize = std::env::args().nth(4).and_then(|s| s.parse().ok()).unwrap_or(2);
    if mode == "mt" {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
        rt.block_on(async { serve(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap(), up).await });
    } else {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(async {
                        let sock = tokio::net::TcpSocket::new_v4().unwrap();
                        sock.set_reuseport(true).unwrap();
                        sock.set_reuseaddr(true).unwrap();
                        sock.bind(([127, 0, 0, 1], port).into()).unwrap();
                        serve(sock.listen(1024).unwrap(), up).await
                    })
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
}
