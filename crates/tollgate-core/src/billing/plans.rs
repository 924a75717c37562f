//! Plan changes in the app. A change to a plan that costs more per day, on the same billing
//! interval, is an upgrade: it applies at once, the rest of the period prorated and invoiced now
//! (`proration_behavior=always_invoice`), and a failed payment leaves the old plan
//! (`payment_behavior=pending_if_incomplete`). Anything else — a cheaper plan, or another
//! interval (monthly ↔ annual) — switches at the end of the period through a subscription
//! schedule (the current phase, then the new price), which the cache shows as `scheduledPriceId`
//! and `scheduledAt`. The preview of an upgrade is Stripe's own (`/v1/invoices/create_preview`
//! with the same change and a pinned `proration_date`), so what it says is what the invoice
//! charges. Every change goes through the one sync.

use std::sync::Arc;

use super::{Billing, BillingError};
use crate::domain::{CustomerId, Payer, Plan, PriceId, SubscriptionCache};
use crate::stripe::wire::{Created, Expandable, InvoicePreview, Subscription};

/// When a plan change takes effect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TakesEffect {
    Now,
    /// At the end of the current period (a unix time).
    At(i64),
}

/// What switching to a plan costs now.
#[derive(Debug, Clone)]
pub struct PlanPreview {
    pub price: PriceId,
    /// In the currency's minor unit; 0 for a change at the period's end.
    pub amount_due: i64,
    pub currency: String,
    /// The moment the prorations are counted from: pass it back to `change_plan` so that the
    /// invoice is the preview's to the cent.
    pub proration_date: Option<i64>,
    /// Each prorated line: what it says, and its amount (credits are negative).
    pub lines: Vec<(String, i64)>,
    pub takes_effect: TakesEffect,
}

/// The subscription a change is made on, as Stripe has it now.
struct Current {
    customer: CustomerId,
    subscription: String,
    item: String,
    /// The item's quantity (seats, for a per-seat plan): a scheduled change keeps it.
    quantity: i64,
    /// The usage prices beside the plan (`METERED_PRICES`): a scheduled change keeps them.
    usage_prices: Vec<String>,
    price: Plan,
    period_start: i64,
    period_end: i64,
    schedule: Option<String>,
}

/// A schedule phase's usage items, after its plan (item 0): `phases[{phase}][items][n][price]`.
fn usage_items<'a>(phase: usize, prices: impl Iterator<Item = &'a str>) -> impl Iterator<Item = (String, &'a str)> {
    prices.enumerate().map(move |(n, price)| (format!("phases[{phase}][items][{}][price]", n + 1), price))
}

/// A plan's price per day, to tell an upgrade from a downgrade.
fn per_day(plan: &Plan) -> f64 {
    let days = match plan.interval.as_str() {
        "day" => 1.0,
        "week" => 7.0,
        "month" => 30.0,
        _ => 365.0,
    } * plan.interval_count.max(1) as f64;
    plan.unit_amount as f64 / days
}

impl Billing {
    /// What switching `payer` to `price` costs now, and when it takes effect.
    pub async fn plan_preview(self: &Arc<Self>, payer: &Payer, price: &PriceId) -> Result<PlanPreview, BillingError> {
        let (current, target) = self.change_of(payer, price, false).await?;
        self.preview(&current, &target).await
    }

    /// What switching `payer` to each other offered plan costs now (`None` where Stripe could
    /// not say): the dashboard's list. The subscription is read once for all of them.
    pub async fn plan_previews(self: &Arc<Self>, payer: &Payer) -> Result<Vec<(Plan, Option<PlanPreview>)>, BillingError> {
        let plans = self.catalog.plans(&self.stripe).await?;
        let current = self.current(payer, &plans, false).await?;
        let mut previews = Vec::new();
        for plan in plans.iter().filter(|p| p.price_id != current.price.price_id) {
            previews.push((plan.clone(), self.preview(&current, plan).await.ok()));
        }
        Ok(previews)
    }

    /// What going from `current` to `target` costs now: Stripe's preview of the prorations for
    /// an upgrade; nothing, at the period's end, for any other change.
    async fn preview(&self, current: &Current, target: &Plan) -> Result<PlanPreview, BillingError> {
        let Some(upgrade_at) = self.upgrade_moment(current, target) else {
            return Ok(PlanPreview {
                price: target.price_id.clone(),
                amount_due: 0,
                currency: target.currency.clone(),
                proration_date: None,
                lines: Vec::new(),
                takes_effect: TakesEffect::At(current.period_end),
            });
        };
        let at = upgrade_at.to_string();
        let form = [
            ("subscription", current.subscription.as_str()),
            ("subscription_details[items][0][id]", current.item.as_str()),
            ("subscription_details[items][0][price]", target.price_id.as_str()),
            ("subscription_details[proration_behavior]", "always_invoice"),
            ("subscription_details[proration_date]", at.as_str()),
        ];
        let preview: InvoicePreview = self.stripe.post("/v1/invoices/create_preview", &form, None).await?;
        Ok(PlanPreview {
            price: target.price_id.clone(),
            amount_due: preview.amount_due,
            currency: preview.currency,
            proration_date: Some(upgrade_at),
            lines: preview.lines.data.into_iter().map(|l| (l.description.unwrap_or_default(), l.amount)).collect(),
            takes_effect: TakesEffect::Now,
        })
    }

    /// Switch `payer` to `price`: now with prorations (an upgrade; `proration_date` from its
    /// preview pins the amount), or at the period's end. The entry after the change.
    pub async fn change_plan(
        self: &Arc<Self>,
        payer: &Payer,
        price: &PriceId,
        proration_date: Option<i64>,
    ) -> Result<SubscriptionCache, BillingError> {
        let (current, target) = self.change_of(payer, price, true).await?;
        match self.upgrade_moment(&current, &target) {
            Some(now) => {
                // A downgrade waiting for the period's end is replaced by this change.
                self.release_schedule(&current).await?;
                let at = proration_date.filter(|at| (current.period_start..=now).contains(at)).unwrap_or(now).to_string();
                let form = [
                    ("items[0][id]", current.item.as_str()),
                    ("items[0][price]", price.as_str()),
                    ("proration_behavior", "always_invoice"),
                    ("proration_date", at.as_str()),
                    ("payment_behavior", "pending_if_incomplete"),
                ];
                let updated: Subscription = self.stripe.post(&format!("/v1/subscriptions/{}", current.subscription), &form, None).await?;
                let entry = self.sync(&current.customer).await?;
                match updated.pending_update {
                    Some(pending) if !pending.is_null() => Err(BillingError::PaymentFailed),
                    _ => Ok(entry),
                }
            }
            None => {
                // A fresh schedule: its first phase is the current period.
                self.release_schedule(&current).await?;
                let created: Created =
                    self.stripe.post("/v1/subscription_schedules", &[("from_subscription", current.subscription.as_str())], None).await?;
                let schedule = created.id;
                let (start, end, quantity) =
                    (current.period_start.to_string(), current.period_end.to_string(), current.quantity.to_string());
                // A phase lists all its items: this period keeps its usage prices, the next one
                // gets those that go with the new plan (no quantity: a meter counts).
                let next_usage = self.usage_prices_for(&target).await?;
                let usage_fields: Vec<(String, &str)> = usage_items(0, current.usage_prices.iter().map(String::as_str))
                    .chain(usage_items(1, next_usage.iter().map(PriceId::as_str)))
                    .collect();
                let mut form = vec![
                    ("end_behavior", "release"),
                    ("phases[0][items][0][price]", current.price.price_id.as_str()),
                    ("phases[0][items][0][quantity]", quantity.as_str()),
                    ("phases[0][start_date]", start.as_str()),
                    ("phases[0][end_date]", end.as_str()),
                    ("phases[1][items][0][price]", price.as_str()),
                    ("phases[1][items][0][quantity]", quantity.as_str()),
                ];
                form.extend(usage_fields.iter().map(|(field, price)| (field.as_str(), *price)));
                let _: Created = self.stripe.post(&format!("/v1/subscription_schedules/{schedule}"), &form, None).await?;
                self.sync(&current.customer).await
            }
        }
    }

    /// Release the subscription's schedule, if it has one (the subscription goes on as it is).
    async fn release_schedule(&self, current: &Current) -> Result<(), BillingError> {
        if let Some(schedule) = &current.schedule {
            let _: Created = self.stripe.post(&format!("/v1/subscription_schedules/{schedule}/release"), &[], None).await?;
        }
        Ok(())
    }

    /// Now, when going from `current` to `target` is an upgrade (same interval, more per day).
    fn upgrade_moment(&self, current: &Current, target: &Plan) -> Option<i64> {
        let same_interval = (&current.price.interval, current.price.interval_count) == (&target.interval, target.interval_count);
        (same_interval && per_day(target) > per_day(&current.price)).then(|| self.clock.unix_now())
    }

    /// The offered plan of `price` (another than the payer's) and the payer's live subscription.
    async fn change_of(self: &Arc<Self>, payer: &Payer, price: &PriceId, fresh: bool) -> Result<(Current, Plan), BillingError> {
        let plans = self.catalog.plans(&self.stripe).await?;
        let target = plans.iter().find(|p| &p.price_id == price).cloned().ok_or(BillingError::PlanNotOffered)?;
        let current = self.current(payer, &plans, fresh).await?;
        if current.price.price_id == target.price_id {
            return Err(BillingError::SamePlan);
        }
        Ok((current, target))
    }

    /// The payer's live subscription: from a fresh sync before a change (`fresh`), from the cache
    /// for a preview; its item, period and schedule are read from Stripe either way.
    async fn current(self: &Arc<Self>, payer: &Payer, plans: &[Plan], fresh: bool) -> Result<Current, BillingError> {
        let customer = self.customer_of(payer).await?.ok_or(BillingError::NoCustomer)?;
        let entry = match fresh {
            true => self.sync(&customer).await?,
            false => match self.cached_entry(&customer).await? {
                Some(entry) => entry,
                None => self.sync(&customer).await?,
            },
        };
        let subscription = entry.subscription().filter(|s| s.status.blocks_new_checkout()).ok_or(BillingError::NoLiveSubscription)?;
        let current_price = subscription.price_id.clone().ok_or(BillingError::NoLiveSubscription)?;
        let id = subscription.subscription_id.clone().ok_or(BillingError::NoLiveSubscription)?;
        let live: Subscription = self.stripe.get(&format!("/v1/subscriptions/{id}"), &[("expand[]", "schedule")]).await?;
        let usage_prices = live.items.data.iter().filter(|i| i.price.is_metered()).map(|i| i.price.id.clone()).collect();
        let item = live.items.data.into_iter().find(|i| !i.price.is_metered()).ok_or(BillingError::NoLiveSubscription)?;
        let price = plans.iter().find(|p| p.price_id.as_str() == current_price).cloned().unwrap_or(Plan {
            price_id: PriceId::parse(&current_price).map_err(|e| BillingError::Corrupt(e.to_string()))?,
            product_name: String::new(),
            unit_amount: item.price.unit_amount.unwrap_or(0),
            currency: item.price.currency.clone(),
            interval: item.price.recurring.as_ref().map_or("month".into(), |r| r.interval.clone()),
            interval_count: item.price.recurring.as_ref().map_or(1, |r| r.interval_count),
            features: Vec::new(),
            per_seat: false,
            max_seats: None,
            limits: None,
        });
        Ok(Current {
            customer,
            subscription: id,
            quantity: item.quantity.unwrap_or(1),
            usage_prices,
            item: item.id,
            price,
            period_start: item.current_period_start.unwrap_or(0),
            period_end: item.current_period_end.unwrap_or(0),
            schedule: live.schedule.map(|s| match s {
                Expandable::Id(id) => id,
                Expandable::Object(s) => s.id,
            }),
        })
    }
}
