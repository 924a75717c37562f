//! What gating costs (run `scripts/bench`, which builds the release binaries and installs nginx,
//! Caddy and wrk): an entitled user's 1 KB page of a product served by nginx, loaded by
//! `wrk -t1 -c32` in one run, each way in turn —
//! - the product directly;
//! - through nginx `proxy_pass` (one hop, no gate: the cost of any proxy);
//! - through a bare hyper proxy (no gate, no routing: this binary run as `bench_gate proxy-floor`,
//!   one single-threaded runtime per core as Tollgate's serving threads): the floor of the HTTP
//!   stack Tollgate's gateway is built on;
//! - through nginx `auth_request` asking Tollgate's `/auth/verify` (keep-alive to both);
//! - through Caddy `forward_auth` asking `/auth/verify`;
//! - through Tollgate's gateway;
//! - a program's request to the product's API (`API_PATHS`) through the gateway, with an API key,
//!   the plan's quotas on (`PLAN_LIMITS`, set high enough never to refuse) and every answer
//!   metered (`METERED_PATHS`), against the same file fetched directly.
//!
//! Every process is its own (the load generator, the proxies, the product and Tollgate share the
//! machine's cores, as they would on one host). Before loading, each way is checked to serve the
//! page to the subscriber, and each gated way to refuse a visitor. Prints requests/s, p50, p99,
//! what each adds to the direct p50, the CPU per request of the process in front (the proxy's,
//! workers included) and of Tollgate, then Tollgate's peak resident memory.
//!
//! The ways take turns: each runs for its share of the seconds in every one of several rounds, and
//! a way's figures are the medians of its rounds (the added p50 against the direct way's p50 in
//! the same round). On a shared machine the cores' speed wanders by tens of percent over seconds:
//! one long run per way in turn let a slow spell land on one way alone. With more than one round,
//! the gateway is also compared with the nginx hop round by round.
//!
//! Usage: `bench_gate [seconds per way] [only the ways whose name starts with this] [rounds, default
//! 5]` (the direct ways always run: they are the baselines). `TOLLGATE_BENCH_PAUSE=1` waits for
//! Enter before loading, printing Tollgate's pid, to attach a profiler.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const PAGE_BYTES: usize = 1024;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("proxy-floor") {
        let port =
            |n: usize| args.get(n).and_then(|p| p.parse::<u16>().ok()).ok_or_else(|| anyhow::anyhow!("proxy-floor <port> <product port>"));
        return proxy_floor::run(port(2)?, port(3)?);
    }
    tokio::runtime::Runtime::new()?.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let dir = tempfile::Builder::new().prefix("tollgate-bench-gate-").tempdir()?;
    // nginx's workers run as another user when started as root: they must read what is here.
    set_mode(dir.path(), 0o755)?;
    let page = format!("<!doctype html><title>the product</title><p>{}</p>\n", "x".repeat(PAGE_BYTES - 52));
    std::fs::create_dir_all(dir.path().join("www/app"))?;
    std::fs::write(dir.path().join("www/app/page.html"), &page)?;
    std::fs::create_dir_all(dir.path().join("www/api/v1"))?;
    std::fs::write(dir.path().join("www/api/v1/page.html"), &page)?;
    for served in ["www", "www/app", "www/api", "www/api/v1"] {
        set_mode(&dir.path().join(served), 0o755)?;
    }

    let product_port = free_port()?;
    let product = format!("http://127.0.0.1:{product_port}");
    let _product =
        nginx(dir.path(), "product", &format!("server {{ listen 127.0.0.1:{product_port}; root {}/www; }}", dir.path().display()))?;

    let (_emulator, stripe) = emulator(&[])?;
    // Quotas high enough never to refuse: every request pays for counting, none is refused.
    let limits = "price_pro_monthly:4000000000/min,1000000000000/month;price_pro_yearly:4000000000/min";
    let (tollgate, tollgate_url) = start(tollgate_command(
        &stripe,
        "memory:",
        &[("UPSTREAM_URL", &product), ("GATED_PATHS", "/app"), ("PLAN_LIMITS", limits), ("METERED_PATHS", "/api/v1:api_requests")],
    ))?;
    // Redirects are answers here: sign-up's cookies come with one, and a gate's refusal may be one.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let cookie = subscriber_cookie(&http, &tollgate_url, &stripe).await?;
    let api_key = api_key(&http, &tollgate_url, &cookie).await?;
    let tollgate_port = tollgate_url.rsplit(':').next().unwrap_or_default().to_string();

    let upstreams = format!(
        "upstream product {{ server 127.0.0.1:{product_port}; keepalive 64; }}\n\
         upstream tollgate {{ server 127.0.0.1:{tollgate_port}; keepalive 64; }}\n"
    );
    let to_product = "proxy_pass http://product; proxy_http_version 1.1; proxy_set_header Connection \"\";";
    let hop_port = free_port()?;
    let hop = nginx(dir.path(), "hop", &format!("{upstreams}server {{ listen 127.0.0.1:{hop_port}; location / {{ {to_product} }} }}"))?;
    let auth_port = free_port()?;
    let auth = nginx(
        dir.path(),
        "auth-request",
        &format!(
            "{upstreams}server {{ listen 127.0.0.1:{auth_port};\n\
             location / {{ auth_request /_tollgate_verify; auth_request_set $tollgate_user $upstream_http_x_forwarded_user;\n\
               proxy_set_header X-Forwarded-User $tollgate_user; {to_product} }}\n\
             location = /_tollgate_verify {{ internal; proxy_pass http://tollgate/auth/verify?deny=403; proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\"; proxy_pass_request_body off; proxy_set_header Content-Length \"\"; }}\n\
             }}"
        ),
    )?;
    let floor_port = free_port()?;
    let floor = Command::new(std::env::current_exe()?)
        .args(["proxy-floor", &floor_port.to_string(), &product_port.to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    let floor = Proc(floor, None);
    listening(floor_port, "the bare hyper proxy")?;
    let caddy_port = free_port()?;
    let caddy = caddy(
        dir.path(),
        &format!(
            "{{\n admin off\n auto_https off\n}}\nhttp://127.0.0.1:{caddy_port} {{\n\
             forward_auth 127.0.0.1:{tollgate_port} {{\n  uri /auth/verify\n  copy_headers X-Forwarded-User\n }}\n\
             reverse_proxy 127.0.0.1:{product_port}\n}}\n"
        ),
        caddy_port,
    )?;

    let tollgate_pid = tollgate.0.id();
    // Each way: its label, its URL, whether it gates, and the process in front of the product.
    let ways = [
        ("direct to the product", format!("{product}/app/page.html"), false, None),
        ("nginx proxy_pass (one hop, no gate)", format!("http://127.0.0.1:{hop_port}/app/page.html"), false, Some(hop.0.id())),
        ("bare hyper proxy (no gate)", format!("http://127.0.0.1:{floor_port}/app/page.html"), false, Some(floor.0.id())),
        ("nginx auth_request → Tollgate /auth/verify", format!("http://127.0.0.1:{auth_port}/app/page.html"), true, Some(auth.0.id())),
        ("Caddy forward_auth → Tollgate /auth/verify", format!("http://127.0.0.1:{caddy_port}/app/page.html"), true, Some(caddy.0.id())),
        ("Tollgate gateway", format!("{tollgate_url}/app/page.html"), true, Some(tollgate_pid)),
        ("API: directly", format!("{product}/api/v1/page.html"), false, None),
        ("API: Tollgate gateway, key, quotas and metering", format!("{tollgate_url}/api/v1/page.html"), true, Some(tollgate_pid)),
    ];
    // The API's ways send the key, the others the subscriber's cookie.
    let credential = |label: &str| match label.starts_with("API") {
        true => format!("Authorization: Bearer {api_key}"),
        false => format!("Cookie: {cookie}"),
    };
    for (label, url, gated, _) in &ways {
        let (name, value) = credential(label).split_once(": ").map(|(n, v)| (n.to_string(), v.to_string())).unwrap_or_default();
        let served = http.get(url).header(name, value).send().await?;
        let status = served.status();
        anyhow::ensure!(status.is_success() && served.text().await? == page, "{label} did not serve the page to the subscriber ({status})");
        if *gated {
            let visitor = http.get(url).send().await?.status();
            anyhow::ensure!(!visitor.is_success(), "{label} served a visitor ({visitor})");
        }
    }

    let only = std::env::args().nth(2).unwrap_or_default();
    let rounds: u64 = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(5).clamp(1, seconds.max(1));
    let per_round = (seconds / rounds).max(1);
    println!(
        "gate cost (wrk -t1 -c32, {rounds} rounds of {per_round}s each way in turn, medians; an entitled user's {PAGE_BYTES}-byte page served by nginx):"
    );
    println!(
        "| path | req/s (rounds' range) | p50 | p99 | added p50 | CPU per request in front | Tollgate's CPU per request |\n|---|---|---|---|---|---|---|"
    );
    if std::env::var("TOLLGATE_BENCH_PAUSE").is_ok() {
        eprintln!("Tollgate's pid: {tollgate_pid} at {tollgate_url}, the subscriber's Cookie: {cookie}; press Enter to load");
        std::io::stdin().read_line(&mut String::new())?;
    }
    // The ways that run, each with the index of its baseline (the direct way of its kind).
    let chosen: Vec<(usize, usize)> = ways
        .iter()
        .enumerate()
        .filter(|(n, (label, ..))| *n == 0 || label.contains("directly") || label.starts_with(only.as_str()))
        .map(|(n, (label, ..))| {
            (n, if label.starts_with("API") { ways.iter().position(|w| w.0 == "API: directly").unwrap_or(0) } else { 0 })
        })
        .collect();
    let mut measured: Vec<Vec<Round>> = vec![Vec::new(); ways.len()];
    for _ in 0..rounds {
        for &(n, baseline) in &chosen {
            let (label, url, _, front) = &ways[n];
            // The CPU per request of a process (and its children) over the run, when it is watched.
            let watched_tollgate = label.contains("Tollgate").then_some(tollgate_pid);
            let before = [*front, watched_tollgate].map(|pid| pid.map(tree_cpu_time));
            let run = wrk(url, &credential(label), per_round)?;
            // Caddy 2.6 (Debian's) sends a few requests on to the product with the check's URI
            // (`GET /auth/verify`, the product's log says) under this load: counted in its row, not
            // fatal. Any other way must serve every request.
            anyhow::ensure!(label.starts_with("Caddy") || run.not_2xx == 0, "{label}: {} answers were not 2xx", run.not_2xx);
            let requests = (run.per_second * per_round as f64).max(1.0);
            let [in_front, of_tollgate] = [(*front, before[0]), (watched_tollgate, before[1])].map(|watched| match watched {
                (Some(pid), Some(before)) => Some((tree_cpu_time(pid) - before).as_secs_f64() * 1e6 / requests),
                _ => None,
            });
            // The baseline ran earlier in this round (it comes first among its kind).
            let added = (n != baseline).then(|| measured[baseline].last().map(|b| run.p50_ms - b.run.p50_ms)).flatten();
            measured[n].push(Round { run, added, in_front, of_tollgate });
        }
    }
    for &(n, _) in &chosen {
        let label = ways[n].0;
        let rounds = &measured[n];
        let middle = |value: &dyn Fn(&Round) -> Option<f64>| median(rounds.iter().filter_map(value).collect());
        let shown = |value: Option<f64>, unit: &str, digits: usize| value.map_or("—".to_string(), |v| format!("{v:.digits$} {unit}"));
        let per_second: Vec<f64> = rounds.iter().map(|r| r.run.per_second).collect();
        let (low, high) = per_second.iter().fold((f64::MAX, 0.0f64), |(l, h), v| (l.min(*v), h.max(*v)));
        let not_2xx: u64 = rounds.iter().map(|r| r.run.not_2xx).sum();
        let label = match not_2xx {
            0 => label.to_string(),
            n => format!("{label} ({n} answers not 2xx: the product asked for /auth/verify)"),
        };
        println!(
            "| {label} | {:.0} ({low:.0}–{high:.0}) | {} | {} | {} | {} | {} |",
            median(per_second).unwrap_or(0.0),
            shown(middle(&|r| Some(r.run.p50_ms)), "ms", 2),
            shown(middle(&|r| Some(r.run.p99_ms)), "ms", 2),
            shown(middle(&|r| r.added), "ms", 2),
            shown(middle(&|r| r.in_front), "µs", 1),
            shown(middle(&|r| r.of_tollgate), "µs", 1),
        );
    }
    // Round by round, the gateway against the nginx hop: its throughput, and its added p50.
    let position = |label: &str| ways.iter().position(|w| w.0 == label).filter(|n| !measured[*n].is_empty());
    if let (Some(gateway), Some(hop), true) = (position("Tollgate gateway"), position("nginx proxy_pass (one hop, no gate)"), rounds > 1) {
        let pairs: Vec<String> = measured[gateway]
            .iter()
            .zip(&measured[hop])
            .map(|(g, h)| {
                format!("{:.2}× / {:+.2} ms", g.run.per_second / h.run.per_second, g.added.unwrap_or(0.0) - h.added.unwrap_or(0.0))
            })
            .collect();
        println!("Tollgate gateway against the nginx hop, round by round (throughput ratio / added p50 difference): {}", pairs.join(", "));
    }
    println!("Tollgate's peak resident memory: {:.1} MB (target ≤ 48 MB)", peak_rss_kb(tollgate_pid) as f64 / 1024.0);
    Ok(())
}

/// One way's figures in one round: wrk's, the p50 it adds to its baseline's in the same round,
/// and the CPU per request of the process in front and of Tollgate (when watched).
#[derive(Clone)]
struct Round {
    run: WrkRun,
    added: Option<f64>,
    in_front: Option<f64>,
    of_tollgate: Option<f64>,
}

/// The median of `values` (the lower middle one of an even count), if any.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

#[derive(Clone)]
struct WrkRun {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Answers that were not 2xx (wrk's "Non-2xx or 3xx responses").
    not_2xx: u64,
}

/// An API key of the subscriber whose session is `cookie` (`tollgate_csrf=…; tollgate_session=…`).
async fn api_key(http: &reqwest::Client, url: &str, cookie: &str) -> anyhow::Result<String> {
    let csrf = cookie.split("; ").find_map(|c| c.strip_prefix("tollgate_csrf=")).unwrap_or_default();
    let made = http
        .post(format!("{url}/api/keys"))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .header("content-type", "application/json")
        .body(r#"{"name":"bench"}"#)
        .send()
        .await?
        .text()
        .await?;
    let made: serde_json::Value = serde_json::from_str(&made)?;
    made["key"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no API key made: {made}"))
}

/// `wrk` with one request header (`Name: value`: the cookie or the API key).
fn wrk(url: &str, header: &str, seconds: u64) -> anyhow::Result<WrkRun> {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency", "-H", header, url])
        .output()
        .map_err(|e| anyhow::anyhow!("wrk is needed (scripts/bench installs it): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk against {url}: {text}");
    let field = |prefix: &str| text.lines().map(str::trim).find(|l| l.starts_with(prefix)).and_then(|l| l.split_whitespace().nth(1));
    let ms = |prefix: &str| -> anyhow::Result<f64> {
        let value = field(prefix).ok_or_else(|| anyhow::anyhow!("no {prefix} in wrk's output: {text}"))?;
        let unit = value.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        let number: f64 = value[..value.len() - unit.len()].parse()?;
        Ok(number
            * match unit {
                "us" => 0.001,
                "ms" => 1.0,
                "s" => 1000.0,
                other => anyhow::bail!("wrk's unit {other}"),
            })
    };
    let not_2xx =
        text.lines().find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    Ok(WrkRun {
        per_second: field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        p50_ms: ms("50%")?,
        p99_ms: ms("99%")?,
        not_2xx,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// An nginx of its own (`worker_processes auto`, logs off, keep-alive without a request limit)
/// serving `server` (with any `upstream` blocks before it).
fn nginx(dir: &Path, name: &str, server: &str) -> anyhow::Result<Nginx> {
    let home = dir.join(format!("nginx-{name}"));
    std::fs::create_dir_all(&home)?;
    let d = home.display();
    let conf = format!(
        "worker_processes auto;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n keepalive_requests 1000000;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{server}\n}}\n"
    );
    std::fs::write(home.join("nginx.conf"), conf)?;
    let binary = if Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" };
    let child = Command::new(binary)
        .arg("-p")
        .arg(&home)
        .arg("-c")
        .arg(home.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("nginx is needed (scripts/bench installs it): {e}"))?;
    let port = server.split("listen 127.0.0.1:").last().and_then(|r| r.split(';').next()).and_then(|p| p.parse().ok()).unwrap_or(0);
    let nginx = Nginx(child);
    listening(port, &format!("nginx ({name})"))?;
    Ok(nginx)
}

/// An nginx master, stopped with SIGTERM when dropped: it stops its workers (killed, it would
/// leave them running).
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn caddy(dir: &Path, caddyfile: &str, port: u16) -> anyhow::Result<Proc> {
    let home = dir.join("caddy");
    std::fs::create_dir_all(&home)?;
    std::fs::write(home.join("Caddyfile"), caddyfile)?;
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(home.join("Caddyfile"))
        .env("HOME", &home)
        .env("XDG_DATA_HOME", &home)
        .env("XDG_CONFIG_HOME", &home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("caddy is needed (scripts/bench installs it): {e}"))?;
    listening(port, "caddy")?;
    Ok(Proc(child, None))
}

fn listening(port: u16, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(test_support::listening_within(port, Duration::from_secs(5)), "{what} is not listening on {port}");
    Ok(())
}

/// The CPU time of a process and of its children (nginx's workers).
fn tree_cpu_time(pid: u32) -> Duration {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children.split_whitespace().filter_map(|c| c.parse().ok()).map(cpu_time).sum::<Duration>() + cpu_time(pid)
}

/// `VmHWM` of a process: the most memory it has held resident.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// The floor: a bare HTTP/1 proxy on hyper (no gate, no routing, no logging), built as Tollgate's
/// serving threads are (`threads.rs`): one single-threaded runtime per core, here sharing the port
/// (SO_REUSEPORT) instead of handing connections over, each client connection with a connection
/// to the product of its own.
mod proxy_floor {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use hyper::body::Incoming;
    use hyper::client::conn::http1::SendRequest;
    use hyper_util::rt::TokioIo;

    pub fn run(port: u16, product_port: u16) -> anyhow::Result<()> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let serving: Vec<_> = (0..threads)
            .map(|_| {
                std::thread::spawn(move || -> anyhow::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    runtime.block_on(async {
                        let socket = tokio::net::TcpSocket::new_v4()?;
                        socket.set_reuseport(true)?;
                        socket.set_reuseaddr(true)?;
                        socket.bind(([127, 0, 0, 1], port).into())?;
                        serve(socket.listen(1024)?, product_port).await
                    })
                })
            })
            .collect();
        for thread in serving {
            thread.join().map_err(|_| anyhow::anyhow!("a serving thread panicked"))??;
        }
        Ok(())
    }

    /// Each client connection gets a connection to the product of its own (hyper's connection
    /// API), made at its first request: no pool at all, the least a hyper proxy can do.
    async fn serve(listener: tokio::net::TcpListener, product_port: u16) -> anyhow::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let own: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
            tokio::spawn(async move {
                let proxy = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                    let own = own.clone();
                    async move {
                        let mut kept = own.lock().unwrap().take();
                        if let Some(sender) = kept.as_mut() {
                            if sender.ready().await.is_err() {
                                kept = None;
                            }
                        }
                        let mut sender = match kept {
                            Some(sender) => sender,
                            None => {
                                let product = tokio::net::TcpStream::connect(("127.0.0.1", product_port)).await?;
                                product.set_nodelay(true)?;
                                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(product)).await?;
                                tokio::spawn(connection);
                                sender
                            }
                        };
                        let answer = sender.send_request(request).await?;
                        *own.lock().unwrap() = Some(sender);
                        anyhow::Ok(answer.map(Body::new))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), proxy).await;
            });
        }
    }
}
