//! Billing-portal sessions, and what the portal's buttons do to a customer's subscriptions.

use serde_json::{json, Map, Value};

use crate::config::Dunning;
use crate::engine::billing;
use crate::engine::payment_methods::{attach_payment_method, create_card_payment_method};
use crate::model::cards::TestCard;
use crate::model::{is_ended, new_id, str_field, ApiError};
use crate::store::Store;

/// The one portal configuration the emulator has (`GET /v1/billing_portal/configurations`).
pub const CONFIGURATION_ID: &str = "bpc_emulator_default";

/// A session for `customer`'s portal page, served under `public_url`.
pub fn create_session(
    store: &mut Store,
    customer: &str,
    return_url: Option<String>,
    locale: Option<String>,
    public_url: &str,
) -> Result<Value, ApiError> {
    store.get_kind("customer", customer, Some("customer"))?;
    let id = new_id("bps_");
    let session = json!({
        "id": id,
        "object": "billing_portal.session",
        "configuration": CONFIGURATION_ID,
        "created": store.now(),
        "customer": customer,
        "customer_account": null,
        "flow": null,
        "livemode": false,
        "locale": locale,
        "on_behalf_of": null,
        "return_url": return_url,
        "url": format!("{public_url}/p/session/{id}"),
    });
    store.insert(session.clone());
    Ok(session)
}

/// One portal action, as the page's form names it.
pub enum PortalAction<'a> {
    Cancel { subscription: &'a str },
    Renew { subscription: &'a str },
    Switch { subscription: &'a str, price: &'a str },
    Card { number: &'a str },
}

/// Run an action of portal session `session`; the sentence to show the customer afterwards.
pub fn act(store: &mut Store, session: &str, action: PortalAction, dunning: &Dunning) -> Result<&'static str, ApiError> {
    let session = store.get_kind("billing_portal.session", session, None)?.clone();
    let customer = str_field(&session, "customer");
    store.use_clock_of(&customer);
    let owned = |store: &Store, sub_id: &str| -> Result<Value, ApiError> {
        let sub = store.get_kind("subscription", sub_id, Some("subscription"))?;
        if sub["customer"] != customer.as_str() || is_ended(sub) {
            return Err(ApiError::bad_request("That subscription cannot be changed here."));
        }
        Ok(sub.clone())
    };
    match action {
        PortalAction::Cancel { subscription } | PortalAction::Renew { subscription } => {
            let cancel = matches!(action, PortalAction::Cancel { .. });
            let sub = owned(store, subscription)?;
            let period_end = sub["items"]["data"][0]["current_period_end"].clone();
            let changes = Map::from_iter([
                ("cancel_at_period_end".to_string(), json!(cancel)),
                ("cancel_at".to_string(), if cancel { period_end } else { Value::Null }),
            ]);
            store.commit(subscription, changes, "customer.subscription.updated");
            Ok(if cancel { "Your plan will be canceled at the end of the billing period." } else { "Your plan will renew." })
        }
        PortalAction::Switch { subscription, price } => {
            let sub = owned(store, subscription)?;
            let price = store.get_kind("price", price, Some("price"))?.clone();
            let current = &sub["items"]["data"][0];
            if price["product"] != current["price"]["product"] || price["active"] != true || price["type"] != "recurring" {
                return Err(ApiError::bad_request("That plan is not available."));
            }
            let mut items = sub["items"].clone();
            items["data"][0] = billing::swap_price(subscription, current, &price, None, store.now());
            billing::replace_items(store, subscription, items, dunning);
            Ok("Your plan was changed.")
        }
        PortalAction::Card { number } => {
            let card = TestCard::from_number(number)?;
            let pm = create_card_payment_method(store, &card, 12, 2034, None, Map::new());
            let pm_id = attach_payment_method(store, pm["id"].as_str().unwrap_or_default(), &customer, "card_number")?;
            let mut settings = store.get(&customer).map(|c| c["invoice_settings"].clone()).unwrap_or_default();
            settings["default_payment_method"] = json!(pm_id);
            store.use_clock_of(&customer);
            store.commit(&customer, Map::from_iter([("invoice_settings".to_string(), settings)]), "customer.updated");
            // The new card also becomes the default of the customer's live subscriptions, so it is
            // the one charged next; an unpaid invoice is tried again with it at once.
            let subs: Vec<String> =
                store.iter_kind("subscription", Some(&customer)).filter(|s| !is_ended(s)).map(|s| str_field(s, "id")).collect();
            for sub_id in subs {
                store.commit(
                    &sub_id,
                    Map::from_iter([("default_payment_method".to_string(), json!(pm_id))]),
                    "customer.subscription.updated",
                );
                billing::retry_now(store, &sub_id, dunning);
            }
            Ok("Your card was updated.")
        }
    }
}
