//! The pages' templates (`templates/`, compiled and auto-escaped by askama) and the view models
//! they show. Every value reaches the HTML through a `{{ }}` expression, so it is escaped; nothing
//! here builds HTML by hand. Every page shares `layout.html`: navigation, the signed-in user, the
//! optional notice.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::StatusCode;
use billing_text::{date, money, per_interval};

use tollgate_core::domain::{CachedDiscount, CachedSubscription, OrgRole, Plan, SubscriptionCache, SubscriptionStatus, User, UserId};
use tollgate_core::orgs::{Member, Org};

/// What `layout.html` shows around every page: who is signed in (for the navigation and the
/// sign-out form's CSRF token) and an optional notice.
#[derive(Default)]
pub(crate) struct Frame<'a> {
    pub(crate) user: Option<&'a User>,
    pub(crate) csrf: &'a str,
    pub(crate) notice: Option<&'a str>,
}

#[derive(Template, WebTemplate)]
#[template(path = "landing.html")]
pub(crate) struct Landing<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) plans: Vec<PlanCard>,
    /// "7-day free trial", when this visitor or user may still have one (`billing::trial`).
    pub(crate) trial: Option<String>,
}

/// One plan as the pricing page shows it.
pub(crate) struct PlanCard {
    pub(crate) price_id: String,
    pub(crate) product_name: String,
    /// "Monthly", "Every 3 months".
    pub(crate) billed: String,
    pub(crate) amount: String,
    /// "per month".
    pub(crate) per_interval: String,
    /// What the plan unlocks (`PLAN_FEATURES`), comma-separated; empty when nothing is listed.
    pub(crate) features: String,
    /// It has the feature the user was refused for (`?notice=feature&feature=`).
    pub(crate) wanted: bool,
}

impl PlanCard {
    pub(crate) fn of(plan: &Plan) -> PlanCard {
        PlanCard {
            price_id: plan.price_id.to_string(),
            product_name: plan.product_name.clone(),
            billed: billed(&plan.interval, plan.interval_count),
            amount: money(plan.unit_amount, &plan.currency),
            per_interval: per_interval(&plan.interval, plan.interval_count),
            features: String::new(),
            wanted: false,
        }
    }
}

/// "Monthly", "Daily", "Every 3 months": any interval text, whatever its letters.
fn billed(interval: &str, count: i64) -> String {
    match (interval, count) {
        ("day", 1) => "Daily".into(),
        (interval, 1) => {
            let mut letters = interval.chars();
            match letters.next() {
                Some(first) => format!("{}{}ly", first.to_uppercase(), letters.as_str()),
                None => "Recurring".into(),
            }
        }
        (interval, n) => format!("Every {n} {interval}s"),
    }
}

/// "Pro ($10.00 per month)".
pub(crate) fn plan_label(plan: &Plan) -> String {
    format!("{} ({} {})", plan.product_name, money(plan.unit_amount, &plan.currency), per_interval(&plan.interval, plan.interval_count))
}

#[derive(Template, WebTemplate)]
#[template(path = "auth.html")]
pub(crate) struct AuthPage<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) next: &'a str,
    pub(crate) email: &'a str,
    pub(crate) sign_in_error: Option<&'a str>,
    pub(crate) sign_up_error: Option<&'a str>,
}

/// Clerk's sign-in (and sign-up) mounted from the instance's Frontend API.
#[derive(Template, WebTemplate)]
#[template(path = "clerk.html")]
pub(crate) struct ClerkPage<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) frontend_api: &'a str,
    pub(crate) publishable_key: &'a str,
    pub(crate) next: &'a str,
}

#[derive(Template, WebTemplate)]
#[template(path = "check_email.html")]
pub(crate) struct CheckEmail<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) email: &'a str,
    /// "finish signing up", "reset your password".
    pub(crate) purpose: &'a str,
    /// Mail goes to the local outbox: say where to read it.
    pub(crate) outbox: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "confirm.html")]
pub(crate) struct ConfirmPage<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) token: &'a str,
    pub(crate) next: &'a str,
    pub(crate) error: Option<&'a str>,
}

#[derive(Template, WebTemplate)]
#[template(path = "reset.html")]
pub(crate) struct ResetPage<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) email: &'a str,
    pub(crate) error: Option<&'a str>,
}

#[derive(Template, WebTemplate)]
#[template(path = "new_password.html")]
pub(crate) struct NewPasswordPage<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) token: &'a str,
    pub(crate) error: Option<&'a str>,
}

#[derive(Template, WebTemplate)]
#[template(path = "outbox.html")]
pub(crate) struct OutboxPage<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) messages: Vec<OutboxMessage>,
}

/// One outbox message as shown, with the links in its text (to this site) made clickable.
pub(crate) struct OutboxMessage {
    pub(crate) to: String,
    pub(crate) subject: String,
    pub(crate) sent: String,
    pub(crate) text: String,
    pub(crate) links: Vec<String>,
}

impl OutboxMessage {
    pub(crate) fn of(sent: &tollgate_core::mail::SentMail, public_url: &str) -> OutboxMessage {
        let prefix = format!("{public_url}/");
        OutboxMessage {
            to: sent.mail.to.as_str().to_string(),
            subject: sent.mail.subject.clone(),
            sent: format!(
                "{} {:02}:{:02}:{:02} UTC",
                date(sent.sent_at),
                sent.sent_at % 86_400 / 3600,
                sent.sent_at % 3600 / 60,
                sent.sent_at % 60
            ),
            text: sent.mail.text.clone(),
            links: sent.mail.text.split_whitespace().filter(|word| word.starts_with(&prefix)).map(str::to_string).collect(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
pub(crate) struct Dashboard<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) email: &'a str,
    pub(crate) subscription: Option<SubscriptionView>,
    pub(crate) entitled: bool,
    /// Built-in accounts offer "sign out on every device" (Clerk users manage devices at Clerk).
    pub(crate) local_accounts: bool,
    /// The other plans a subscriber can switch to, with what switching costs now.
    pub(crate) options: Vec<PlanOption>,
    /// The organization that pays, when one does.
    pub(crate) team: Option<TeamView>,
    /// Subscribe, Manage billing and plan changes are shown (not to an organization's members).
    pub(crate) billing_allowed: bool,
    /// `BILLING_SUBJECT=organization` and the user acts for none.
    pub(crate) needs_org: bool,
    /// API requests this period and the plan's limit (`PLAN_LIMITS`).
    pub(crate) usage: Option<(u64, u64)>,
}

/// The paying organization on the dashboard.
pub(crate) struct TeamView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) role: &'static str,
    pub(crate) manages: bool,
    /// Its owners' and admins' emails: whom a member asks about billing.
    pub(crate) ask: String,
    /// Seats in use and billed ("3, 3 billed", "3 of 5" under a cap), for a per-seat subscription.
    pub(crate) seats: Option<String>,
    /// "$36.00 on 1 January 2027": Stripe's preview of the next invoice (owners and admins).
    pub(crate) next_invoice: Option<String>,
    /// More members than the plan's seats: who is left out, and how to fix it.
    pub(crate) over_cap: Option<String>,
}

/// Another plan on the dashboard: what switching to it costs now, or when it would take effect.
pub(crate) struct PlanOption {
    pub(crate) price_id: String,
    pub(crate) label: String,
    /// "$5.00 due now" or "From 1 January 2027, nothing due now".
    pub(crate) terms: String,
    /// The preview's `proration_date`, passed back so the charge is what was shown.
    pub(crate) proration_date: Option<i64>,
}

impl PlanOption {
    pub(crate) fn of(plan: &Plan, preview: Option<&tollgate_core::billing::plans::PlanPreview>) -> PlanOption {
        use tollgate_core::billing::plans::TakesEffect;
        let terms = match preview.map(|p| (p.takes_effect, p.amount_due, p.currency.as_str())) {
            Some((TakesEffect::Now, due, currency)) => format!("{} due now", money(due, currency)),
            Some((TakesEffect::At(at), _, _)) => format!("From {}, nothing due now", date(at)),
            None => "The price of the change could not be read just now".into(),
        };
        PlanOption {
            price_id: plan.price_id.to_string(),
            label: plan_label(plan),
            terms,
            proration_date: preview.and_then(|p| p.proration_date),
        }
    }
}

/// The subscription as the dashboard shows it.
pub(crate) struct SubscriptionView {
    pub(crate) plan: String,
    pub(crate) status: String,
    /// `ok`, `warn` or `bad`: the badge's colour.
    pub(crate) status_class: &'static str,
    pub(crate) period_label: &'static str,
    pub(crate) period_date: String,
    pub(crate) card: String,
    /// Set to end at the period's end (or a date) while still live.
    pub(crate) cancels: bool,
    pub(crate) live: bool,
    /// It can be cancelled at the period's end, or resumed, from the dashboard.
    pub(crate) manageable: bool,
    /// More than one live subscription (a second charge): how many.
    pub(crate) duplicates: Option<usize>,
    /// "SPRING: 25% off until 2 March 2027".
    pub(crate) discount: Option<String>,
    /// A plan change at the period's end: "Basic ($5.00 per month) from 1 January 2027".
    pub(crate) scheduled: Option<String>,
}

impl SubscriptionView {
    pub(crate) fn of(sub: &CachedSubscription, plan: Option<&Plan>) -> SubscriptionView {
        let ending = sub.cancel_at.or(if sub.cancel_at_period_end { sub.current_period_end } else { None });
        let (period_label, when) = match (sub.status, ending, sub.trial_end) {
            (SubscriptionStatus::Canceled, _, _) => ("Ended", sub.current_period_end),
            (_, Some(end), _) => ("Ends on", Some(end)),
            (SubscriptionStatus::Trialing, None, Some(trial)) => ("Trial ends", Some(trial)),
            _ => ("Renews on", sub.current_period_end),
        };
        SubscriptionView {
            plan: plan.map(plan_label).or(sub.price_id.clone()).unwrap_or_else(|| "Unknown plan".into()),
            status: sub.status.as_str().replace('_', " "),
            status_class: match sub.status {
                SubscriptionStatus::Active | SubscriptionStatus::Trialing => "ok",
                SubscriptionStatus::PastDue | SubscriptionStatus::Incomplete | SubscriptionStatus::Paused => "warn",
                _ => "bad",
            },
            period_label,
            period_date: when.map(date).unwrap_or_else(|| "—".into()),
            card: match &sub.payment_method {
                Some(pm) => format!("{} •••• {}", pm.brand.as_deref().unwrap_or("card"), pm.last4.as_deref().unwrap_or("????")),
                None => "None on file".into(),
            },
            cancels: ending.is_some() && sub.status.is_live(),
            live: sub.status.is_live(),
            manageable: sub.status.blocks_new_checkout(),
            duplicates: sub.live_subscriptions,
            discount: sub.discount.as_ref().map(discount_label),
            scheduled: None,
        }
    }
}

/// A discount as the dashboard says it: what, how much off, and for how long.
fn discount_label(discount: &CachedDiscount) -> String {
    let name = discount.promotion_code.as_deref().unwrap_or(&discount.coupon);
    let off = match (discount.percent_off, discount.amount_off) {
        (Some(percent), _) => format!("{}% off", percent.to_string().trim_end_matches(".0")),
        (None, Some(amount)) => format!("{} off", money(amount, discount.currency.as_deref().unwrap_or("usd"))),
        _ => "a discount".into(),
    };
    let lasting = match (discount.end, discount.duration.as_str()) {
        (Some(end), _) => format!("until {}", date(end)),
        (None, "forever") => "for as long as you subscribe".into(),
        _ => "on your next invoice".into(),
    };
    format!("{name}: {off} {lasting}")
}

impl<'a> Dashboard<'a> {
    pub(crate) fn new(
        user: &'a User,
        csrf: &'a str,
        cache: &SubscriptionCache,
        plans: &[Plan],
        entitled: bool,
        notice: Option<&'a str>,
    ) -> Self {
        let plan_named = |price: Option<&str>| plans.iter().find(|p| Some(p.price_id.as_str()) == price);
        let subscription = cache.subscription().map(|sub| {
            let scheduled = match (sub.scheduled_price_id.as_deref(), sub.scheduled_at) {
                (Some(price), Some(at)) => {
                    Some(format!("{} from {}", plan_named(Some(price)).map_or(price.to_string(), plan_label), date(at)))
                }
                _ => None,
            };
            SubscriptionView { scheduled, ..SubscriptionView::of(sub, plan_named(sub.price_id.as_deref())) }
        });
        Dashboard {
            frame: Frame { user: Some(user), csrf, notice },
            email: user.email.as_str(),
            subscription,
            entitled,
            local_accounts: true,
            options: Vec::new(),
            team: None,
            billing_allowed: true,
            needs_org: false,
            usage: None,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "app.html")]
pub(crate) struct AppHome<'a> {
    pub(crate) frame: Frame<'a>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) reason: &'a str,
    pub(crate) message: &'a str,
}

/// The error page for `status`, as HTML text (the caller sets the status).
pub(crate) fn error_page(status: StatusCode, message: &str) -> String {
    let page = ErrorPage { frame: Frame::default(), reason: status.canonical_reason().unwrap_or("Error"), message };
    page.render().unwrap_or_else(|_| "<!doctype html><title>Error</title><p>Something went wrong.</p>".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_labels_for_any_interval() {
        assert_eq!(billed("month", 1), "Monthly");
        assert_eq!(billed("day", 1), "Daily");
        assert_eq!(billed("month", 3), "Every 3 months");
        assert_eq!(billed("", 1), "Recurring");
        assert_eq!(billed("ünit", 1), "Ünitly", "non-ASCII first letters do not panic");
    }
}

/// `/orgs`: the user's organizations and which one they act for.
#[derive(Template, WebTemplate)]
#[template(path = "orgs.html")]
pub(crate) struct OrgsPage<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) orgs: Vec<OrgRow>,
    /// Clerk manages organizations: the page says where.
    pub(crate) clerk: bool,
    pub(crate) personal_active: bool,
}

pub(crate) struct OrgRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) slug: String,
    pub(crate) role: &'static str,
    pub(crate) active: bool,
}

impl OrgRow {
    pub(crate) fn of(org: &Org, role: OrgRole, active: bool) -> OrgRow {
        OrgRow { id: org.id.to_string(), name: org.name.clone(), slug: org.slug.clone(), role: role.as_str(), active }
    }
}

/// `/orgs/{id}`: its members and invitations, and what the viewer may change.
#[derive(Template, WebTemplate)]
#[template(path = "org.html")]
pub(crate) struct OrgPage<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) org: Org,
    /// The viewer's role.
    pub(crate) role: &'static str,
    pub(crate) manages: bool,
    pub(crate) members: Vec<MemberRow>,
    /// Pending invitations: email, role, expiry (shown to owners and admins).
    pub(crate) invitations: Vec<(String, &'static str, String)>,
    /// "3 of 5 seats in use", for a per-seat subscription.
    pub(crate) seats: Option<String>,
}

pub(crate) struct MemberRow {
    pub(crate) user_id: String,
    pub(crate) email: String,
    pub(crate) role: &'static str,
    pub(crate) is_me: bool,
    /// The viewer may change this member's role or remove them.
    pub(crate) changeable: bool,
}

impl MemberRow {
    pub(crate) fn of(member: &Member, viewer: &UserId, viewer_role: OrgRole) -> MemberRow {
        let changeable = match viewer_role {
            OrgRole::Owner => true,
            OrgRole::Admin => member.role != OrgRole::Owner,
            OrgRole::Member => false,
        };
        MemberRow {
            user_id: member.user_id.to_string(),
            email: member.email.as_str().to_string(),
            role: member.role.as_str(),
            is_me: &member.user_id == viewer,
            changeable: changeable && &member.user_id != viewer,
        }
    }
}

/// `/invitations/accept`: the button that accepts an emailed invitation.
#[derive(Template, WebTemplate)]
#[template(path = "invitation.html")]
pub(crate) struct InvitationPage<'a> {
    pub(crate) frame: Frame<'a>,
    /// The signed-in user's email (the invitation must be for it).
    pub(crate) email: String,
    pub(crate) token: String,
}

/// `/keys`: the API keys of the user (or of the organization they act for).
#[derive(Template, WebTemplate)]
#[template(path = "keys.html")]
pub(crate) struct KeysPage<'a> {
    pub(crate) frame: Frame<'a>,
    pub(crate) keys: Vec<KeyRow>,
    /// A key just made: its secret, shown this once.
    pub(crate) created: Option<String>,
    pub(crate) for_org: bool,
}

pub(crate) struct KeyRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) prefix: String,
    pub(crate) created: String,
    pub(crate) last_used: String,
}

impl KeyRow {
    pub(crate) fn of(key: &tollgate_core::api_keys::ApiKey, last_used_ms: Option<i64>) -> KeyRow {
        KeyRow {
            id: key.id.clone(),
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            created: date(key.created_at_ms / 1000),
            last_used: last_used_ms.map_or_else(|| "never".into(), |ms| date(ms / 1000)),
        }
    }
}
