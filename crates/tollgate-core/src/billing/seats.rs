//! Seats: an organization that pays per member. A price is per seat when `SEAT_PRICES` names it
//! or its `metadata.tollgate_seats` is `per_seat`; its `metadata.tollgate_max_seats` caps the
//! members. Checkout bills the organization's seat count; after that the count is kept right by
//! the one sync, not by a writer of its own:
//! - a membership change marks the organization's customer pending, as a webhook does
//!   ([`Billing::seats_changed`]);
//! - the sync (under the customer's lease, after reading the mark's generation) counts the
//!   members and, when the live subscription's quantity differs, sets it in Stripe before it
//!   commits ([`reconcile`]).
//!
//! So the argument for the cache holds for the quantity too (ARCHITECTURE.md, "Syncs across
//! instances"): the last clean commit counted the members after the last change, on any number
//! of instances, and a burst of joins is read by one run, as a burst of events is.

use std::sync::Arc;

use super::{Billing, BillingError};
use crate::config::TeamSettings;
use crate::domain::{CustomerId, OrgId, Payer, Plan, UserId};
use crate::orgs::{OrgError, Orgs};
use crate::stripe::wire::{Created, InvoicePreview, Price, Subscription};
use crate::stripe::StripeClient;

/// What seat billing needs inside a sync.
pub struct Seats {
    pub orgs: Arc<Orgs>,
    pub settings: TeamSettings,
}

impl Seats {
    /// Whether `price` is billed per member.
    pub fn per_seat(&self, price: &str, metadata_per_seat: bool) -> bool {
        metadata_per_seat || self.settings.seat_prices.iter().any(|p| p.as_str() == price)
    }

    /// The quantity to bill `org` for a per-seat price capped at `max`: its seats in use (at
    /// least one), never more than the cap.
    pub async fn quantity(&self, org: &OrgId, max: Option<u32>) -> Result<u32, OrgError> {
        let used = self.orgs.seats_used(org, self.settings.seats_count_invitations).await?.max(1);
        Ok(max.map_or(used, |max| used.min(max.max(1))))
    }
}

/// An organization's seats, as its pages show them.
#[derive(Debug, Clone, PartialEq)]
pub struct SeatSummary {
    /// Members (and, with `SEATS_COUNT_INVITES`, pending invitations).
    pub used: u32,
    /// The plan's `metadata.tollgate_max_seats`.
    pub cap: Option<u32>,
    /// What Stripe bills: the subscription item's quantity (asked for only).
    pub billed: Option<u32>,
    /// The next invoice, Stripe's preview: amount due (minor unit), currency, when (asked for only).
    pub next_invoice: Option<(i64, String, i64)>,
}

/// `metadata.tollgate_seats` says per seat.
pub fn metadata_per_seat(price: &Price) -> bool {
    price.metadata.get("tollgate_seats").is_some_and(|v| v == "per_seat")
}

/// `metadata.tollgate_max_seats`, when it is a number.
pub fn metadata_max_seats(price: &Price) -> Option<u32> {
    price.metadata.get("tollgate_max_seats").and_then(|v| v.trim().parse().ok())
}

fn corrupt(e: OrgError) -> BillingError {
    match e {
        OrgError::Kv(e) => BillingError::Kv(e),
        other => BillingError::Corrupt(other.to_string()),
    }
}

impl Billing {
    /// The quantity Checkout bills `payer` for `plan`: the organization's seats for a per-seat
    /// plan, else one.
    pub(super) async fn seats_to_bill(&self, payer: &Payer, plan: &Plan) -> Result<u32, BillingError> {
        match payer {
            Payer::Org(org) if self.seats.per_seat(plan.price_id.as_str(), plan.per_seat) => {
                self.seats.quantity(org, plan.max_seats).await.map_err(corrupt)
            }
            _ => Ok(1),
        }
    }

    /// The seats of `org`'s live per-seat subscription (`None`: it has none), from the cache and
    /// the plans; `with_bill` adds what Stripe bills (two reads: the subscription, the preview).
    pub async fn seat_summary(&self, org: &OrgId, with_bill: bool) -> Result<Option<SeatSummary>, BillingError> {
        let Some(customer) = self.customer_of(&Payer::Org(org.clone())).await? else { return Ok(None) };
        let Some(entry) = self.cached_entry(&customer).await? else { return Ok(None) };
        let Some(subscription) = entry.subscription().filter(|s| s.status.is_live()) else { return Ok(None) };
        let (Some(id), Some(price)) = (subscription.subscription_id.as_deref(), subscription.price_id.as_deref()) else { return Ok(None) };
        let plans = self.catalog.plans(&self.stripe).await.unwrap_or_default();
        let plan = plans.iter().find(|p| p.price_id.as_str() == price);
        if !self.seats.per_seat(price, plan.is_some_and(|p| p.per_seat)) {
            return Ok(None);
        }
        let used = self.seats.orgs.seats_used(org, self.seats.settings.seats_count_invitations).await.map_err(corrupt)?;
        let mut summary = SeatSummary { used, cap: plan.and_then(|p| p.max_seats), billed: None, next_invoice: None };
        if with_bill {
            let live: Subscription = self.stripe.get(&format!("/v1/subscriptions/{id}"), &[]).await?;
            summary.billed = live.plan_item().and_then(|i| i.quantity).and_then(|q| u32::try_from(q).ok());
            let preview: InvoicePreview = self.stripe.post("/v1/invoices/create_preview", &[("subscription", id)], None).await?;
            let at = subscription.current_period_end.unwrap_or_default();
            summary.next_invoice = Some((preview.amount_due, preview.currency, at));
        }
        Ok(Some(summary))
    }

    /// Whether `user` is beyond the seat cap of `price` in `org`: the seats go to owners first,
    /// then admins, then members, each in the order they joined; someone not yet in the stored
    /// members (Clerk's webhook on its way) counts as the last to join. Without a known cap,
    /// nobody is.
    pub async fn beyond_the_seat_cap(&self, org: &OrgId, user: &UserId, price: &str) -> Result<bool, BillingError> {
        let Ok(plans) = self.catalog.plans(&self.stripe).await else { return Ok(false) };
        let Some(cap) = plans.iter().find(|p| p.price_id.as_str() == price).and_then(|p| p.max_seats) else { return Ok(false) };
        let members = self.seats.orgs.members(org).await.map_err(corrupt)?;
        let rank = members.iter().position(|m| &m.user_id == user).unwrap_or(members.len());
        Ok(rank >= cap as usize)
    }

    /// A membership of `org` changed: its customer, if it has one, is synced (and its seat count
    /// with it) by the drain, on whichever instance gets there first.
    pub async fn seats_changed(&self, org: &OrgId) -> Result<(), BillingError> {
        if let Some(customer) = self.customer_of(&Payer::Org(org.clone())).await? {
            self.mark_pending(&customer).await?;
        }
        Ok(())
    }
}

/// Inside a sync: when `customer` is an organization's and its live subscription bills a
/// per-seat price, set the item's quantity to the seats in use, if it differs. The count is
/// read here, after the sync read its generation.
pub(super) async fn reconcile(
    stripe: &StripeClient,
    seats: &Seats,
    customer: &CustomerId,
    subscription: Option<&Subscription>,
) -> Result<(), BillingError> {
    let Some(subscription) = subscription.filter(|s| matches!(s.status.as_str(), "active" | "trialing" | "past_due")) else {
        return Ok(());
    };
    let org = match subscription.customer.as_ref().and_then(|c| c.object()).and_then(|c| Payer::of_metadata(&c.metadata)) {
        Some(Payer::Org(org)) => Some(org),
        _ => None,
    };
    let (Some(org), Some(item)) = (org, subscription.plan_item()) else { return Ok(()) };
    if !seats.per_seat(&item.price.id, metadata_per_seat(&item.price)) {
        return Ok(());
    }
    let wanted = seats.quantity(&org, metadata_max_seats(&item.price)).await.map_err(corrupt)?;
    if item.quantity == Some(i64::from(wanted)) {
        return Ok(());
    }
    tracing::info!(customer = %customer, org = %org, from = ?item.quantity, to = wanted, "setting the seat count");
    crate::metrics::METRICS.seat_updates.inc();
    let quantity = wanted.to_string();
    let form = [
        ("items[0][id]", item.id.as_str()),
        ("items[0][quantity]", quantity.as_str()),
        ("proration_behavior", seats.settings.seat_proration.as_stripe()),
    ];
    let _: Created = stripe.post(&format!("/v1/subscriptions/{}", subscription.id), &form, None).await?;
    Ok(())
}
