//! The pages Stripe hosts: Checkout (`/c/pay/{id}`) and the billing portal (`/p/session/{id}`).
//! Plain server-rendered HTML, no JavaScript.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::app::Emulator;
use crate::billing::{self, is_ended};
use crate::cards::{self, TestCard};
use crate::error::ApiError;
use crate::format::{date, escape, money};
use crate::resources::checkout::PaymentForm;
use crate::resources::str_field;

fn per_interval(price: &Value) -> String {
    crate::format::per_interval(
        price["recurring"]["interval"].as_str().unwrap_or("month"),
        price["recurring"]["interval_count"].as_i64().unwrap_or(1),
    )
}

const STYLE: &str = r#"
*{box-sizing:border-box}body{margin:0;font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,sans-serif;background:#f6f9fc;color:#1a1f36}
.wrap{max-width:960px;margin:0 auto;padding:32px 20px;display:flex;flex-wrap:wrap;gap:32px}
.col{flex:1 1 340px}.card{background:#fff;border-radius:10px;box-shadow:0 2px 8px rgba(50,50,93,.1);padding:24px}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:0 0 12px}.amount{font-size:34px;font-weight:600;margin:8px 0}
.muted{color:#697386;font-size:14px}label{display:block;font-size:13px;color:#4f566b;margin:14px 0 6px}
input,select{width:100%;padding:10px 12px;border:1px solid #cfd7df;border-radius:6px;font-size:16px}
.row{display:flex;gap:10px}.row>div{flex:1}button{margin-top:18px;width:100%;padding:12px;border:0;border-radius:6px;background:#635bff;color:#fff;font-size:16px;font-weight:600;cursor:pointer}
button.secondary{background:#fff;color:#635bff;border:1px solid #635bff}.error{background:#fdecea;color:#b3261e;border-radius:6px;padding:10px 12px;margin-top:14px;font-size:14px}
.notice{background:#e6f4ea;color:#1e6b34;border-radius:6px;padding:10px 12px;margin-bottom:14px;font-size:14px}
.badge{display:inline-block;background:#e3e8ee;border-radius:4px;padding:2px 8px;font-size:12px;font-weight:600;text-transform:uppercase}
.test{background:#ffde92;color:#5c3b00;text-align:center;font-size:12px;padding:4px}a{color:#635bff}.line{display:flex;justify-content:space-between;margin:6px 0}
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body><div class=\"test\">TEST MODE · Stripe emulator</div>{body}</body></html>",
        escape(title)
    )
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<div class=\"wrap\"><div class=\"col card\"><h1>{}</h1><p class=\"muted\">{}</p></div></div>",
        escape(title),
        escape(text)
    );
    (status, Html(page(title, &body))).into_response()
}

pub async fn checkout_page(State(emu): State<Emulator>, Path(id): Path<String>) -> Response {
    render_checkout(&emu, &id, None, StatusCode::OK)
}

fn render_checkout(emu: &Emulator, id: &str, error: Option<&str>, status: StatusCode) -> Response {
    crate::resources::checkout::expire_if_due(emu, id);
    let store = emu.lock();
    let Some(session) = store.get(id).filter(|s| s["object"] == "checkout.session").cloned() else {
        return message_page(
            StatusCode::NOT_FOUND,
            "Checkout session not found",
            "This link is not valid. Ask the site you came from for a new one.",
        );
    };
    match session["status"].as_str() {
        Some("complete") => return message_page(StatusCode::OK, "Already paid", "This checkout session is complete."),
        Some("expired") => {
            return message_page(StatusCode::GONE, "This checkout session has expired", "Return to the site you came from to start again.")
        }
        _ => {}
    }
    let pending = store.pending_checkout.get(id).cloned();
    let trial_days = pending.as_ref().and_then(|p| p.trial_days);
    let email = pending.as_ref().and_then(|p| p.email.clone());
    let currency = session["currency"].as_str().unwrap_or("usd");
    let mut lines = String::new();
    for line in session["line_items"]["data"].as_array().into_iter().flatten() {
        lines.push_str(&format!(
            "<div class=\"line\"><span>{} × {}</span><span>{} {}</span></div>",
            escape(line["description"].as_str().unwrap_or("Subscription")),
            line["quantity"],
            money(line["amount_total"].as_i64().unwrap_or(0), currency),
            per_interval(&line["price"])
        ));
    }
    let first_price = &session["line_items"]["data"][0]["price"];
    let product = store.get(first_price["product"].as_str().unwrap_or_default()).map(|p| str_field(p, "name")).unwrap_or_default();
    let total = money(session["amount_total"].as_i64().unwrap_or(0), currency);
    let headline = match trial_days {
        Some(days) => {
            format!("<div class=\"amount\">{days} days free</div><p class=\"muted\">Then {total} {}</p>", per_interval(first_price))
        }
        None => format!("<div class=\"amount\">{total}</div><p class=\"muted\">{}</p>", per_interval(first_price)),
    };
    let email_field = match &email {
        Some(e) => format!("<label>Email</label><input name=\"email\" value=\"{}\" readonly>", escape(e)),
        None => "<label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required>"
            .to_string(),
    };
    let card_optional = session["payment_method_collection"] == "if_required" && trial_days.is_some();
    let error_box = error.map(|e| format!("<div class=\"error\" role=\"alert\" id=\"error\">{}</div>", escape(e))).unwrap_or_default();
    let cancel = session["cancel_url"]
        .as_str()
        .map(|u| format!("<p><a href=\"{}\" id=\"cancel\">← Cancel and go back</a></p>", escape(u)))
        .unwrap_or_default();
    let button = if trial_days.is_some() { "Start trial" } else { "Subscribe" };
    let body = format!(
        r#"<div class="wrap">
<div class="col">{cancel}<p class="muted">Subscribe to {product}</p>{headline}<div class="card">{lines}<div class="line"><strong>Total due today</strong><strong>{today}</strong></div></div></div>
<div class="col card"><h2>Pay with card</h2>
<form method="post" action="/c/pay/{id}">{email_field}
<label for="card_number">Card number{optional}</label><input id="card_number" name="card_number" inputmode="numeric" autocomplete="cc-number" placeholder="4242 4242 4242 4242" {required}>
<div class="row"><div><label for="exp">Expiry</label><input id="exp" name="exp" placeholder="MM / YY" autocomplete="cc-exp"></div><div><label for="cvc">CVC</label><input id="cvc" name="cvc" placeholder="CVC" autocomplete="cc-csc"></div></div>
<label for="name">Name on card</label><input id="name" name="name" autocomplete="cc-name">
{error_box}<button type="submit" id="submit">{button}</button></form>
<p class="muted">Test cards: 4242 4242 4242 4242 pays; 4000 0000 0000 9995 and 4000 0000 0000 0002 are declined.</p></div></div>"#,
        product = escape(&product),
        today = if trial_days.is_some() { money(0, currency) } else { total.clone() },
        id = escape(id),
        optional = if card_optional { " (optional during the trial)" } else { "" },
        required = if card_optional { "" } else { "required" },
    );
    (status, Html(page(&format!("Subscribe to {product}"), &body))).into_response()
}

pub async fn checkout_submit(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    form: Result<Form<PaymentForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return render_checkout(&emu, &id, Some("The form could not be read. Please try again."), StatusCode::BAD_REQUEST);
    };
    match crate::resources::control::complete(&emu, &id, &form.payment()).await {
        Ok(url) => (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response(),
        Err(err) if err.status == StatusCode::NOT_FOUND => {
            message_page(StatusCode::NOT_FOUND, "Checkout session not found", "This link is not valid.")
        }
        Err(err) => render_checkout(
            &emu,
            &id,
            Some(&err.message),
            if err.status == StatusCode::PAYMENT_REQUIRED { err.status } else { StatusCode::BAD_REQUEST },
        ),
    }
}

#[derive(Deserialize)]
pub struct PortalQuery {
    message: Option<String>,
}

pub async fn portal_page(State(emu): State<Emulator>, Path(id): Path<String>, Query(query): Query<PortalQuery>) -> Response {
    let store = emu.lock();
    let Some(session) = store.get(&id).filter(|s| s["object"] == "billing_portal.session").cloned() else {
        return message_page(
            StatusCode::NOT_FOUND,
            "Portal session not found",
            "This link is not valid. Return to the site you came from for a new one.",
        );
    };
    let customer_id = str_field(&session, "customer");
    let customer = store.get(&customer_id).cloned().unwrap_or_default();
    let customer_pm = customer["invoice_settings"]["default_payment_method"].as_str().map(str::to_string);
    let mut subs_html = String::new();
    for sub in store.iter_kind("subscription", Some(&customer_id)).filter(|s| !is_ended(s)) {
        let item = &sub["items"]["data"][0];
        let price = &item["price"];
        let product = store.get(price["product"].as_str().unwrap_or_default()).map(|p| str_field(p, "name")).unwrap_or_default();
        let sub_id = escape(&str_field(sub, "id"));
        let period_end = item["current_period_end"].as_i64().unwrap_or(0);
        let renewal = match sub["cancel_at"].as_i64() {
            Some(t) => format!("Cancels on {}", date(t)),
            None if sub["status"] == "trialing" => format!("Trial ends on {}", date(sub["trial_end"].as_i64().unwrap_or(period_end))),
            None => format!("Renews on {}", date(period_end)),
        };
        let pm_id = sub["default_payment_method"].as_str().map(str::to_string).or_else(|| customer_pm.clone());
        let card = pm_id
            .and_then(|pm| store.get(&pm).cloned())
            .map(|pm| format!("{} •••• {}", str_field(&pm["card"], "brand"), str_field(&pm["card"], "last4")))
            .unwrap_or_else(|| "No card on file".into());
        let cancel_button = if sub["cancel_at"].is_null() {
            format!("<form method=\"post\" action=\"/p/session/{}/cancel\"><input type=\"hidden\" name=\"subscription\" value=\"{sub_id}\"><button class=\"secondary\" id=\"cancel-{sub_id}\">Cancel plan</button></form>", escape(&id))
        } else {
            format!("<form method=\"post\" action=\"/p/session/{}/renew\"><input type=\"hidden\" name=\"subscription\" value=\"{sub_id}\"><button id=\"renew-{sub_id}\">Renew plan</button></form>", escape(&id))
        };
        let options: String = store
            .iter_kind("price", None)
            .filter(|p| {
                p["product"] == price["product"]
                    && p["active"] == true
                    && p["type"] == "recurring"
                    && p["id"] != price["id"]
                    && p["currency"] == price["currency"]
            })
            .map(|p| {
                format!(
                    "<option value=\"{}\">{} {}</option>",
                    escape(&str_field(p, "id")),
                    money(p["unit_amount"].as_i64().unwrap_or(0), p["currency"].as_str().unwrap_or("usd")),
                    per_interval(p)
                )
            })
            .collect();
        let switch = if options.is_empty() {
            String::new()
        } else {
            format!("<form method=\"post\" action=\"/p/session/{}/switch\"><input type=\"hidden\" name=\"subscription\" value=\"{sub_id}\"><label for=\"price-{sub_id}\">Switch plan</label><select id=\"price-{sub_id}\" name=\"price\">{options}</select><button class=\"secondary\">Switch plan</button></form>", escape(&id))
        };
        subs_html.push_str(&format!(
            "<div class=\"card\" style=\"margin-bottom:16px\"><h2>{} <span class=\"badge\">{}</span></h2><p>{} {}</p><p class=\"muted\">{}</p><p>Payment method: <strong id=\"card-{sub_id}\">{}</strong></p>{cancel_button}{switch}</div>",
            escape(&product),
            escape(sub["status"].as_str().unwrap_or_default()),
            money(price["unit_amount"].as_i64().unwrap_or(0), price["currency"].as_str().unwrap_or("usd")),
            per_interval(price),
            escape(&renewal),
            escape(&card),
        ));
    }
    if subs_html.is_empty() {
        subs_html = "<div class=\"card\"><p>You have no active subscriptions.</p></div>".into();
    }
    let notice = query.message.map(|m| format!("<div class=\"notice\" id=\"notice\">{}</div>", escape(&m))).unwrap_or_default();
    let back = session["return_url"]
        .as_str()
        .map(|u| format!("<p><a href=\"{}\" id=\"return\">← Return to the site</a></p>", escape(u)))
        .unwrap_or_default();
    let body = format!(
        r#"<div class="wrap"><div class="col">{back}<h1>Billing</h1><p class="muted">{email}</p>{notice}{subs_html}</div>
<div class="col card"><h2>Update card</h2><form method="post" action="/p/session/{id}/card"><label for="card_number">Card number</label><input id="card_number" name="card_number" inputmode="numeric" placeholder="4242 4242 4242 4242" required><button>Save card</button></form></div></div>"#,
        email = escape(customer["email"].as_str().unwrap_or_default()),
        id = escape(&id),
    );
    (StatusCode::OK, Html(page("Billing", &body))).into_response()
}

#[derive(Deserialize)]
pub struct PortalForm {
    subscription: Option<String>,
    price: Option<String>,
    card_number: Option<String>,
}

/// A portal button: change the subscription as Stripe's portal would, then show the portal again.
pub async fn portal_action(
    State(emu): State<Emulator>,
    Path((id, action)): Path<(String, String)>,
    form: Result<Form<PortalForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return message_page(StatusCode::BAD_REQUEST, "Something went wrong", "The form could not be read.");
    };
    let result = emu.apply(&Default::default(), |store| {
        let session = store.get_kind("billing_portal.session", &id, None)?.clone();
        let customer = str_field(&session, "customer");
        let owned_subscription = |store: &crate::store::Store, sub: &Option<String>| -> Result<Value, ApiError> {
            let sub_id = sub.as_deref().unwrap_or_default();
            let sub = store.get_kind("subscription", sub_id, Some("subscription"))?;
            if sub["customer"] != customer.as_str() || is_ended(sub) {
                return Err(ApiError::bad_request("That subscription cannot be changed here."));
            }
            Ok(sub.clone())
        };
        match action.as_str() {
            "cancel" | "renew" => {
                let sub = owned_subscription(store, &form.subscription)?;
                let cancel = action == "cancel";
                let period_end = sub["items"]["data"][0]["current_period_end"].clone();
                let changes = Map::from_iter([
                    ("cancel_at_period_end".to_string(), json!(cancel)),
                    ("cancel_at".to_string(), if cancel { period_end } else { Value::Null }),
                ]);
                store.commit(&str_field(&sub, "id"), changes, "customer.subscription.updated");
                Ok(if cancel { "Your plan will be canceled at the end of the billing period." } else { "Your plan will renew." })
            }
            "switch" => {
                let sub = owned_subscription(store, &form.subscription)?;
                let price_id = form.price.clone().unwrap_or_default();
                let price = store.get_kind("price", &price_id, Some("price"))?.clone();
                let current_price = &sub["items"]["data"][0]["price"];
                if price["product"] != current_price["product"] || price["active"] != true || price["type"] != "recurring" {
                    return Err(ApiError::bad_request("That plan is not available."));
                }
                let sub_id = str_field(&sub, "id");
                let mut items = sub["items"].clone();
                let item = &items["data"][0];
                let interval_changed = price["recurring"] != current_price["recurring"];
                let now = store.now();
                let mut replaced = billing::subscription_item(
                    &sub_id,
                    &price,
                    item["quantity"].as_i64().unwrap_or(1),
                    (item["current_period_start"].as_i64().unwrap_or(now), item["current_period_end"].as_i64().unwrap_or(now)),
                    item["created"].as_i64().unwrap_or(now),
                );
                replaced["id"] = item["id"].clone();
                items["data"][0] = replaced;
                store.commit(&sub_id, Map::from_iter([("items".to_string(), items)]), "customer.subscription.updated");
                if interval_changed {
                    let sub = store.get(&sub_id).cloned().unwrap_or_default();
                    billing::start_new_period(store, &sub_id, &sub, now);
                }
                Ok("Your plan was changed.")
            }
            "card" => {
                let card = TestCard::from_number(form.card_number.as_deref().unwrap_or_default())?;
                let pm = cards::create_card_payment_method(store, &card, 12, 2034, None, Map::new());
                let pm_id = cards::attach_payment_method(store, pm["id"].as_str().unwrap_or_default(), &customer, "card_number")?;
                let mut settings = store.get(&customer).map(|c| c["invoice_settings"].clone()).unwrap_or_default();
                settings["default_payment_method"] = json!(pm_id);
                store.commit(&customer, Map::from_iter([("invoice_settings".to_string(), settings)]), "customer.updated");
                // The new card also becomes the default of the customer's live subscriptions, so it is the one charged next.
                let subs: Vec<String> =
                    store.iter_kind("subscription", Some(&customer)).filter(|s| !is_ended(s)).map(|s| str_field(s, "id")).collect();
                for sub_id in subs {
                    store.commit(
                        &sub_id,
                        Map::from_iter([("default_payment_method".to_string(), json!(pm_id))]),
                        "customer.subscription.updated",
                    );
                }
                Ok("Your card was updated.")
            }
            _ => Err(ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "Unknown portal action.")),
        }
    });
    match result {
        Ok(message) => {
            let location = format!("/p/session/{id}?message={}", form_urlencoded::byte_serialize(message.as_bytes()).collect::<String>());
            (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
        }
        Err(err) if err.status == StatusCode::NOT_FOUND => message_page(StatusCode::NOT_FOUND, "Not found", &err.message),
        Err(err) => message_page(err.status, "That did not work", &err.message),
    }
}
