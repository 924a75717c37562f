//! One module per Stripe API resource: parsing its parameters and answering with its objects;
//! what the objects become is the engine's.

pub mod billing_portal;
pub mod checkout;
pub mod control;
pub mod customers;
pub mod discounts;
pub mod entitlements;
pub mod events;
pub mod invoices;
pub mod meter_stream;
pub mod meters;
pub mod payment_intents;
pub mod payment_methods;
pub mod prices;
pub mod products;
pub mod subscription_schedules;
pub mod subscriptions;
pub mod test_clocks;
pub mod webhook_endpoints;
