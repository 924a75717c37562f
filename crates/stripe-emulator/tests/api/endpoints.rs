//! The read and preview endpoints a subscription app calls besides the basics, and search.

use reqwest::Method;

use crate::helpers::{id, spawn_emulator};

#[tokio::test]
async fn items_lines_payments_charges_previews_and_portal_configuration() {
    let emu = spawn_emulator(vec![]).await;
    let (customer, sub) = emu.subscribed_customer().await;
    let sub_id = id(&sub);

    let items = emu.get("/v1/subscription_items", &[("subscription", &sub_id)]).await;
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["id"], sub["items"]["data"][0]["id"]);
    assert_eq!(items["data"][0]["price"]["id"], "price_pro_monthly");
    let item = emu.get(&format!("/v1/subscription_items/{}", items["data"][0]["id"].as_str().unwrap()), &[]).await;
    assert_eq!(item["subscription"], sub_id.as_str());
    assert_eq!(emu.call(Method::GET, "/v1/subscription_items", &[]).await.body["error"]["param"], "subscription");

    let invoice_id = sub["latest_invoice"].as_str().unwrap();
    let lines = emu.get(&format!("/v1/invoices/{invoice_id}/lines"), &[("limit", "1")]).await;
    assert_eq!(lines["data"][0]["object"], "line_item");
    assert_eq!(lines["data"][0]["amount"], 1000);
    assert_eq!(lines["url"], format!("/v1/invoices/{invoice_id}/lines"));
    let line = lines["data"][0]["id"].as_str().unwrap();
    let after = emu.get(&format!("/v1/invoices/{invoice_id}/lines"), &[("starting_after", line)]).await;
    assert_eq!((after["data"].as_array().unwrap().len(), after["has_more"].as_bool()), (0, Some(false)));
    let unknown = emu.call(Method::GET, &format!("/v1/invoices/{invoice_id}/lines"), &[("ending_before", "il_nope")]).await;
    assert_eq!((unknown.status, unknown.body["error"]["param"].as_str()), (400, Some("ending_before")));
    let invoice = emu.get(&format!("/v1/invoices/{invoice_id}"), &[("expand[]", "amount_paid_off_stripe")]).await;
    assert_eq!(invoice["amount_paid_off_stripe"], 0);

    let payments = emu.get("/v1/invoice_payments", &[("invoice", invoice_id)]).await;
    assert_eq!(payments["data"].as_array().unwrap().len(), 1);
    let payment = &payments["data"][0];
    assert_eq!((payment["status"].as_str(), payment["amount_paid"].as_i64()), (Some("paid"), Some(1000)));
    let intent = payment["payment"]["payment_intent"].as_str().unwrap();
    let by_intent = emu.get("/v1/invoice_payments", &[("payment[type]", "payment_intent"), ("payment[payment_intent]", intent)]).await;
    assert_eq!(by_intent["data"][0]["invoice"], invoice_id);

    let charges = emu.get("/v1/charges", &[("customer", &customer)]).await;
    let charge = &charges["data"][0];
    assert_eq!(
        (charge["status"].as_str(), charge["amount"].as_i64(), charge["paid"].as_bool()),
        (Some("succeeded"), Some(1000), Some(true))
    );
    assert_eq!(charge["payment_intent"], intent);
    assert_eq!(charge["payment_method_details"]["card"]["last4"], "4242");
    let expanded = emu.get(&format!("/v1/payment_intents/{intent}"), &[("expand[]", "latest_charge")]).await;
    assert_eq!(expanded["latest_charge"]["id"], charge["id"]);

    // The next invoice, and the one a switch to the yearly price would make.
    let next = emu.post("/v1/invoices/create_preview", &[("customer", &customer), ("subscription", &sub_id)]).await;
    assert!(next["id"].as_str().unwrap().starts_with("upcoming_in"));
    assert_eq!(next["amount_due"], 1000);
    assert_eq!(next["period_start"], sub["items"]["data"][0]["current_period_end"]);
    let item_id = sub["items"]["data"][0]["id"].as_str().unwrap();
    let switched = emu
        .post(
            "/v1/invoices/create_preview",
            &[
                ("subscription", &sub_id),
                ("subscription_details[items][0][id]", item_id),
                ("subscription_details[items][0][price]", "price_pro_yearly"),
            ],
        )
        .await;
    assert_eq!(switched["amount_due"], 10000);
    let fresh = emu
        .post("/v1/invoices/create_preview", &[("customer", &customer), ("subscription_details[items][0][price]", "price_pro_yearly")])
        .await;
    assert_eq!((fresh["billing_reason"].as_str(), fresh["amount_due"].as_i64()), (Some("subscription_create"), Some(10000)));
    assert_eq!(emu.get("/v1/invoices", &[("customer", &customer)]).await["data"].as_array().unwrap().len(), 1, "previews are not stored");
    let missing = emu.call(Method::POST, "/v1/invoices/create_preview", &[("customer", &customer)]).await;
    assert_eq!(missing.status, 400);

    let configurations = emu.get("/v1/billing_portal/configurations", &[]).await;
    assert_eq!(configurations["data"][0]["object"], "billing_portal.configuration");
    assert_eq!(configurations["data"][0]["is_default"], true);
    let id = configurations["data"][0]["id"].as_str().unwrap();
    assert_eq!(
        emu.get(&format!("/v1/billing_portal/configurations/{id}"), &[]).await["features"]["subscription_cancel"]["mode"],
        "at_period_end"
    );
    assert!(emu.get("/v1/billing_portal/configurations", &[("is_default", "false")]).await["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn customers_and_subscriptions_search() {
    let emu = spawn_emulator(vec![]).await;
    let ada =
        id(&emu.post("/v1/customers", &[("email", "ada@example.com"), ("name", "Ada Lovelace"), ("metadata[userId]", "user_ada")]).await);
    let bob = id(&emu.post("/v1/customers", &[("email", "bob@example.com"), ("metadata[userId]", "user_bob")]).await);
    let found = emu.get("/v1/customers/search", &[("query", "metadata['userId']:'user_ada'")]).await;
    assert_eq!(found["object"], "search_result");
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(found["data"][0]["id"], ada.as_str());
    assert_eq!(found["url"], "/v1/customers/search");
    assert!(found["next_page"].is_null());
    let either = emu.get("/v1/customers/search", &[("query", "email:'ada@example.com' OR email:'bob@example.com'")]).await;
    assert_eq!(either["data"].as_array().unwrap().len(), 2);
    let paged = emu.get("/v1/customers/search", &[("query", "email~'example'"), ("limit", "1")]).await;
    assert_eq!((paged["has_more"].as_bool(), paged["data"][0]["id"].as_str()), (Some(true), Some(bob.as_str())));
    let next = paged["next_page"].as_str().unwrap();
    let rest = emu.get("/v1/customers/search", &[("query", "email~'example'"), ("limit", "1"), ("page", next)]).await;
    assert_eq!(rest["data"][0]["id"], ada.as_str());

    let sub = emu
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &ada),
                ("items[0][price]", "price_pro_monthly"),
                ("default_payment_method", "pm_card_visa"),
                ("metadata[userId]", "user_ada"),
            ],
        )
        .await;
    let active = emu
        .get("/v1/subscriptions/search", &[("query", "status:'active' AND metadata['userId']:'user_ada'"), ("expand[]", "data.customer")])
        .await;
    assert_eq!(active["data"][0]["id"], sub["id"]);
    assert_eq!(active["data"][0]["customer"]["email"], "ada@example.com");
    assert!(emu.get("/v1/subscriptions/search", &[("query", "status:'canceled'")]).await["data"].as_array().unwrap().is_empty());

    for bad in ["email:'a' AND name:'b' OR phone:'c'", "plan:'x'", "email>3", "", "status:active"] {
        let r = emu.call(Method::GET, "/v1/subscriptions/search", &[("query", bad)]).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.body["error"]["type"], "invalid_request_error");
    }
    assert_eq!(emu.call(Method::GET, "/v1/customers/search", &[]).await.body["error"]["param"], "query");
    assert_eq!(emu.call(Method::GET, "/v1/customers/search", &[("query", "name:'x'"), ("page", "nope")]).await.status, 400);
}
