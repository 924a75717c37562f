use reqwest::Method;
use serde_json::Value;

use crate::helpers::{id, spawn_emulator};

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(id).collect()
}

#[tokio::test]
async fn lists_are_newest_first_with_cursors() {
    let emu = spawn_emulator(vec![]).await;
    let mut created = Vec::new();
    for i in 0..25 {
        created.push(emu.customer(&format!("c{i}@example.com")).await);
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    let page1 = emu.get("/v1/customers", &[]).await;
    assert_eq!(page1["object"], "list");
    assert_eq!(page1["url"], "/v1/customers");
    assert_eq!(ids(&page1), newest_first[..10].to_vec(), "default limit 10, newest first");
    assert_eq!(page1["has_more"], true);
    let last = newest_first[9].clone();
    let page2 = emu.get("/v1/customers", &[("limit", "10"), ("starting_after", &last)]).await;
    assert_eq!(ids(&page2), newest_first[10..20].to_vec());
    let page3 = emu.get("/v1/customers", &[("limit", "10"), ("starting_after", &newest_first[19])]).await;
    assert_eq!(ids(&page3), newest_first[20..].to_vec());
    assert_eq!(page3["has_more"], false);
    let before = emu.get("/v1/customers", &[("limit", "3"), ("ending_before", &newest_first[10])]).await;
    assert_eq!(ids(&before), newest_first[7..10].to_vec());
    assert_eq!(before["has_more"], true);
    let all = emu.get("/v1/customers", &[("limit", "100")]).await;
    assert_eq!(ids(&all).len(), 25);
    let both = emu.call(Method::GET, "/v1/customers", &[("starting_after", &newest_first[1]), ("ending_before", &newest_first[5])]).await;
    assert_eq!(both.status, 400);
    let by_email = emu.get("/v1/customers", &[("email", "c7@example.com")]).await;
    assert_eq!(ids(&by_email), vec![created[7].clone()]);
}

#[tokio::test]
async fn expansion_of_subscriptions_and_prices() {
    let emu = spawn_emulator(vec![]).await;
    let (customer, sub) = emu.subscribed_customer().await;
    assert!(sub["default_payment_method"].as_str().unwrap().starts_with("pm_"), "not expanded unless asked");
    let list = emu
        .get(
            "/v1/subscriptions",
            &[("customer", &customer), ("status", "all"), ("expand[]", "data.default_payment_method"), ("expand[]", "data.customer")],
        )
        .await;
    let s = &list["data"][0];
    assert_eq!(s["default_payment_method"]["card"]["last4"], "4242");
    assert_eq!(s["customer"]["email"], "subscriber@example.com");
    // The SDK's indexed form works too.
    let indexed = emu
        .get(&format!("/v1/subscriptions/{}", id(&sub)), &[("expand[0]", "latest_invoice"), ("expand[1]", "items.data.price.product")])
        .await;
    assert_eq!(indexed["latest_invoice"]["status"], "paid");
    assert_eq!(indexed["items"]["data"][0]["price"]["product"]["name"], "Pro");
    let price = emu.get("/v1/prices/price_pro_monthly", &[("expand[]", "product")]).await;
    assert_eq!(price["product"]["id"], "prod_pro");
    for bad in ["data.status", "data.nothing", "default_payment_method", "data"] {
        let r = emu.call(Method::GET, "/v1/subscriptions", &[("expand[]", bad)]).await;
        assert_eq!(r.status, 400, "expand {bad}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("cannot be expanded"));
    }
    let too_deep = emu.call(Method::GET, "/v1/subscriptions", &[("expand[]", "data.items.data.price.product")]).await;
    assert_eq!(too_deep.status, 400, "more than four levels");
}

#[tokio::test]
async fn list_filters() {
    let emu = spawn_emulator(vec![]).await;
    let (customer, sub) = emu.subscribed_customer().await;
    let trial = emu
        .post("/v1/subscriptions", &[("customer", &customer), ("items[0][price]", "price_pro_yearly"), ("trial_period_days", "7")])
        .await;
    emu.call(Method::DELETE, &format!("/v1/subscriptions/{}", id(&sub)), &[]).await;
    let live = emu.get("/v1/subscriptions", &[("customer", &customer)]).await;
    assert_eq!(ids(&live), vec![id(&trial)], "without status: not ended");
    let all = emu.get("/v1/subscriptions", &[("customer", &customer), ("status", "all")]).await;
    assert_eq!(ids(&all), vec![id(&trial), id(&sub)]);
    let ended = emu.get("/v1/subscriptions", &[("customer", &customer), ("status", "ended")]).await;
    assert_eq!(ids(&ended), vec![id(&sub)]);
    let trialing = emu.get("/v1/subscriptions", &[("status", "trialing")]).await;
    assert_eq!(ids(&trialing), vec![id(&trial)]);
    let by_price = emu.get("/v1/subscriptions", &[("price", "price_pro_monthly"), ("status", "all")]).await;
    assert_eq!(ids(&by_price), vec![id(&sub)]);
    let monthly = emu.get("/v1/prices", &[("recurring[interval]", "month")]).await;
    assert_eq!(ids(&monthly), vec!["price_pro_monthly".to_string()]);
    let product_prices = emu.get("/v1/prices", &[("product", "prod_pro"), ("active", "true")]).await;
    assert_eq!(ids(&product_prices).len(), 2);
    let invoices = emu.get("/v1/invoices", &[("subscription", &id(&trial))]).await;
    assert_eq!(invoices["data"][0]["amount_due"], 0);
    let events = emu.get("/v1/events", &[("type", "customer.subscription.*"), ("limit", "100")]).await;
    let types: Vec<&str> = events["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["customer.subscription.deleted", "customer.subscription.created", "customer.subscription.created"]);
}
