//! The pages Stripe hosts: Checkout (`/c/pay/{id}`) and the billing portal (`/p/session/{id}`).
//! Plain server-rendered HTML from askama templates (`templates/`), no JavaScript.

use askama::Template;
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
use crate::format::{date, money};
use crate::resources::checkout::PaymentForm;
use crate::resources::str_field;

fn per_interval(price: &Value) -> String {
    crate::format::per_interval(
        price["recurring"]["interval"].as_str().unwrap_or("month"),
        price["recurring"]["interval_count"].as_i64().unwrap_or(1),
    )
}

/// A page from its template (`templates/`, auto-escaped by askama), with `status`.
fn render(status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", format!("page rendering failed: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    render(status, MessagePage { title, text })
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage<'a> {
    id: &'a str,
    product: String,
    /// "$12.00", or "14 days free" during a trial.
    headline: String,
    /// "per month", or "Then $12.00 per month".
    headline_note: String,
    lines: Vec<LineView>,
    due_today: String,
    /// Known from the customer: shown read-only.
    email: Option<String>,
    card_optional: bool,
    error: Option<&'a str>,
    cancel_url: Option<String>,
    button: &'static str,
}

struct LineView {
    description: String,
    quantity: i64,
    amount: String,
    per_interval: String,
}

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    id: String,
    return_url: Option<String>,
    email: String,
    notice: Option<String>,
    subscriptions: Vec<PortalSubscription>,
}

struct PortalSubscription {
    id: String,
    product: String,
    status: String,
    amount: String,
    per_interval: String,
    renewal: String,
    card: String,
    /// Not yet set to cancel: offer "Cancel plan" (else "Renew plan").
    cancellable: bool,
    /// Other prices of the same product: (price id, label).
    other_prices: Vec<(String, String)>,
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
    let lines = session["line_items"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| LineView {
            description: line["description"].as_str().unwrap_or("Subscription").to_string(),
            quantity: line["quantity"].as_i64().unwrap_or(1),
            amount: money(line["amount_total"].as_i64().unwrap_or(0), currency),
            per_interval: per_interval(&line["price"]),
        })
        .collect();
    let first_price = &session["line_items"]["data"][0]["price"];
    let product = store.get(first_price["product"].as_str().unwrap_or_default()).map(|p| str_field(p, "name")).unwrap_or_default();
    let total = money(session["amount_total"].as_i64().unwrap_or(0), currency);
    let (headline, headline_note) = match trial_days {
        Some(days) => (format!("{days} days free"), format!("Then {total} {}", per_interval(first_price))),
        None => (total.clone(), per_interval(first_price)),
    };
    let page = CheckoutPage {
        id,
        product,
        headline,
        headline_note,
        lines,
        due_today: if trial_days.is_some() { money(0, currency) } else { total },
        email,
        card_optional: session["payment_method_collection"] == "if_required" && trial_days.is_some(),
        error,
        cancel_url: session["cancel_url"].as_str().map(str::to_string),
        button: if trial_days.is_some() { "Start trial" } else { "Subscribe" },
    };
    render(status, page)
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
    let mut subscriptions = Vec::new();
    for sub in store.iter_kind("subscription", Some(&customer_id)).filter(|s| !is_ended(s)) {
        let item = &sub["items"]["data"][0];
        let price = &item["price"];
        let period_end = item["current_period_end"].as_i64().unwrap_or(0);
        let pm_id = sub["default_payment_method"].as_str().map(str::to_string).or_else(|| customer_pm.clone());
        let other_prices = store
            .iter_kind("price", None)
            .filter(|p| {
                p["product"] == price["product"]
                    && p["active"] == true
                    && p["type"] == "recurring"
                    && p["id"] != price["id"]
                    && p["currency"] == price["currency"]
            })
            .map(|p| {
                let label = format!(
                    "{} {}",
                    money(p["unit_amount"].as_i64().unwrap_or(0), p["currency"].as_str().unwrap_or("usd")),
                    per_interval(p)
                );
                (str_field(p, "id"), label)
            })
            .collect();
        subscriptions.push(PortalSubscription {
            id: str_field(sub, "id"),
            product: store.get(price["product"].as_str().unwrap_or_default()).map(|p| str_field(p, "name")).unwrap_or_default(),
            status: sub["status"].as_str().unwrap_or_default().to_string(),
            amount: money(price["unit_amount"].as_i64().unwrap_or(0), price["currency"].as_str().unwrap_or("usd")),
            per_interval: per_interval(price),
            renewal: match sub["cancel_at"].as_i64() {
                Some(t) => format!("Cancels on {}", date(t)),
                None if sub["status"] == "trialing" => format!("Trial ends on {}", date(sub["trial_end"].as_i64().unwrap_or(period_end))),
                None => format!("Renews on {}", date(period_end)),
            },
            card: pm_id
                .and_then(|pm| store.get(&pm).cloned())
                .map(|pm| format!("{} •••• {}", str_field(&pm["card"], "brand"), str_field(&pm["card"], "last4")))
                .unwrap_or_else(|| "No card on file".into()),
            cancellable: sub["cancel_at"].is_null(),
            other_prices,
        });
    }
    let page = PortalPage {
        id: id.clone(),
        return_url: session["return_url"].as_str().map(str::to_string),
        email: customer["email"].as_str().unwrap_or_default().to_string(),
        notice: query.message,
        subscriptions,
    };
    render(StatusCode::OK, page)
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
