//! The HTML pages: pricing, dashboard, success, the gated app. (The account pages are in
//! `http::accounts`.)

use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::csrf::CsrfToken;
use super::error::{Failure, Surface};
use super::extract::{CurrentUser, Entitled};
use super::views::{AppHome, Dashboard, Frame, Landing, PlanCard, PlanOption, TeamView};
use crate::access::{cached_subscription, entitlement};
use crate::state::AppState;
use tollgate_core::domain::{ActiveOrg, CachedSubscription, Payer, SubscriptionCache};

#[derive(Deserialize, Default)]
pub(crate) struct PageQuery {
    pub(super) notice: Option<String>,
    pub(super) next: Option<String>,
    /// A feature the user's plan lacks (`?notice=feature`): the plans that have it are marked.
    pub(super) feature: Option<String>,
}

/// Messages a redirect may ask a page to show; anything else in `?notice=` is ignored.
pub(super) fn notice_text(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "subscribe" => Some("Choose a plan to use the app."),
        "feature" => Some("Your plan does not include that part of the app: the plans marked below do."),
        "cancel-scheduled" => Some("Your subscription will end at the end of this billing period. You can resume it until then."),
        "resumed" => Some("Your subscription continues: it renews as before."),
        "plan-changed" => Some("Your plan changed. The difference for the rest of this period was charged now."),
        "plan-scheduled" => Some("Your plan changes at the end of this billing period. Until then nothing changes."),
        "payment-failed" => {
            Some("The payment for the new plan failed: you stay on your current plan. Update your card in billing and try again.")
        }
        "already-subscribed" => Some("You already have a subscription: manage it here instead of buying a second one."),
        "signed-out" => Some("You are signed out."),
        "welcome" => Some("Welcome! Your account is ready."),
        "key-revoked" => Some("The key was revoked: calls with it are refused from now on."),
        "org-created" => Some("Your organization is ready, and you act for it now. Invite the people who work with you."),
        "invited" => Some("The invitation is on its way: it works for 7 days."),
        "joined" => Some("You joined the organization, and you act for it now."),
        "role-changed" => Some("The role was changed."),
        "removed" => Some("The member was removed."),
        "left" => Some("You left the organization."),
        "seat-limit" => Some("Your plan's seats are all taken: upgrade the plan to invite more people."),
        "password-changed" => Some("Your password was changed and every device was signed out. Sign in with the new password."),
        _ => None,
    }
}

pub(crate) async fn landing(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    CsrfToken(csrf): CsrfToken,
    Query(query): Query<PageQuery>,
) -> Result<Response, Failure> {
    let plans = state.billing.catalog.plans(&state.billing.stripe).await.map_err(|e| Failure::from_billing(Surface::Page, e))?;
    let user = user.map(|u| u.0);
    // A promise only (Checkout decides): without the KV's answer, none is made.
    let payer = user.as_ref().and_then(|u| state.policy.payer(u));
    let trial = state.billing.trial_promised(payer.as_ref()).await.ok().flatten();
    let page = Landing {
        frame: Frame { user: user.as_ref(), csrf: &csrf, notice: notice_text(query.notice.as_deref()) },
        plans: plans
            .iter()
            .map(|plan| {
                // Configured per price, or (`ENTITLEMENTS=stripe`) read from the plan's product.
                let features = match state.features.from_stripe {
                    true => plan.features.as_slice(),
                    false => state.features.of_price(plan.price_id.as_str()),
                };
                let wanted = query.feature.as_deref().is_some_and(|wanted| features.iter().any(|f| f == wanted));
                PlanCard { features: features.join(", "), wanted, ..PlanCard::of(plan) }
            })
            .collect(),
        trial: trial.map(|t| match t.without_card {
            None => format!("{}-day free trial", t.days),
            Some(_) => format!("{}-day free trial, no card needed", t.days),
        }),
    };
    Ok(page.into_response())
}

pub(crate) async fn dashboard(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    CsrfToken(csrf): CsrfToken,
    Query(query): Query<PageQuery>,
) -> Result<Response, Failure> {
    let failure = |e| Failure::from_billing(Surface::Page, e);
    // The payer's subscription is shown (the active organization's when it pays); whether the
    // user is entitled may also come from another payer (`BILLING_SUBJECT=both`).
    let payer = state.policy.payer(&user);
    let access = entitlement(&state.billing, &state.policy, &user).await.map_err(failure)?;
    let entitled = access.entitled;
    let entry = match &payer {
        Some(payer) if access.payer.as_ref() == Some(payer) => access.entry,
        Some(payer) => cached_subscription(&state.billing, payer).await.map_err(failure)?.1,
        None => SubscriptionCache::none(),
    };
    // The plan's name is a nicety: without Stripe the dashboard still shows the cached entry.
    let plans = state.billing.catalog.plans(&state.billing.stripe).await.unwrap_or_default();
    let team = match (&payer, &user.org) {
        (Some(Payer::Org(_)), Some(org)) => Some(team_view(&state, org).await?),
        _ => None,
    };
    let billing_allowed = payer.is_some() && team.as_ref().is_none_or(|t| t.manages);
    let page = Dashboard::new(&user, &csrf, &entry, &plans, entitled, notice_text(query.notice.as_deref()));
    // A subscriber sees what switching to each other plan costs now (Stripe's own preview); the
    // plans alone when Stripe cannot say.
    let options = match (entry.subscription().filter(|s| s.status.blocks_new_checkout()), payer.as_ref().filter(|_| billing_allowed)) {
        (None, _) | (_, None) => Vec::new(),
        (Some(sub), Some(payer)) => match state.billing.plan_previews(payer).await {
            Ok(previews) => previews.iter().map(|(plan, preview)| PlanOption::of(plan, preview.as_ref())).collect(),
            Err(_) => {
                plans.iter().filter(|p| Some(p.price_id.as_str()) != sub.price_id.as_deref()).map(|p| PlanOption::of(p, None)).collect()
            }
        },
    };
    let needs_org = payer.is_none();
    let usage = match (&payer, entry.subscription().filter(|_| entitled)) {
        (Some(payer), Some(sub)) => api_usage(&state, payer, sub).await?,
        _ => None,
    };
    Ok(Dashboard { local_accounts: state.clerk.is_none(), options, team, billing_allowed, needs_org, usage, ..page }.into_response())
}

/// API requests counted this period against the plan's `PLAN_LIMITS`: (used, limit).
async fn api_usage(state: &AppState, payer: &Payer, sub: &CachedSubscription) -> Result<Option<(u64, u64)>, Failure> {
    let (Some(price), Some(start)) = (sub.price_id.as_deref(), sub.current_period_start) else { return Ok(None) };
    let Some(limit) = crate::access::limits_of(&state.billing, &state.limits, price).await.and_then(|l| l.per_period) else {
        return Ok(None);
    };
    let used = state
        .billing
        .kv
        .get(&tollgate_core::kv::keys::quota_period(payer.as_str(), start))
        .await
        .map_err(|e| Failure::from_kv(Surface::Page, e))?;
    Ok(Some((used.and_then(|u| u.parse().ok()).unwrap_or(0), limit)))
}

/// The organization the dashboard's subscription belongs to: who may manage its billing, and its seats.
async fn team_view(state: &AppState, org: &ActiveOrg) -> Result<TeamView, Failure> {
    let failure = |e| Failure::from_org(Surface::Page, e);
    let name = state.billing.seats.orgs.get(&org.id).await.map_err(failure)?.map_or_else(|| org.slug.clone(), |o| o.name);
    let managers: Vec<String> = state
        .billing
        .seats
        .orgs
        .members(&org.id)
        .await
        .map_err(failure)?
        .into_iter()
        .filter(|m| m.role.manages())
        .map(|m| m.email.as_str().to_string())
        .collect();
    // What Stripe bills is read for owners and admins, who pay; a failed read leaves it out.
    let summary = match state.billing.seat_summary(&org.id, org.role.manages()).await {
        Ok(summary) => summary,
        Err(_) => state.billing.seat_summary(&org.id, false).await.map_err(|e| Failure::from_billing(Surface::Page, e))?,
    };
    let over_cap = summary.as_ref().and_then(|s| s.cap.filter(|cap| s.used > *cap).map(|cap| (s.used, cap)));
    Ok(TeamView {
        id: org.id.to_string(),
        name,
        role: org.role.as_str(),
        manages: org.role.manages(),
        ask: managers.join(", "),
        seats: summary.as_ref().map(|s| match (s.cap, s.billed) {
            (Some(cap), Some(billed)) => format!("{} of {cap}, {billed} billed", s.used),
            (Some(cap), None) => format!("{} of {cap}", s.used),
            (None, Some(billed)) => format!("{}, {billed} billed", s.used),
            (None, None) => s.used.to_string(),
        }),
        next_invoice: summary
            .and_then(|s| s.next_invoice)
            .map(|(amount, currency, at)| format!("{} on {}", billing_text::money(amount, &currency), billing_text::date(at))),
        over_cap: over_cap.map(|(used, cap)| {
            format!("The plan includes {cap} seats and the organization has {used} members: the {} who joined last cannot use the product until an owner upgrades the plan or removes members.", used - cap)
        }),
    })
}

/// `/success` and `/api/success-sync`: the user is back from Checkout, possibly before the webhooks;
/// sync now so the dashboard is already right.
pub(crate) async fn success(State(state): State<AppState>, CurrentUser(user): CurrentUser, parts: Parts) -> Result<Redirect, Failure> {
    let surface = Surface::of(&parts);
    let Some(payer) = state.policy.payer(&user) else { return Ok(Redirect::to("/dashboard")) };
    let customer = state.billing.customer_of(&payer).await.map_err(|e| Failure::from_billing(surface, e))?;
    let Some(customer) = customer else { return Ok(Redirect::to("/")) };
    state.billing.sync(&customer).await.map_err(|e| Failure::from_billing(surface, e))?;
    Ok(Redirect::to("/dashboard"))
}

pub(crate) async fn app_home(Entitled(user, _): Entitled, CsrfToken(csrf): CsrfToken) -> Response {
    AppHome { frame: Frame { user: Some(&user), csrf: &csrf, notice: None } }.into_response()
}
