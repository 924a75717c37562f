//! Organizations in the built-in accounts: creating, inviting, accepting, roles, leaving, and an
//! organization that pays per seat (`BILLING_SUBJECT=organization`, `SEAT_PRICES`), against the
//! emulator, whose subscription quantity and proration items are read back.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{shown_text, spawn_app_with, Browser, Options, Reply, TestApp, MONTHLY};

/// A per-seat team deployment: organizations pay, the monthly plan is billed per member.
async fn team_app(extra: &[(&'static str, &str)]) -> TestApp {
    let settings = [("BILLING_SUBJECT", "organization"), ("SEAT_PRICES", MONTHLY)].iter().chain(extra);
    spawn_app_with(Options { extra: settings.map(|(k, v)| (*k, v.to_string())).collect(), ..Options::default() }).await
}

/// A JSON request with the browser's session and CSRF token.
async fn json_call(browser: &Browser, method: Method, path: &str, body: Option<Value>) -> Reply {
    if browser.csrf().is_none() {
        browser.get("/auth").await;
    }
    let csrf = browser.csrf().unwrap();
    let headers = [("content-type", "application/json"), ("accept", "application/json"), ("x-csrf-token", csrf.as_str())];
    browser.send(method, path, &headers, body.map(|b| serde_json::to_vec(&b).unwrap())).await
}

/// `owner` invites `email` as `role` into `org`; the invitee (signed up now) accepts from the emailed link.
async fn invited_and_accepted(app: &TestApp, owner: &Browser, org: &str, email: &str, role: &str) -> Browser {
    let invited = owner.json_post(&format!("/api/orgs/{org}/invitations"), &json!({ "email": email, "role": role })).await;
    assert_eq!(invited.status, 201, "{}", invited.text);
    let link = app.emailed_link(email, "/invitations/accept");
    let token = link.split("token=").nth(1).unwrap().to_string();
    let invitee = app.signed_in(email).await;
    // The page shows the button and spends nothing (mail scanners open links).
    let page = invitee.get(&link).await;
    assert!(page.text.contains("accept-invitation"), "{}", page.text);
    let accepted = invitee.json_post("/api/invitations/accept", &json!({ "token": token })).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    assert_eq!(accepted.json()["role"], role);
    assert_eq!(invitee.json_post("/api/invitations/accept", &json!({ "token": token })).await.status, 410, "one use");
    invitee
}

/// The organization's live subscription in the emulator.
async fn subscription_of(app: &TestApp, customer: &str) -> Value {
    let list = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", customer), ("status", "all")]).await;
    list["data"][0].clone()
}

async fn quantity_becomes(app: &TestApp, customer: &str, wanted: i64) {
    let check = || async {
        app.settled().await;
        (subscription_of(app, customer).await["items"]["data"][0]["quantity"] == wanted).then_some(())
    };
    test_support::eventually(&format!("the seat count {wanted}"), std::time::Duration::from_secs(20), check).await;
}

#[tokio::test]
async fn an_organization_subscribes_per_seat_and_its_members_use_the_product() {
    let app = team_app(&[]).await;
    let owner = app.signed_in("owner@acme.test").await;

    // Organizations pay here: without one there is nothing to subscribe for.
    let refused = owner.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (409, Some("no_organization")), "{}", refused.text);
    assert!(owner.get("/dashboard").await.text.contains("needs-org"));

    let created = owner.json_post("/api/orgs", &json!({ "name": "Acme, Inc." })).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let org = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(created.json()["slug"], "acme-inc");
    let listed = owner.get_json("/api/orgs").await.json();
    assert_eq!(
        (listed["data"][0]["id"].as_str(), &listed["data"][0]["role"], &listed["data"][0]["active"]),
        (Some(org.as_str()), &json!("owner"), &json!(true))
    );

    // The owner subscribes for the organization: one seat.
    let started = owner.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    assert_eq!(started.status, 200, "{}", started.text);
    let session = started.json()["sessionId"].as_str().unwrap().to_string();
    let opened = app.stripe(Method::GET, &format!("/v1/checkout/sessions/{session}"), &[("expand[]", "line_items")]).await;
    assert_eq!(opened["line_items"]["data"][0]["quantity"], 1);
    assert_eq!(app.pay(&session, "4242424242424242").await.status, 303);
    let customer = opened["customer"].as_str().unwrap().to_string();
    let stripe_customer = app.stripe(Method::GET, &format!("/v1/customers/{customer}"), &[]).await;
    assert_eq!((stripe_customer["metadata"]["orgId"].as_str(), stripe_customer["name"].as_str()), (Some(org.as_str()), Some("Acme, Inc.")));
    let kv = &app.state.billing().kv;
    assert_eq!(kv.get(&format!("stripe:org:{org}")).await.unwrap().as_deref(), Some(customer.as_str()), "the organization's mapping");
    assert_eq!(owner.get("/success").await.status, 303);
    assert_eq!(app.cache(&customer).await.unwrap()["status"], "active", "the recipe's entry, written by the one sync");

    // Two people join: the seat count follows, prorated on the next invoice.
    let admin = invited_and_accepted(&app, &owner, &org, "ada@acme.test", "admin").await;
    let member = invited_and_accepted(&app, &owner, &org, "bob@acme.test", "member").await;
    quantity_becomes(&app, &customer, 3).await;
    let items = app.stripe(Method::GET, "/v1/invoiceitems", &[("customer", &customer)]).await;
    let prorations: Vec<&Value> = items["data"].as_array().unwrap().iter().filter(|i| i["proration"] == true).collect();
    assert!(!prorations.is_empty(), "the added seats are prorated: {items}");

    let dashboard = owner.get("/dashboard").await.text;
    assert!(dashboard.contains("<span id=\"team-seats\">3, 3 billed</span>"), "{dashboard}");
    let next = dashboard.split("<span id=\"next-invoice\">").nth(1).and_then(|rest| rest.split('<').next()).unwrap_or("");
    assert!(next.starts_with('$') && next.contains(" on "), "Stripe's preview of the next invoice: {next:?}");

    let members = owner.get_json(&format!("/api/orgs/{org}/members")).await.json();
    let roles: Vec<(&str, &str)> =
        members["data"].as_array().unwrap().iter().map(|m| (m["email"].as_str().unwrap(), m["role"].as_str().unwrap())).collect();
    assert_eq!(roles, [("owner@acme.test", "owner"), ("ada@acme.test", "admin"), ("bob@acme.test", "member")]);

    // Every member uses the product through the organization; only owners and admins touch billing.
    for browser in [&owner, &admin, &member] {
        assert_eq!(browser.get("/app").await.status, 200);
        let subscription = browser.get_json("/api/subscription").await.json();
        assert_eq!((subscription["entitled"].as_bool(), subscription["status"].as_str()), (Some(true), Some("active")));
    }
    let portal = member.form("/api/billing-portal", &[]).await;
    assert_eq!(portal.status, 403, "{}", portal.text);
    assert!(shown_text(&portal.text).contains("owners and admins"), "{}", portal.text);
    assert_eq!(member.json_post("/api/subscription/cancel", &json!({})).await.status, 403);
    assert_eq!(admin.form("/api/billing-portal", &[]).await.status, 303, "an admin manages billing");
    let dashboard = shown_text(&member.get("/dashboard").await.text);
    assert!(
        dashboard.contains("owner@acme.test") && dashboard.contains("ada@acme.test") && !dashboard.contains("Manage billing"),
        "{dashboard}"
    );
    assert_eq!(
        member.json_post(&format!("/api/orgs/{org}/invitations"), &json!({ "email": "eve@acme.test" })).await.status,
        403,
        "a member does not invite"
    );

    // The last owner neither leaves nor is demoted.
    let owner_id = roles_and_ids(&owner, &org).await["owner@acme.test"].clone();
    let left = json_call(&owner, Method::DELETE, &format!("/api/orgs/{org}/members/{owner_id}"), None).await;
    assert_eq!((left.status, left.json()["error"]["code"].as_str()), (409, Some("last_owner")), "{}", left.text);
    let demoted = json_call(&owner, Method::PATCH, &format!("/api/orgs/{org}/members/{owner_id}"), Some(json!({ "role": "admin" }))).await;
    assert_eq!(demoted.status, 409, "{}", demoted.text);
    let by_admin = json_call(&admin, Method::DELETE, &format!("/api/orgs/{org}/members/{owner_id}"), None).await;
    assert_eq!(by_admin.status, 403, "an admin does not remove an owner");

    // A member removed: one seat less, and no more access through the organization.
    let bob_id = roles_and_ids(&owner, &org).await["bob@acme.test"].clone();
    assert_eq!(json_call(&owner, Method::DELETE, &format!("/api/orgs/{org}/members/{bob_id}"), None).await.status, 204);
    quantity_becomes(&app, &customer, 2).await;
    assert_eq!(member.get_json("/api/subscription").await.json()["entitled"], false);

    // The organization's subscription ends: its members lose the product.
    let subscription = subscription_of(&app, &customer).await["id"].as_str().unwrap().to_string();
    app.stripe(Method::DELETE, &format!("/v1/subscriptions/{subscription}"), &[]).await;
    let events = app.events_for(&customer).await;
    app.deliver_all_and_settle(&events).await;
    for browser in [&owner, &admin] {
        assert_eq!(browser.get_json("/api/subscription").await.json()["entitled"], false);
    }
    assert_eq!(app.cache(&customer).await.unwrap()["status"], "canceled");
}

/// `{email: userId}` of the organization's members.
async fn roles_and_ids(browser: &Browser, org: &str) -> std::collections::HashMap<String, String> {
    let members = browser.get_json(&format!("/api/orgs/{org}/members")).await.json();
    members["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap().to_string(), m["userId"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn invitations_are_for_their_address_and_organizations_for_their_members() {
    let app = team_app(&[]).await;
    let owner = app.signed_in("owner@beta.test").await;
    let org = owner.json_post("/api/orgs", &json!({ "name": "Beta" })).await.json()["id"].as_str().unwrap().to_string();
    assert_eq!(owner.json_post(&format!("/api/orgs/{org}/invitations"), &json!({ "email": "carol@beta.test" })).await.status, 201);
    let link = app.emailed_link("carol@beta.test", "/invitations/accept");
    let token = link.split("token=").nth(1).unwrap().to_string();

    // Someone else holding the link cannot use it, and does not spend it.
    let mallory = app.signed_in("mallory@evil.test").await;
    let stolen = mallory.json_post("/api/invitations/accept", &json!({ "token": token })).await;
    assert_eq!(stolen.status, 403, "{}", stolen.text);
    assert!(stolen.text.contains("another email address"));
    assert_eq!(
        mallory.get_json(&format!("/api/orgs/{org}/members")).await.status,
        404,
        "not a member: the organization is not theirs to see"
    );
    assert_eq!(mallory.json_post(&format!("/api/orgs/{org}/activate"), &json!({})).await.status, 404);

    // Hostile input: a clear 4xx, nothing stored.
    for (path, body, status) in [
        ("/api/orgs", json!({ "name": "" }), 400),
        ("/api/orgs", json!({ "name": "x".repeat(81) }), 400),
        ("/api/orgs", json!({ "name": 5 }), 400),
        (&*format!("/api/orgs/{org}/invitations"), json!({ "email": "not an email" }), 400),
        (&*format!("/api/orgs/{org}/invitations"), json!({ "email": "dan@beta.test", "role": "emperor" }), 400),
        ("/api/orgs/not_an_org/invitations", json!({ "email": "dan@beta.test" }), 404),
        ("/api/invitations/accept", json!({ "token": "../../etc" }), 410),
        ("/api/invitations/accept", json!({}), 410),
    ] {
        let r = owner.json_post(path, &body).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.text);
        assert!(r.json()["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "a readable error: {}", r.text);
    }
    assert_eq!(owner.get_json("/api/orgs").await.json()["data"].as_array().unwrap().len(), 1);

    // The invitee accepts with the right account; the link was not spent by the others.
    let carol = app.signed_in("carol@beta.test").await;
    let accepted = carol.json_post("/api/invitations/accept", &json!({ "token": token })).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    assert_eq!(carol.get_json("/api/orgs").await.json()["data"][0]["active"], true, "the joined organization is active now");

    // Leaving: the session then acts for the user alone (not entitled here: organizations pay).
    let carol_id = roles_and_ids(&owner, &org).await["carol@beta.test"].clone();
    let left = carol.form(&format!("/api/orgs/{org}/members/{carol_id}/remove"), &[]).await;
    assert_eq!((left.status, left.headers.get("location").and_then(|l| l.to_str().ok())), (303, Some("/orgs?notice=left")));
    assert_eq!(carol.get_json("/api/orgs").await.json()["data"], json!([]));
    assert_eq!(carol.get_json(&format!("/api/orgs/{org}/members")).await.status, 404);
}

#[tokio::test]
async fn pages_manage_an_organization_without_a_script() {
    let app = team_app(&[]).await;
    let owner = app.signed_in("owner@gamma.test").await;
    let created = owner.form("/api/orgs", &[("name", "Gamma Team")]).await;
    assert_eq!(created.status, 303, "{}", created.text);
    let page_path = created.headers.get("location").unwrap().to_str().unwrap().to_string();
    let page = owner.get(&page_path).await;
    assert!(page.text.contains("Gamma Team") && page.text.contains("id=\"invite\""), "{}", page.text);
    let org = page_path.trim_start_matches("/orgs/").split('?').next().unwrap().to_string();
    assert_eq!(owner.form(&format!("/api/orgs/{org}/invitations"), &[("email", "dee@gamma.test"), ("role", "admin")]).await.status, 303);
    assert!(owner.get(&format!("/orgs/{org}")).await.text.contains("dee@gamma.test"), "the pending invitation is listed");
    let menu = owner.get("/dashboard").await.text;
    assert!(menu.contains("id=\"org-menu\"") && menu.contains("gamma-team"), "the header names the active organization");
    // Switch to acting alone, and back.
    assert_eq!(owner.form("/api/orgs/personal/activate", &[]).await.status, 303);
    assert!(owner.get("/orgs").await.text.contains("activate-gamma-team"));
    assert_eq!(owner.form(&format!("/api/orgs/{org}/activate"), &[]).await.status, 303);
    assert!(owner.get("/orgs").await.text.contains("active-gamma-team"));
}

/// `BILLING_SUBJECT=user` (the default): organizations exist, but each person still pays for
/// themselves, under the recipe's keys.
#[tokio::test]
async fn a_user_billed_deployment_is_unchanged_by_organizations() {
    let app = crate::helpers::spawn_app().await;
    let browser = app.signed_in("solo@delta.test").await;
    let org = browser.json_post("/api/orgs", &json!({ "name": "Delta" })).await.json()["id"].as_str().unwrap().to_string();
    let started = browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    assert_eq!(started.status, 200, "{}", started.text);
    let session = started.json()["sessionId"].as_str().unwrap().to_string();
    assert_eq!(app.pay(&session, "4242424242424242").await.status, 303);
    let customer =
        app.stripe(Method::GET, &format!("/v1/checkout/sessions/{session}"), &[]).await["customer"].as_str().unwrap().to_string();
    let metadata = &app.stripe(Method::GET, &format!("/v1/customers/{customer}"), &[]).await["metadata"];
    assert!(metadata["userId"].as_str().is_some_and(|u| u.starts_with("user_")) && metadata.get("orgId").is_none(), "{metadata}");
    let kv = &app.state.billing().kv;
    assert_eq!(kv.get(&format!("stripe:org:{org}")).await.unwrap(), None);
    let user = metadata["userId"].as_str().unwrap();
    assert_eq!(
        kv.get(&format!("stripe:user:{user}")).await.unwrap().as_deref(),
        Some(customer.as_str()),
        "the recipe's key, its raw value"
    );
    assert_eq!(browser.get("/success").await.status, 303);
    assert_eq!(browser.get("/app").await.status, 200);
}

/// Behind the gateway, the product is told the organization a member acts for (headers and the
/// assertion), and a member of a paying organization passes the gate; a client's own
/// `X-Tollgate-Org` never reaches the product.
#[tokio::test]
async fn the_gateway_tells_the_product_which_organization_and_role() {
    const SECRET: &str = "a gateway secret of at least thirty-two characters";
    let (product, _) = crate::gateway::start_product().await;
    let app = team_app(&[("UPSTREAM_URL", &product), ("GATED_PATHS", "/app"), ("GATEWAY_SECRET", SECRET)]).await;
    let owner = app.signed_in("owner@epsilon.test").await;
    let org = owner.json_post("/api/orgs", &json!({ "name": "Epsilon" })).await.json()["id"].as_str().unwrap().to_string();
    let started = owner.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    app.pay(started.json()["sessionId"].as_str().unwrap(), "4242424242424242").await;
    assert_eq!(owner.get("/success").await.status, 303);
    let member = invited_and_accepted(&app, &owner, &org, "fay@epsilon.test", "member").await;

    let seen = member.send(Method::GET, "/app/report", &[("accept", "application/json"), ("x-tollgate-org", "org_forged")], None).await;
    let seen = crate::gateway::received(&seen);
    let headers = &seen["headers"];
    assert_eq!(
        (headers["x-tollgate-org"].as_str(), headers["x-tollgate-org-role"].as_str(), headers["x-tollgate-org-slug"].as_str()),
        (Some(org.as_str()), Some("member"), Some("epsilon"))
    );
    assert_eq!(headers["x-tollgate-entitled"], "true");
    let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[product.as_str()]);
    let claims: Value = jsonwebtoken::decode(headers["x-tollgate-assertion"].as_str().unwrap(), &key, &validation).unwrap().claims;
    assert_eq!(
        (claims["org"].as_str(), claims["orgRole"].as_str(), claims["orgSlug"].as_str()),
        (Some(org.as_str()), Some("member"), Some("epsilon"))
    );

    // Acting alone, the member has no subscription of their own: the gate says pricing.
    assert_eq!(member.json_post("/api/orgs/personal/activate", &json!({})).await.status, 200);
    let refused = member.send(Method::GET, "/app/report", &[("accept", "application/json")], None).await;
    assert_eq!(refused.status, 402, "{}", refused.text);
}

/// A plan capped at two seats (`metadata.tollgate_max_seats`): a third invitation is refused with
/// an upgrade link; after a change to the capped plan with three members, the one who joined
/// last loses access until an owner makes room, and the dashboard says so.
#[tokio::test]
async fn a_seat_cap_refuses_invitations_and_leaves_out_the_last_to_join() {
    let stripe_url = crate::helpers::spawn_emulator().await;
    let http = reqwest::Client::new();
    let product = crate::helpers::stripe_api(&http, &stripe_url, Method::POST, "/v1/products", &[("name", "Team Small")]).await;
    let capped = crate::helpers::stripe_api(
        &http,
        &stripe_url,
        Method::POST,
        "/v1/prices",
        &[
            ("product", product["id"].as_str().unwrap()),
            ("unit_amount", "900"),
            ("currency", "usd"),
            ("recurring[interval]", "month"),
            ("metadata[tollgate_seats]", "per_seat"),
            ("metadata[tollgate_max_seats]", "2"),
        ],
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let settings =
        [("BILLING_SUBJECT", "organization".to_string()), ("PLANS", format!("{MONTHLY},{capped}")), ("SEAT_PRICES", MONTHLY.to_string())];
    let app = crate::helpers::spawn_app_against(&stripe_url, Options { extra: settings.into(), ..Options::default() }).await;

    // On the capped plan from the start: the owner and one more.
    let owner = app.signed_in("owner@zeta.test").await;
    let org = owner.json_post("/api/orgs", &json!({ "name": "Zeta" })).await.json()["id"].as_str().unwrap().to_string();
    let started = owner.json_post("/api/generate-stripe-checkout", &json!({ "priceId": capped })).await;
    app.pay(started.json()["sessionId"].as_str().unwrap(), "4242424242424242").await;
    assert_eq!(owner.get("/success").await.status, 303);
    let first = invited_and_accepted(&app, &owner, &org, "first@zeta.test", "member").await;
    let refused = owner.json_post(&format!("/api/orgs/{org}/invitations"), &json!({ "email": "third@zeta.test" })).await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (409, Some("seat_limit")), "{}", refused.text);
    assert!(refused.text.contains("includes 2 seats") && refused.text.contains("Upgrade"), "{}", refused.text);
    let page = owner.form(&format!("/api/orgs/{org}/invitations"), &[("email", "third@zeta.test")]).await;
    assert_eq!(
        page.headers.get("location").and_then(|l| l.to_str().ok()),
        Some("/dashboard?notice=seat-limit"),
        "the page leads to the plans"
    );

    // A third member through a plan without a cap, then a downgrade (in Stripe) to the capped one.
    let customer = app.state.billing().kv.get(&format!("stripe:org:{org}")).await.unwrap().unwrap();
    let subscription = subscription_of(&app, &customer).await;
    let item = subscription["items"]["data"][0]["id"].as_str().unwrap().to_string();
    let id = subscription["id"].as_str().unwrap().to_string();
    app.stripe(Method::POST, &format!("/v1/subscriptions/{id}"), &[("items[0][id]", &item), ("items[0][price]", MONTHLY)]).await;
    app.deliver_all_and_settle(&app.events_for(&customer).await).await;
    let third = invited_and_accepted(&app, &owner, &org, "third@zeta.test", "member").await;
    quantity_becomes(&app, &customer, 3).await;
    app.stripe(Method::POST, &format!("/v1/subscriptions/{id}"), &[("items[0][id]", &item), ("items[0][price]", &capped)]).await;
    app.deliver_all_and_settle(&app.events_for(&customer).await).await;
    quantity_becomes(&app, &customer, 2).await;
    for (browser, entitled) in [(&owner, true), (&first, true), (&third, false)] {
        assert_eq!(browser.get_json("/api/subscription").await.json()["entitled"], entitled);
    }
    assert!(shown_text(&owner.get("/dashboard").await.text).contains("includes 2 seats and the organization has 3 members"));

    // The owner removes the first member: the third is within the cap again.
    let first_id = roles_and_ids(&owner, &org).await["first@zeta.test"].clone();
    assert_eq!(json_call(&owner, Method::DELETE, &format!("/api/orgs/{org}/members/{first_id}"), None).await.status, 204);
    assert_eq!(third.get_json("/api/subscription").await.json()["entitled"], true);
}
