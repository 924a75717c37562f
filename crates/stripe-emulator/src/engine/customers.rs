//! Customers: creating them (from the API or from Checkout) and deleting them.

use serde_json::{json, Map, Value};

use crate::model::{is_ended, new_id, str_field, ApiError};
use crate::store::Store;

/// A customer to create; the API has checked each field's form.
#[derive(Default)]
pub struct NewCustomer {
    pub email: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub phone: Option<String>,
    pub metadata: Map<String, Value>,
    pub preferred_locales: Vec<String>,
    /// A test clock the customer lives under: its objects take that clock's time.
    pub test_clock: Option<String>,
}

pub fn create_customer(store: &mut Store, new: NewCustomer) -> Result<Value, ApiError> {
    // A customer under a test clock is created at that clock's time.
    let now = match &new.test_clock {
        Some(clock) => store.get_kind("test_helpers.test_clock", clock, Some("test_clock"))?["frozen_time"].as_i64().unwrap_or(0),
        None => store.now(),
    };
    let id = new_id("cus_");
    let customer = json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": now,
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": new.description,
        "discount": null,
        "email": new.email,
        "invoice_prefix": id[4..12].to_ascii_uppercase(),
        "invoice_settings": { "custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null },
        "livemode": false,
        "metadata": new.metadata,
        "name": new.name,
        "next_invoice_sequence": 1,
        "phone": new.phone,
        "preferred_locales": new.preferred_locales,
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": new.test_clock,
    });
    store.insert(customer.clone());
    store.use_clock_of(&id);
    store.emit("customer.created", &customer, None);
    Ok(customer)
}

/// Deleting a customer cancels its subscriptions at once, as Stripe does. Returns the deleted form.
pub fn delete_customer(store: &mut Store, id: &str) -> Result<Value, ApiError> {
    let customer = store.get_kind("customer", id, Some("id"))?.clone();
    store.use_clock_of(id);
    let live: Vec<String> = store.iter_kind("subscription", Some(id)).filter(|s| !is_ended(s)).map(|s| str_field(s, "id")).collect();
    for sub in live {
        crate::engine::billing::cancel_now(store, &sub, "cancellation_requested");
    }
    let tombstone = store.delete(id);
    store.emit("customer.deleted", &customer, None);
    Ok(tombstone)
}
