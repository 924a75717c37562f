//! What the black-box tests and benchmarks of both crates share (a dev-dependency only): the
//! emulator started with the suites' seed, form encoding, a reply with its body read once, and
//! latency percentiles.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

/// The catalogue every suite seeds its emulator with: `price_pro_monthly` ($10) and
/// `price_pro_yearly` ($100). (This crate does not depend on the emulator, whose own tests use it.)
pub const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/seed.json");

pub fn encode(form: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form {
        s.append_pair(k, v);
    }
    s.finish()
}

/// An HTTP answer, read whole: status, headers, the text, and the text as JSON (`Null` if not).
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, text, body }
    }

    /// The body as JSON; a test that expects JSON fails here, saying what came instead.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text))
    }

    pub fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// Pay Checkout Session `session` on the emulator at `stripe` as its hosted page would, with the
/// form `fields` (`card_number`, and `promotion_code` or the like); the answer is not followed
/// (a paid session answers 303 to its success URL).
pub async fn pay_checkout(stripe: &str, session: &str, fields: &[(&str, &str)]) -> Reply {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("an HTTP client");
    let request = http
        .post(format!("{stripe}/_emulator/checkout/sessions/{session}/complete"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(fields));
    Reply::read(request.send().await.expect("the emulator answers")).await
}

/// Every `.rs` file below `dir` (the layer checks of both crates read their sources with it).
pub fn rust_sources(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// The `p` quantile (0–1) of sorted latencies, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// Page text with HTML's five escapes undone (named or numeric): what a reader sees, so a test can
/// find hostile text shown as text (and check separately that no raw markup came through).
pub fn shown_text(html: &str) -> String {
    [
        ("&#60;", "<"),
        ("&lt;", "<"),
        ("&#62;", ">"),
        ("&gt;", ">"),
        ("&#34;", "\""),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&#38;", "&"),
        ("&amp;", "&"),
    ]
    .iter()
    .fold(html.to_string(), |text, (entity, plain)| text.replace(entity, plain))
}

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// Ask `ready` every few milliseconds until it answers `Some`, for at most `within` (then panic
/// naming `what`). For waiting on work in flight (a server starting, a queue draining, a
/// connection closing), never to let time pass: a test that needs time to pass advances its
/// app's `Clock`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut ready: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = ready().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Whether a server listens on `127.0.0.1:port` within `within` (a child process starting).
pub fn listening_within(port: u16, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    false
}

/// A free loopback port for a Redis Cluster node: its port + 10000 (the cluster bus) is free too.
pub fn free_cluster_node_port() -> u16 {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).map(|a| a.port());
    std::iter::repeat_with(free)
        .flatten()
        .find(|&port| port < 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok())
        .expect("a free port")
}

/// `redis-cli --cluster create` of the nodes at `addresses` (`host:port`), one replica per master,
/// over TLS trusting `tls_ca` when given. Panics with redis-cli's output when it fails.
pub fn create_redis_cluster(addresses: &[String], tls_ca: Option<&std::path::Path>) {
    let mut create = std::process::Command::new("redis-cli");
    if let Some(ca) = tls_ca {
        create.arg("--tls").arg("--cacert").arg(ca);
    }
    let created = create
        .args(["--cluster", "create"])
        .args(addresses)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .expect("redis-cli is installed (with redis-server)");
    assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stdout));
}

/// `redis-cli` against the server on `127.0.0.1:port` (over TLS trusting `tls_ca`, when given):
/// its output, trimmed.
pub fn redis_cli(port: u16, tls_ca: Option<&std::path::Path>, args: &[&str]) -> String {
    let mut cli = std::process::Command::new("redis-cli");
    cli.args(["-p", &port.to_string()]);
    if let Some(ca) = tls_ca {
        cli.arg("--tls").arg("--cacert").arg(ca);
    }
    let out = cli.args(args).output().expect("redis-cli is installed (with redis-server)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Until every node of the Redis Cluster at `ports` says that all slots are served, by three
/// masters that it knows; panics after 20 s with the first node's view.
pub fn wait_until_redis_cluster_whole(ports: &[u16], tls_ca: Option<&std::path::Path>) {
    let cli = |port: u16, args: &[&str]| redis_cli(port, tls_ca, args);
    for _ in 0..200 {
        let whole = ports.iter().all(|&port| {
            let info = cli(port, &["cluster", "info"]);
            info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") && info.contains("cluster_size:3")
        });
        let agreed = ports.iter().all(|&port| cli(port, &["cluster", "nodes"]).lines().filter(|l| l.contains("master")).count() == 3);
        if whole && agreed {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the cluster did not become whole: {}", cli(ports[0], &["cluster", "nodes"]));
}
