//! Redis as the KV: the contract against a real redis-server, the recipe's keys readable by any
//! Redis client, and a webhook answered 5xx while Redis is down (then 200 once it is back).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{spawn_app_with, Options, MONTHLY};

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        // From here the server is owned by the guard, so it is stopped whatever happens next.
        let server = RedisServer { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {port}");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn redis_backend_end_to_end() {
    let port = free_port();
    let mut redis = RedisServer::start(port);
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let kv = tollgate::kv::redis::RedisKv::connect(&url).await.unwrap();
    assert_contract(&kv).await;

    let app = spawn_app_with(Options { kv_url: url.clone(), ..Options::default() }).await;
    let (browser, customer) = app.subscribed("redis@example.com", MONTHLY).await;
    browser.get("/success").await;
    // Another Redis client (the Next.js recipe's app, say) reads the same keys and shape.
    let raw = tokio::task::spawn_blocking(move || redis_cli(port, &["GET", &format!("stripe:customer:{customer}")])).await.unwrap();
    let cached: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(cached["status"], "active");
    assert_eq!(cached["paymentMethod"]["last4"], "4242");

    let event =
        app.events_for(cached_customer(&cached, &app).await.as_str()).await.into_iter().find(|e| e["type"] == "invoice.paid").unwrap();
    redis.stop();
    let r = app.deliver(&event).await;
    assert_eq!(r.status, 503, "KV down: Stripe must redeliver ({})", r.text);
    assert_eq!(app.browser().get("/readyz").await.status, 503);
    let _restarted = RedisServer::start(port);
    let r = app.deliver(&event).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn cached_customer(cached: &serde_json::Value, app: &crate::helpers::TestApp) -> String {
    let sub = cached["subscriptionId"].as_str().unwrap();
    app.stripe(reqwest::Method::GET, &format!("/v1/subscriptions/{sub}"), &[]).await["customer"].as_str().unwrap().to_string()
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out =
        Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli is installed with redis-server");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn assert_contract(kv: &dyn tollgate::kv::Kv) {
    let key = format!("contract:{}", tollgate::random_token(8));
    assert_eq!(kv.get(&key).await.unwrap(), None);
    kv.set(&key, "one").await.unwrap();
    assert!(!kv.set_if_absent(&key, "two").await.unwrap());
    assert_eq!(kv.get(&key).await.unwrap().as_deref(), Some("one"));
    kv.set(&key, "{\"json\": \"ünïcode ✓\"}\r\n$5\r\n").await.unwrap();
    assert_eq!(kv.get(&key).await.unwrap().as_deref(), Some("{\"json\": \"ünïcode ✓\"}\r\n$5\r\n"), "binary-safe values");
    kv.delete(&key).await.unwrap();
    assert!(kv.set_if_absent(&key, "three").await.unwrap());
    kv.ping().await.unwrap();
}
