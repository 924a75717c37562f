//! Many instances: three real `tollgate` processes over one redis-server and one emulator that
//! answers slowly and enforces a rate limit. Webhooks for many customers are spread over the
//! instances, duplicated, reordered and delayed, while subscriptions change on the emulator; one
//! instance is killed (SIGKILL) and restarted mid-run. In the end every `stripe:customer:*` entry
//! equals the emulator's state.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::Value;
use stripe_emulator::EmulatorConfig;
use tollgate_core::kv::Kv;

use crate::helpers::{expected_cache, signature, stripe_api as stripe, MONTHLY, WEBHOOK_SECRET, YEARLY};
use crate::redis_server::{free_port, RedisServer};

const CUSTOMERS: usize = 30;

struct Instance {
    child: Option<Child>,
    port: u16,
    env: Vec<(&'static str, String)>,
}

impl Instance {
    fn start(env: Vec<(&'static str, String)>) -> Instance {
        let mut instance = Instance { child: None, port: free_port(), env };
        instance.launch();
        instance
    }

    fn launch(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("PORT", self.port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tollgate binary runs");
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL: no shutdown, leases and all
            let _ = child.wait();
        }
    }

    /// SIGTERM, as a rolling deploy sends it, and wait for the clean exit (a blocking wait).
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill only sends a signal to the process this test started.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let exit = child.wait().expect("the instance exits");
            assert!(exit.success(), "a clean exit after SIGTERM: {exit:?}");
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What every instance of these tests is started with: the shared Redis, the emulator, the plans.
fn instance_env(kv_url: String, stripe_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KV_URL", kv_url),
        ("STRIPE_SECRET_KEY", "sk_test_tollgate_suite".to_string()),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_string()),
        ("STRIPE_API_BASE", stripe_url.to_string()),
        ("PLANS", format!("{MONTHLY},{YEARLY}")),
    ]
}

async fn wait_until_up(http: &reqwest::Client, url: &str) {
    let up = || async { http.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status() == 200).then_some(()) };
    test_support::eventually(&format!("{url} up"), Duration::from_secs(10), up).await;
}

/// Three instances started with `env`, once each answers.
async fn three_instances(http: &reqwest::Client, env: &[(&'static str, String)]) -> (Vec<Instance>, Vec<String>) {
    let instances: Vec<Instance> = (0..3).map(|_| Instance::start(env.to_vec())).collect();
    let urls: Vec<String> = instances.iter().map(Instance::url).collect();
    for url in &urls {
        wait_until_up(http, url).await;
    }
    (instances, urls)
}

/// A new account on the instance at `url`, subscribed to the monthly plan: its browser, and the
/// Checkout Session it paid.
async fn subscribed_on(url: &str, stripe_url: &str, email: &str) -> (crate::helpers::Browser, String) {
    let owner = crate::helpers::Browser::at(url);
    owner.sign_up_through_the_outbox(email).await;
    let started = owner.json_post("/api/generate-stripe-checkout", &serde_json::json!({ "priceId": MONTHLY })).await;
    let session = started.json()["sessionId"].as_str().unwrap().to_string();
    assert_eq!(test_support::pay_checkout(stripe_url, &session, &[("card_number", "4242424242424242")]).await.status, 303);
    assert_eq!(owner.get("/success").await.status, 303);
    (owner, session)
}

/// Every event the emulator recorded, oldest first.
async fn all_events(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "100")];
        if let Some(id) = &after {
            query.push(("starting_after", id.as_str()));
        }
        let page = stripe(http, base, Method::GET, "/v1/events", &query).await;
        let data = page["data"].as_array().unwrap().clone();
        after = data.last().map(|e| e["id"].as_str().unwrap().to_string());
        events.extend(data);
        if page["has_more"] != true {
            events.reverse();
            return events;
        }
    }
}

/// Deliver to the instance `first` points at; a refused connection (a dead instance) or a 5xx
/// is redelivered to the next one, as Stripe retries through the load balancer.
async fn deliver(http: &reqwest::Client, urls: &[String], first: usize, event: &Value) {
    let body = serde_json::to_vec(event).unwrap();
    let attempt = std::sync::atomic::AtomicUsize::new(first);
    let accepted = || async {
        let url = &urls[attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % urls.len()];
        let sent = http
            .post(format!("{url}/api/stripe-webhook"))
            .header("stripe-signature", signature(&body, tollgate_core::unix_now()))
            .body(body.clone())
            .send()
            .await;
        sent.is_ok_and(|r| r.status() == 200).then_some(())
    };
    test_support::eventually(&format!("event {} accepted", event["id"]), Duration::from_secs(10), accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_converge_on_stripes_state() {
    let redis = RedisServer::start();
    converge_on_stripes_state(redis.url(), None).await;
}

/// The same on a Redis Cluster, while slots move between its masters (twice) and a replica takes
/// over a master, as the events arrive: nothing acknowledged is lost, no entry is stale at the
/// end, and the recipe's keys hold the entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_a_redis_cluster_converge_while_it_reshards_and_fails_over() {
    let cluster = std::sync::Arc::new(crate::redis_server::RedisCluster::start());
    let moving = cluster.clone();
    let moves: Box<dyn FnOnce() + Send> = Box::new(move || {
        moving.failover("stripe:customer:cus_A");
        moving.reshard(2000);
        moving.reshard(1000);
    });
    let customers = converge_on_stripes_state(cluster.url(), Some(moves)).await;
    for customer in &customers {
        let entry = cluster.get(&format!("stripe:customer:{customer}"));
        assert!(entry.starts_with('{') && entry.contains("\"status\""), "{customer}: {entry}");
    }
}

/// Customers subscribed in the emulator, their events delivered (a third twice, shuffled, to
/// three instances over the KV at `kv_url`) while Stripe changes and one instance dies; `moves`
/// runs on a thread of its own meanwhile, and the deliveries then spread over about 6 s. At the
/// end each cache entry is Stripe's state; the customers are returned.
async fn converge_on_stripes_state(kv_url: String, moves: Option<Box<dyn FnOnce() + Send>>) -> Vec<String> {
    let config = EmulatorConfig { latency: Duration::from_millis(30), rate_limit: Some(60), ..crate::helpers::seeded() };
    let stripe_url = crate::helpers::spawn_emulator_with(config).await;
    let http = reqwest::Client::new();

    let mut customers = Vec::new();
    for n in 0..CUSTOMERS {
        let email = format!("many{n}@example.com");
        let customer =
            stripe(&http, &stripe_url, Method::POST, "/v1/customers", &[("email", &email), ("metadata[userId]", &format!("user_many{n}"))])
                .await;
        let customer = customer["id"].as_str().unwrap().to_string();
        let price = if n % 3 == 0 { YEARLY } else { MONTHLY };
        stripe(
            &http,
            &stripe_url,
            Method::POST,
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", price), ("default_payment_method", "pm_card_visa")],
        )
        .await;
        customers.push(customer);
    }

    let mut env = instance_env(kv_url.clone(), &stripe_url);
    env.push(("STRIPE_RATE_LIMIT", "40".to_string()));
    let mut instances: Vec<Instance> = (0..3).map(|_| Instance::start(env.clone())).collect();
    let urls: Vec<String> = instances.iter().map(Instance::url).collect();
    for url in &urls {
        wait_until_up(&http, url).await;
    }

    // Every event so far, a third of them twice, shuffled, spread over the instances.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut deliveries: Vec<Value> =
        all_events(&http, &stripe_url).await.into_iter().filter(|e| e["data"]["object"]["customer"].is_string()).collect();
    let again: Vec<Value> = deliveries.iter().filter(|_| rng.gen_bool(0.33)).cloned().collect();
    deliveries.extend(again);
    deliveries.shuffle(&mut rng);
    let seen = all_events(&http, &stripe_url).await.len();

    let spread = if moves.is_some() { 5 } else { 1 };
    let moving = moves.map(std::thread::spawn);
    let sender = {
        let (http, urls) = (http.clone(), urls.clone());
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for (n, event) in deliveries.into_iter().enumerate() {
                let (http, urls, delay) = (http.clone(), urls.clone(), Duration::from_millis(n as u64 % 7 * 5 * spread));
                tasks.spawn(async move {
                    // Real time on purpose (as below): the instances are processes of their own,
                    // and events spread over time interleave with their work and their deaths.
                    tokio::time::sleep(delay).await;
                    deliver(&http, &urls, n, &event).await;
                });
                if tasks.len() >= 8 {
                    tasks.join_next().await;
                }
            }
            tasks.join_all().await;
        })
    };

    // Meanwhile Stripe changes: cancellations at period end, immediate cancellations, plan switches.
    for (n, customer) in customers.iter().enumerate().take(12) {
        let sub = stripe(&http, &stripe_url, Method::GET, "/v1/subscriptions", &[("customer", customer)]).await["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        match n % 3 {
            0 => stripe(&http, &stripe_url, Method::POST, &format!("/v1/subscriptions/{sub}"), &[("cancel_at_period_end", "true")]).await,
            1 => stripe(&http, &stripe_url, Method::DELETE, &format!("/v1/subscriptions/{sub}"), &[]).await,
            _ => stripe(&http, &stripe_url, Method::POST, &format!("/v1/subscriptions/{sub}"), &[("metadata[plan]", "changed")]).await,
        };
        if n == 5 {
            instances[1].kill();
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    sender.await.unwrap();
    // The events of those changes, delivered in reverse order, while instance 1 is still down.
    let mut newer: Vec<Value> = all_events(&http, &stripe_url).await.split_off(seen);
    newer.reverse();
    for (n, event) in newer.iter().enumerate().filter(|(_, e)| e["data"]["object"]["customer"].is_string()) {
        deliver(&http, &urls, n, event).await;
    }
    instances[1].launch();
    wait_until_up(&http, &urls[1]).await;

    if let Some(moving) = moving {
        tokio::task::spawn_blocking(move || moving.join()).await.unwrap().expect("the cluster's moves");
    }
    let kv = tollgate_core::kv::redis::RedisKv::connect(&kv_url, None).await.unwrap();
    crate::helpers::settled(&kv).await;
    for customer in &customers {
        let cached = kv.get(&format!("stripe:customer:{customer}")).await.unwrap().map(|v| serde_json::from_str::<Value>(&v).unwrap());
        assert_eq!(cached, Some(expected_cache(&http, &stripe_url, customer).await), "{customer}");
    }
    drop(instances);
    customers
}

const JOINERS: usize = 50;

/// The newest link to `path` in an instance's outbox page (`/dev/outbox`, newest first).
async fn newest_link(browser: &crate::helpers::Browser, path: &str) -> String {
    let outbox = crate::helpers::shown_text(&browser.get("/dev/outbox").await.text);
    let start = outbox.find(&format!("{path}?")).unwrap_or_else(|| panic!("a {path} link in the outbox"));
    outbox[start..].chars().take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<').collect()
}

/// Fifty people accept their invitations at once, spread over three instances over one Redis:
/// the per-seat subscription ends at 51 (the members), set by a few updates, not fifty, and the
/// cache equals Stripe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_joins_at_once_on_three_instances_bill_every_seat_in_a_few_updates() {
    use crate::helpers::Browser;
    use serde_json::json;

    let redis = RedisServer::start();
    let config = EmulatorConfig { latency: Duration::from_millis(20), ..crate::helpers::seeded() };
    let stripe_url = crate::helpers::spawn_emulator_with(config).await;
    let http = reqwest::Client::new();
    let mut env = instance_env(redis.url(), &stripe_url);
    env.extend([("BILLING_SUBJECT", "organization".to_string()), ("SEAT_PRICES", MONTHLY.to_string())]);
    let instances: Vec<Instance> = (0..3).map(|_| Instance::start(env.clone())).collect();
    let urls: Vec<String> = instances.iter().map(Instance::url).collect();
    for url in &urls {
        wait_until_up(&http, url).await;
    }

    // The owner: an organization, subscribed per seat (one seat).
    let owner = Browser::at(&urls[0]);
    owner.sign_up_through_the_outbox("owner@fifty.test").await;
    let org = owner.json_post("/api/orgs", &json!({ "name": "Fifty" })).await.json()["id"].as_str().unwrap().to_string();
    let started = owner.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    let session = started.json()["sessionId"].as_str().unwrap().to_string();
    assert_eq!(test_support::pay_checkout(&stripe_url, &session, &[("card_number", "4242424242424242")]).await.status, 303);
    assert_eq!(owner.get("/success").await.status, 303);
    let customer = stripe(&http, &stripe_url, Method::GET, &format!("/v1/checkout/sessions/{session}"), &[]).await["customer"]
        .as_str()
        .unwrap()
        .to_string();

    // Fifty people with accounts (each on one of the instances) and their invitations.
    let mut joiners = Vec::new();
    for n in 0..JOINERS {
        let email = format!("joiner{n}@fifty.test");
        let browser = Browser::at(&urls[n % 3]);
        browser.sign_up_through_the_outbox(&email).await;
        let invited = owner.json_post(&format!("/api/orgs/{org}/invitations"), &json!({ "email": email })).await;
        assert_eq!(invited.status, 201, "{}", invited.text);
        let link = newest_link(&owner, "/invitations/accept").await;
        joiners.push((browser, link.split("token=").nth(1).unwrap().to_string()));
    }

    // All of them accept at once.
    let mut accepts = tokio::task::JoinSet::new();
    for (browser, token) in joiners {
        accepts.spawn(async move { browser.json_post("/api/invitations/accept", &json!({ "token": token })).await });
    }
    for accepted in accepts.join_all().await {
        assert_eq!(accepted.status, 200, "{}", accepted.text);
    }
    let members = owner.get_json(&format!("/api/orgs/{org}/members")).await.json()["data"].as_array().unwrap().len();
    assert_eq!(members, JOINERS + 1);

    let kv = tollgate_core::kv::redis::RedisKv::connect(&redis.url(), None).await.unwrap();
    let quantity = || async {
        let list = stripe(&http, &stripe_url, Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await;
        list["data"][0]["items"]["data"][0]["quantity"].as_u64()
    };
    let at_members = || async { (crate::helpers::settled(&kv).await, quantity().await == Some(members as u64)).1.then_some(()) };
    test_support::eventually("the seat count equal to the members", Duration::from_secs(30), at_members).await;

    // How many times the seat count was set, over all three instances (their `/metrics`).
    let mut updates = 0.0;
    for url in &urls {
        let metrics = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        let line = metrics.lines().find(|l| l.starts_with("tollgate_seat_updates_total ")).expect("the seat update counter");
        updates += line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap();
    }
    eprintln!("{JOINERS} joins on 3 instances: {updates} seat updates");
    assert!((1.0..=5.0).contains(&updates), "{updates} seat updates for {JOINERS} joins");

    // Stripe's events reach the instances: the cache ends equal to Stripe.
    let events: Vec<Value> =
        all_events(&http, &stripe_url).await.into_iter().filter(|e| e["data"]["object"]["customer"] == customer.as_str()).collect();
    for (n, event) in events.iter().enumerate() {
        deliver(&http, &urls, n, event).await;
    }
    crate::helpers::settled(&kv).await;
    assert_eq!(quantity().await, Some(members as u64), "no sync set another count");
    let cached = kv.get(&format!("stripe:customer:{customer}")).await.unwrap().map(|v| serde_json::from_str::<Value>(&v).unwrap());
    assert_eq!(cached, Some(expected_cache(&http, &stripe_url, &customer).await));
    drop(instances);
}

/// A key calls the product's API 1,000 times spread over three instances (processes) over one
/// Redis, with a plan of 60 a minute: exactly the minute's 60 (plus one per second the run
/// takes, the GCRA's steady rate) get through, every other call is a 429 with the headers; a
/// revoked key is refused by every instance within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_on_three_instances_meets_one_quota_and_one_revocation() {
    use serde_json::json;

    let redis = RedisServer::start();
    let stripe_url = crate::helpers::spawn_emulator_with(crate::helpers::seeded()).await;
    let (product, _) = crate::gateway::start_product().await;
    let http = reqwest::Client::new();
    let mut env = instance_env(redis.url(), &stripe_url);
    env.extend([("UPSTREAM_URL", product), ("PLAN_LIMITS", format!("{MONTHLY}:60/min"))]);
    let (instances, urls) = three_instances(&http, &env).await;
    let (owner, _) = subscribed_on(&urls[0], &stripe_url, "api@three.test").await;
    let made = owner.json_post("/api/keys", &json!({ "name": "load" })).await;
    let (id, key) = (made.json()["id"].as_str().unwrap().to_string(), made.json()["key"].as_str().unwrap().to_string());

    let call = |n: usize| {
        let (http, url, key) = (http.clone(), urls[n % 3].clone(), key.clone());
        async move { test_support::Reply::read(http.get(format!("{url}/api/v1/items")).bearer_auth(key).send().await.unwrap()).await }
    };
    let started_at = std::time::Instant::now();
    let (mut admitted, mut refused) = (0, 0);
    for n in 0..1000 {
        let reply = call(n).await;
        assert!(reply.headers.contains_key("ratelimit-remaining"), "{n}: {:?}", reply.headers);
        match reply.status {
            200 => admitted += 1,
            429 => {
                refused += 1;
                assert!(reply.headers.contains_key("retry-after") && reply.json()["error"]["code"] == "rate_limited");
            }
            other => panic!("{n}: {other} {}", reply.text),
        }
        if n == 60 && started_at.elapsed() < Duration::from_secs(1) {
            assert_eq!(reply.status, 429, "the 61st call within the first second");
        }
    }
    let seconds = started_at.elapsed().as_secs_f64();
    eprintln!("1000 calls on 3 instances in {seconds:.2} s: {admitted} admitted, {refused} refused");
    assert!(admitted >= 60 && admitted <= 60 + seconds.ceil() as usize, "{admitted} admitted in {seconds:.2} s");

    // Revoked on one instance: every instance refuses the key within a second.
    let r = owner.send(Method::DELETE, &format!("/api/keys/{id}"), &[("x-csrf-token", &owner.csrf().unwrap())], None).await;
    assert_eq!(r.status, 204);
    // Real time, as everywhere in this file: the instances are processes with their own clocks.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for n in 0..3 {
        assert_eq!(call(n).await.status, 401, "instance {n}");
    }
    drop(instances);
}

/// Usage billed exactly once, under crashes: 100,000 metered calls with one key, spread over
/// three instances (processes) over one durable Redis (AOF, fsync always), while one instance is
/// SIGKILLed twice (and started again) and Redis is killed and restarted once. Each call carries
/// an `Idempotency-Key` and is retried with it (on the next instance) until it gets a 2xx, as a
/// careful client does: a call whose answer was lost in a crash may have been counted, and its
/// retry must not count again. The emulator's meter then holds exactly the number of 2xx
/// answers, and the renewal's invoice bills exactly that quantity on the usage price that
/// Checkout added beside the plan (`METERED_PRICES`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metered_calls_are_billed_exactly_once_through_crashes_of_instances_and_redis() {
    use crate::redis_server::RedisOptions;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;

    const CALLS: usize = 100_000;
    const CONCURRENCY: usize = 32;
    let mut redis = RedisServer::start_with(RedisOptions { durable: true, ..RedisOptions::default() });
    let stripe_url = crate::helpers::spawn_emulator_with(crate::helpers::seeded()).await;
    let http = reqwest::Client::new();
    let meter = stripe(
        &http,
        &stripe_url,
        Method::POST,
        "/v1/billing/meters",
        &[("display_name", "API calls"), ("event_name", "api_requests"), ("default_aggregation[formula]", "sum")],
    )
    .await;
    let plan = stripe(&http, &stripe_url, Method::GET, &format!("/v1/prices/{MONTHLY}"), &[]).await;
    let usage_price = stripe(
        &http,
        &stripe_url,
        Method::POST,
        "/v1/prices",
        &[
            ("product", plan["product"].as_str().unwrap()),
            ("currency", "usd"),
            ("unit_amount", "1"),
            ("recurring[interval]", "month"),
            ("recurring[usage_type]", "metered"),
            ("recurring[meter]", meter["id"].as_str().unwrap()),
        ],
    )
    .await;
    let usage_price = usage_price["id"].as_str().unwrap().to_string();
    let (product, _) = crate::gateway::start_product().await;
    let mut env = instance_env(redis.url(), &stripe_url);
    env.extend([("UPSTREAM_URL", product), ("METERED_PATHS", "/api/v1:api_requests".to_string()), ("METERED_PRICES", usage_price.clone())]);
    let (mut instances, urls) = three_instances(&http, &env).await;

    // Checkout adds the usage price beside the plan; the plan stays the cache's priceId.
    let (owner, session) = subscribed_on(&urls[0], &stripe_url, "metered@three.test").await;
    let paid = stripe(&http, &stripe_url, Method::GET, &format!("/v1/checkout/sessions/{session}"), &[]).await;
    let (customer, subscription) = (paid["customer"].as_str().unwrap().to_string(), paid["subscription"].as_str().unwrap().to_string());
    let live = stripe(&http, &stripe_url, Method::GET, &format!("/v1/subscriptions/{subscription}"), &[]).await;
    let prices: Vec<&str> = live["items"]["data"].as_array().unwrap().iter().map(|i| i["price"]["id"].as_str().unwrap()).collect();
    assert_eq!(prices, [MONTHLY, usage_price.as_str()]);
    let entry: Value = serde_json::from_str(&redis.cli(&["GET", &format!("stripe:customer:{customer}")])).unwrap();
    assert_eq!(entry["priceId"], MONTHLY, "the plan, not the usage price: {entry}");
    let made = owner.json_post("/api/keys", &json!({ "name": "load" })).await;
    let key = made.json()["key"].as_str().unwrap().to_string();

    // The load: each call retried with its key until a 2xx; attempts that failed are counted.
    let (next, answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let load: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let (next, answered, failed, client, urls, key) =
                (next.clone(), answered.clone(), failed.clone(), client.clone(), urls.clone(), key.clone());
            tokio::spawn(async move {
                loop {
                    let call = next.fetch_add(1, Relaxed);
                    if call >= CALLS {
                        return;
                    }
                    for attempt in 0.. {
                        let url = &urls[(call + worker + attempt) % urls.len()];
                        let sent = client
                            .get(format!("{url}/api/v1/work"))
                            .bearer_auth(&key)
                            .header("idempotency-key", format!("call-{call}"))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status().is_success() => {
                                answered.fetch_add(1, Relaxed);
                                break;
                            }
                            Ok(r) => {
                                let status = r.status();
                                let retry_after = r.headers().contains_key("retry-after");
                                // The only failures allowed: a retryable 503 (Redis away), or no answer (a crash).
                                assert!(status == 503 && retry_after, "call {call}: {status} {}", r.text().await.unwrap_or_default());
                            }
                            Err(_) => {}
                        }
                        failed.fetch_add(1, Relaxed);
                        assert!(attempt < 500, "call {call} never got through");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    let started_at = std::time::Instant::now();
    // Each step of the load below (a fifth to a third of it) takes 10–20 s here: one that takes
    // minutes is a stall, not a pass.
    let stalled_after = Duration::from_secs(120);
    let reach = |share: usize| {
        let next = next.clone();
        async move {
            let since = std::time::Instant::now();
            while next.load(Relaxed) < CALLS * share / 100 {
                assert!(since.elapsed() < stalled_after, "the load stalled at {} of {CALLS} calls", next.load(Relaxed));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut chaos = Vec::new();
    for (share, what) in [(20, "kill instance 1"), (45, "restart redis"), (70, "kill instance 1")] {
        reach(share).await;
        let failed_before = failed.load(Relaxed);
        match what {
            "restart redis" => {
                tokio::task::block_in_place(|| redis.restart());
                // The counts so far come back from the AOF (what the exact total below relies on);
                // until it is loaded, Redis answers LOADING.
                let redis = &redis;
                let keys = test_support::eventually("the restarted Redis loaded its AOF", Duration::from_secs(5), || async move {
                    redis.cli(&["DBSIZE"]).parse::<usize>().ok()
                })
                .await;
                assert!(keys > 0, "the restarted Redis came back empty");
            }
            _ => {
                instances[1].kill();
                tokio::time::sleep(Duration::from_millis(300)).await;
                instances[1].launch();
            }
        }
        chaos.push((what, started_at.elapsed(), failed_before));
    }
    reach(100).await;
    for worker in load {
        worker.await.unwrap();
    }
    let (answered, failed) = (answered.load(Relaxed), failed.load(Relaxed));
    eprintln!(
        "{CALLS} calls in {:.1} s: {answered} 2xx, {failed} failed attempts retried; chaos {chaos:?}",
        started_at.elapsed().as_secs_f64()
    );
    assert_eq!(answered, CALLS, "one 2xx per call");
    // Each killed instance cost some attempts (else it tested nothing): the failures grew after
    // each kill. A Redis restart may cost none: a KV call whose connection broke is tried once
    // more when the connection is made again, so a restart that is over by then fails no call.
    let failures_at: Vec<usize> = chaos.iter().map(|(_, _, before)| *before).chain([failed]).collect();
    for (i, (what, _, before)) in chaos.iter().enumerate() {
        if what.starts_with("kill") {
            assert!(
                failures_at[i + 1] > *before,
                "no attempt failed after {what}: failed attempts before each step and at the end: {failures_at:?}"
            );
        }
    }

    // Everything counted is sent (the instances' flushers and `tollgate usage --flush` side by
    // side), and the meter holds exactly what was answered.
    let usage_env = env.clone();
    let customer_arg = customer.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["usage", "--customer", &customer_arg, "--flush"])
            .envs(usage_env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains(&format!("api_requests: reported {CALLS}, waiting 0")), "{printed}");
    let now = tollgate_core::unix_now() / 60 * 60;
    let (from, to) = ((now - 3600).to_string(), (now + 7200).to_string());
    let path = format!("/v1/billing/meters/{}/event_summaries", meter["id"].as_str().unwrap());
    let summaries =
        stripe(&http, &stripe_url, Method::GET, &path, &[("customer", &customer), ("start_time", &from), ("end_time", &to)]).await;
    assert_eq!(summaries["data"][0]["aggregated_value"].as_f64(), Some(CALLS as f64), "{summaries}");
    drop(instances);

    // The renewal bills that usage in arrears, beside the plan billed ahead.
    let period_end = live["items"]["data"][1]["current_period_end"].as_i64().unwrap();
    let seconds = (period_end - tollgate_core::unix_now() + 3600).to_string();
    let advanced = http.post(format!("{stripe_url}/_emulator/clock/advance")).form(&[("seconds", seconds.as_str())]).send().await.unwrap();
    assert_eq!(advanced.status(), 200, "{}", advanced.text().await.unwrap());
    let invoices = stripe(&http, &stripe_url, Method::GET, "/v1/invoices", &[("subscription", &subscription), ("limit", "10")]).await;
    let renewal =
        invoices["data"].as_array().unwrap().iter().find(|i| i["billing_reason"] == "subscription_cycle").expect("a renewal invoice");
    let lines = renewal["lines"]["data"].as_array().unwrap();
    let usage_line = lines.iter().find(|l| l["pricing"]["price_details"]["price"] == usage_price.as_str()).expect("a usage line");
    assert_eq!((usage_line["quantity"].as_i64(), usage_line["amount"].as_i64()), (Some(CALLS as i64), Some(CALLS as i64)), "{usage_line}");
}

/// A rolling deploy: three instances behind the README's nginx balancer over one Redis take page
/// loads of signed-in subscribers and Stripe's webhooks (each subscription's cancellation switched
/// on and off, its event delivered through nginx) while each instance in turn gets SIGTERM and is
/// replaced by a new one on its address. No answer is a 5xx other than a 503 with `Retry-After`,
/// nobody is signed out, and in the end every customer's entry equals Stripe's state (a webhook
/// that was not answered 200 is delivered again, as Stripe retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_behind_nginx_loses_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};

    const SUBSCRIBERS: usize = 4;
    let redis = RedisServer::start();
    let stripe_url = crate::helpers::spawn_emulator_with(crate::helpers::seeded()).await;
    let http = reqwest::Client::new();
    let env = instance_env(redis.url(), &stripe_url);
    let (mut instances, urls) = three_instances(&http, &env).await;
    let upstreams: Vec<String> = urls.iter().map(|u| u.trim_start_matches("http://").to_string()).collect();
    let nginx = crate::nginx::Nginx::readme_balancer(&upstreams);
    let mut subscribers = Vec::new();
    for n in 0..SUBSCRIBERS {
        // Signed up on an instance (its outbox is its own), then browsing through the balancer.
        let (browser, session) = subscribed_on(&urls[n % 3], &stripe_url, &format!("rolling{n}@three.test")).await;
        let browser = browser.through(&nginx.url);
        let paid = stripe(&http, &stripe_url, Method::GET, &format!("/v1/checkout/sessions/{session}"), &[]).await;
        subscribers.push((browser, paid["customer"].as_str().unwrap().to_string(), paid["subscription"].as_str().unwrap().to_string()));
    }
    let subscribers = Arc::new(subscribers);

    let (stop, pages, deliveries) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let unanswered: Arc<Mutex<Vec<Value>>> = Arc::default();
    // What went wrong, reported at the end beside nginx's error log: a 5xx other than a 503 to
    // retry, or a page that is no longer the signed-in dashboard.
    let problems: Arc<Mutex<Vec<String>>> = Arc::default();
    let retryable = |status: u16, headers: &reqwest::header::HeaderMap| status == 503 && headers.contains_key("retry-after");
    let mut load = Vec::new();
    for n in 0..SUBSCRIBERS {
        let (stop, pages, subscribers, problems) = (stop.clone(), pages.clone(), subscribers.clone(), problems.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let page = subscribers[n].0.get("/dashboard").await;
                if page.status != 200 && !retryable(page.status, &page.headers) {
                    problems.lock().unwrap().push(format!("a page load: {} {:?} {}", page.status, page.headers.get("location"), page.text));
                }
                pages.fetch_add(1, Relaxed);
            }
        }));
    }
    {
        let (stop, deliveries, unanswered, problems) = (stop.clone(), deliveries.clone(), unanswered.clone(), problems.clone());
        let (subscribers, http, stripe_url, nginx_url) = (subscribers.clone(), http.clone(), stripe_url.clone(), nginx.url.clone());
        load.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Relaxed) {
                let (_, customer, subscription) = &subscribers[round % SUBSCRIBERS];
                let cancel = if (round / SUBSCRIBERS).is_multiple_of(2) { "true" } else { "false" };
                round += 1;
                stripe(&http, &stripe_url, Method::POST, &format!("/v1/subscriptions/{subscription}"), &[("cancel_at_period_end", cancel)])
                    .await;
                let query = [("type", "customer.subscription.updated"), ("limit", "1")];
                let event = stripe(&http, &stripe_url, Method::GET, "/v1/events", &query).await["data"][0].clone();
                assert_eq!(event["data"]["object"]["customer"], customer.as_str());
                let body = serde_json::to_vec(&event).unwrap();
                let sent = http
                    .post(format!("{nginx_url}/api/stripe-webhook"))
                    .header("stripe-signature", signature(&body, tollgate_core::unix_now()))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = sent.status().as_u16();
                if status >= 500 && !retryable(status, sent.headers()) {
                    let text = sent.text().await.unwrap_or_default();
                    problems.lock().unwrap().push(format!("a webhook: {status} {text}"));
                }
                if status != 200 {
                    unanswered.lock().unwrap().push(event);
                }
                deliveries.fetch_add(1, Relaxed);
            }
        }));
    }

    // The deploy: each instance in turn stops, and a new one takes its address.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (n, url) in urls.iter().enumerate() {
        let before = (pages.load(Relaxed), deliveries.load(Relaxed));
        tokio::task::block_in_place(|| instances[n].terminate());
        instances[n].launch();
        wait_until_up(&http, url).await;
        // Traffic went on through the others meanwhile, and reaches the new one too (nginx tries
        // an address that refused a connection again after the README's 2 s).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(pages.load(Relaxed) > before.0 && deliveries.load(Relaxed) > before.1, "traffic flowed while instance {n} was replaced");
    }
    stop.store(true, Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let problems = std::mem::take(&mut *problems.lock().unwrap());
    assert!(problems.is_empty(), "{problems:#?}\nnginx's error log:\n{}", nginx.error_log());
    let unanswered = std::mem::take(&mut *unanswered.lock().unwrap());
    eprintln!(
        "{} page loads, {} webhooks ({} to deliver again) during the deploy",
        pages.load(Relaxed),
        deliveries.load(Relaxed),
        unanswered.len()
    );
    for event in &unanswered {
        deliver(&http, &urls, 0, event).await;
    }
    for (browser, customer, _) in subscribers.iter() {
        let expected = expected_cache(&http, &stripe_url, customer).await;
        let synced = || async {
            let stored = redis.cli(&["GET", &format!("stripe:customer:{customer}")]);
            (serde_json::from_str::<Value>(&stored).ok() == Some(expected.clone())).then_some(())
        };
        test_support::eventually(&format!("{customer} in step with Stripe"), Duration::from_secs(15), synced).await;
        assert_eq!(browser.get("/dashboard").await.status, 200, "still signed in after the deploy");
    }
    drop(nginx);
}
