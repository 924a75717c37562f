//! Domain types, parsed once at the edge: ids, emails, subscription status, the cache entry, access.
//! No I/O here.

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ParseError(pub String);

macro_rules! id_type {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Accepts `", $prefix, "…` followed by letters, digits or underscores.")]
            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                let rest = raw.strip_prefix($prefix).unwrap_or("");
                if rest.is_empty() || raw.len() > 255 || !rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(ParseError(format!(
                        concat!("'{}' is not a ", $what, " id (", $prefix, "…)"),
                        raw.chars().take(60).collect::<String>()
                    )));
                }
                Ok($name(raw.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(raw: String) -> Result<Self, ParseError> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(UserId, "user_", "user");
id_type!(CustomerId, "cus_", "Stripe customer");
id_type!(PriceId, "price_", "Stripe price");
id_type!(OrgId, "org_", "organization");

impl OrgId {
    pub fn generate() -> OrgId {
        OrgId(format!("org_{}", crate::random::random_token(20)))
    }
}

/// A member's role in an organization. Owners and admins manage billing and members; only an
/// owner makes or unmakes owners, and an organization always keeps one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgRole {
    Owner,
    Admin,
    Member,
}

impl OrgRole {
    /// `owner`, `admin` or `member`; Clerk's role keys too (`org:admin`, `org:member`, as v1
    /// tokens and the Backend API write them; v2 tokens drop the `org:`). Clerk has no owner:
    /// its admins are the highest role, and other custom roles count as members.
    pub fn parse(raw: &str) -> Result<OrgRole, ParseError> {
        match raw.strip_prefix("org:").unwrap_or(raw) {
            "owner" => Ok(OrgRole::Owner),
            "admin" => Ok(OrgRole::Admin),
            "member" => Ok(OrgRole::Member),
            other => Err(ParseError(format!("'{}' is not a role (owner, admin or member)", other.chars().take(40).collect::<String>()))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Owner => "owner",
            OrgRole::Admin => "admin",
            OrgRole::Member => "member",
        }
    }
    /// May start Checkout, open the portal, change the plan, invite and manage members.
    pub fn manages(self) -> bool {
        matches!(self, OrgRole::Owner | OrgRole::Admin)
    }
}

/// The organization a signed-in user acts for (the active one), with their role in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveOrg {
    pub id: OrgId,
    pub role: OrgRole,
    pub slug: String,
}

/// Who pays, and whose cache entry decides: a user (the recipe's `stripe:user:{userId}`) or an
/// organization (`stripe:org:{orgId}`). Both are Stripe customers written by the same one sync.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Payer {
    User(UserId),
    Org(OrgId),
}

impl Payer {
    pub fn as_str(&self) -> &str {
        match self {
            Payer::User(id) => id.as_str(),
            Payer::Org(id) => id.as_str(),
        }
    }
    /// The customer's `metadata` key naming this payer (the recipe's reverse link for users).
    pub fn metadata_key(&self) -> &'static str {
        match self {
            Payer::User(_) => "userId",
            Payer::Org(_) => "orgId",
        }
    }
    /// The payer a Stripe customer's `metadata` names: `orgId` when present, else `userId`.
    pub fn of_metadata(metadata: &std::collections::HashMap<String, String>) -> Option<Payer> {
        match metadata.get("orgId") {
            Some(org) => OrgId::parse(org).ok().map(Payer::Org),
            None => UserId::parse(metadata.get("userId")?).ok().map(Payer::User),
        }
    }
}

impl std::fmt::Display for Payer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl UserId {
    pub fn generate() -> UserId {
        UserId(format!("user_{}", crate::random::random_token(20)))
    }
}

/// A signed-in user, as every auth provider reports one.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    /// The organization the user acts for, if any (built-in accounts: chosen and kept in the
    /// session; Clerk: the session token's active organization).
    pub org: Option<ActiveOrg>,
}

/// A normalised email address: trimmed, lower-cased, one `@`, a dotted domain, at most 254 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Visually identical addresses are one address: the text is NFKC-normalised (full-width
    /// letters become ASCII, composed and decomposed accents agree), invisible characters are
    /// refused, the domain is put in its IDNA ASCII form, a local part may not mix scripts
    /// (Latin with look-alike Cyrillic, say), and all of it is lower-cased.
    pub fn parse(raw: &str) -> Result<Email, ParseError> {
        use icu_properties::props::{DefaultIgnorableCodePoint, Script};
        use icu_properties::{CodePointMapData, CodePointSetData};
        let invalid = || ParseError("Enter a valid email address, like name@example.com.".into());
        let invisible = CodePointSetData::new::<DefaultIgnorableCodePoint>();
        if raw.len() > 1024 || raw.chars().any(|c| invisible.contains(c)) {
            return Err(invalid());
        }
        let email = icu_normalizer::ComposingNormalizerBorrowed::new_nfkc().normalize(raw.trim()).to_lowercase();
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let scripts = CodePointMapData::<Script>::new();
        let mut letter_scripts = local.chars().map(|c| scripts.get(c)).filter(|s| ![Script::Common, Script::Inherited].contains(s));
        if let Some(first) = letter_scripts.next() {
            if letter_scripts.any(|s| s != first) {
                return Err(invalid());
            }
        }
        let domain = idna::domain_to_ascii(domain).map_err(|_| invalid())?;
        let email = format!("{local}@{domain}");
        if email.len() > 254
            || local.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(invalid());
        }
        Ok(Email(email))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = ParseError;
    fn try_from(raw: String) -> Result<Self, ParseError> {
        Self::parse(&raw)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

/// Stripe's subscription statuses, plus `none` for a customer without any subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Trialing,
    PastDue,
    Unpaid,
    Canceled,
    Incomplete,
    IncompleteExpired,
    Paused,
    None,
}

impl SubscriptionStatus {
    pub fn parse(raw: &str) -> Option<SubscriptionStatus> {
        serde_json::from_value(serde_json::Value::String(raw.to_string())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Trialing => "trialing",
            Self::PastDue => "past_due",
            Self::Unpaid => "unpaid",
            Self::Canceled => "canceled",
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Paused => "paused",
            Self::None => "none",
        }
    }

    /// Not ended: a subscription in one of these states is the one to show and sync.
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Canceled | Self::IncompleteExpired | Self::None)
    }

    /// A subscription the user should manage rather than buy again.
    pub fn blocks_new_checkout(self) -> bool {
        matches!(self, Self::Active | Self::Trialing | Self::PastDue | Self::Unpaid | Self::Paused)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethodSummary {
    pub brand: Option<String>,
    pub last4: Option<String>,
}

/// The value of `stripe:customer:{customerId}`, field for field as the Next.js recipe writes it
/// (`STRIPE_SUB_CACHE`), plus `cancelAt` and `trialEnd`. `{"status":"none"}` when there is no subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SubscriptionCache {
    /// Boxed: an entry is mostly passed around, and the other variant is one word.
    Subscribed(Box<CachedSubscription>),
    None {
        status: NoneStatus,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoneStatus {
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedSubscription {
    pub subscription_id: Option<String>,
    pub status: SubscriptionStatus,
    pub price_id: Option<String>,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub payment_method: Option<PaymentMethodSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_end: Option<i64>,
    /// Set only when Stripe holds more than one live subscription for the customer (it should
    /// not: checkout allows one): how many. The entry describes the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_subscriptions: Option<usize>,
    /// With `ENTITLEMENTS=stripe`: the lookup keys of the customer's active entitlements, sorted
    /// (Tollgate's field; the recipe has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// A coupon on the subscription (a promotion code entered at Checkout, say): Tollgate's field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<CachedDiscount>,
    /// A plan change waiting for the period's end (a subscription schedule's next phase): its
    /// price and when it starts. Tollgate's fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_price_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<i64>,
}

/// What a subscription's discount takes off, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedDiscount {
    /// The coupon's name, else its id.
    pub coupon: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_off: Option<f64>,
    /// In the currency's minor unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_off: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// `once`, `repeating` or `forever`.
    pub duration: String,
    /// When it stops applying, for a `repeating` coupon.
    pub end: Option<i64>,
}

impl SubscriptionCache {
    pub fn none() -> SubscriptionCache {
        SubscriptionCache::None { status: NoneStatus::None }
    }

    pub fn status(&self) -> SubscriptionStatus {
        match self {
            SubscriptionCache::Subscribed(s) => s.status,
            SubscriptionCache::None { .. } => SubscriptionStatus::None,
        }
    }

    pub fn subscription(&self) -> Option<&CachedSubscription> {
        match self {
            SubscriptionCache::Subscribed(s) => Some(s),
            SubscriptionCache::None { .. } => None,
        }
    }
}

/// `BILLING_SUBJECT`: who subscribes and whose subscription entitles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BillingSubject {
    /// Each user pays for themselves (the recipe's model).
    #[default]
    User,
    /// The active organization pays; a user without one is not entitled.
    Organization,
    /// The active organization pays when there is one, else the user; either entitles.
    Both,
}

/// Who may use the product: `active` and `trialing` always; `past_due` only with a grace period;
/// and whose subscription counts (`BILLING_SUBJECT`).
#[derive(Debug, Clone, Copy)]
pub struct AccessPolicy {
    pub past_due_grace: bool,
    /// How long after its period ended a cached grant is still believed without asking Stripe
    /// (webhooks may have been lost; renewals normally arrive within minutes of the period end).
    pub stale_after_period_end: i64,
    pub billing_subject: BillingSubject,
}

impl AccessPolicy {
    /// Who subscribes for `user` (and whose billing they manage): `None` when
    /// `BILLING_SUBJECT=organization` and they act for no organization.
    pub fn payer(&self, user: &User) -> Option<Payer> {
        self.payers(user).into_iter().next()
    }

    /// Whose subscriptions entitle `user`, the one that pays first.
    pub fn payers(&self, user: &User) -> Vec<Payer> {
        let org = user.org.as_ref().map(|o| Payer::Org(o.id.clone()));
        let own = Payer::User(user.id.clone());
        match self.billing_subject {
            BillingSubject::User => vec![own],
            BillingSubject::Organization => org.into_iter().collect(),
            BillingSubject::Both => org.into_iter().chain([own]).collect(),
        }
    }

    /// Should a cached entry that grants access be re-read from Stripe before it is trusted?
    pub fn needs_fresh_read(&self, entry: &SubscriptionCache, now: i64) -> bool {
        let period_end = entry.subscription().and_then(|s| s.trial_end.max(s.current_period_end));
        self.grants(entry.status()) && period_end.is_some_and(|end| end + self.stale_after_period_end < now)
    }

    pub fn grants(&self, status: SubscriptionStatus) -> bool {
        match status {
            SubscriptionStatus::Active | SubscriptionStatus::Trialing => true,
            SubscriptionStatus::PastDue => self.past_due_grace,
            _ => false,
        }
    }
}

/// What each plan unlocks beyond the product itself: feature names by price (`PLAN_FEATURES`),
/// or Stripe's entitlements (`ENTITLEMENTS=stripe`: the lookup keys of the customer's active
/// entitlements, which the sync caches in the entry). Either way a user has features only while
/// entitled: Stripe keeps entitlements through `past_due`, `unpaid` and `paused`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanFeatures {
    pub by_price: std::collections::BTreeMap<String, Vec<String>>,
    pub from_stripe: bool,
}

impl PlanFeatures {
    /// The features `entry` gives, when it grants access at all (`entitled`).
    pub fn of(&self, entry: &SubscriptionCache, entitled: bool) -> Vec<String> {
        let Some(subscription) = entry.subscription().filter(|_| entitled) else { return Vec::new() };
        match self.from_stripe {
            true => subscription.features.clone().unwrap_or_default(),
            false => subscription.price_id.as_deref().and_then(|price| self.by_price.get(price)).cloned().unwrap_or_default(),
        }
    }

    /// Whether `entry`, which grants access, includes `feature`.
    pub fn grant(&self, entry: &SubscriptionCache, feature: &str) -> bool {
        self.of(entry, true).iter().any(|f| f == feature)
    }

    /// The features of the plan with this price, as configured (none are known ahead from Stripe).
    pub fn of_price(&self, price: &str) -> &[String] {
        self.by_price.get(price).map_or(&[], Vec::as_slice)
    }

    /// Whether any plan may have `feature`.
    pub fn offers(&self, feature: &str) -> bool {
        self.from_stripe || self.by_price.values().any(|features| features.iter().any(|f| f == feature))
    }
}

/// A plan offered on the pricing page, as read from Stripe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The price's `metadata.tollgate_limits` (`60/min,10000/month`), if it has them.
    pub limits: Option<Limits>,
    pub price_id: PriceId,
    pub product_name: String,
    pub unit_amount: i64,
    pub currency: String,
    pub interval: String,
    pub interval_count: i64,
    /// With `ENTITLEMENTS=stripe`: the lookup keys of the features attached to its product.
    pub features: Vec<String>,
    /// Its price's `metadata.tollgate_seats` is `per_seat` (`SEAT_PRICES` may say so too).
    pub per_seat: bool,
    /// Its price's `metadata.tollgate_max_seats`: members beyond it are refused.
    pub max_seats: Option<u32>,
}

/// A plan's API quotas: requests per minute (a GCRA: a minute's worth may come at once) and per
/// billing period (counted from the customer's own period start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub per_minute: Option<u32>,
    pub per_period: Option<u64>,
}

impl Limits {
    /// `60/min`, `10000/month`, or both, comma-separated.
    pub fn parse(raw: &str) -> Result<Limits, ParseError> {
        let mut limits = Limits::default();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || ParseError(format!("'{part}' is not a limit like 60/min or 10000/month"));
            let (count, unit) = part.split_once('/').ok_or_else(bad)?;
            let count: u64 = count.trim().parse().map_err(|_| bad())?;
            match unit.trim() {
                "min" | "minute" if (1..=u64::from(u32::MAX)).contains(&count) => limits.per_minute = Some(count as u32),
                "month" | "period" if count >= 1 => limits.per_period = Some(count),
                _ => return Err(bad()),
            }
        }
        match limits == Limits::default() {
            true => Err(ParseError(format!("'{raw}' names no limit (60/min, 10000/month)"))),
            false => Ok(limits),
        }
    }
}

/// `PLAN_LIMITS`: each price's quotas, as configured (a price's `metadata.tollgate_limits` is
/// read from the catalogue when it has none here).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlanLimits {
    pub by_price: std::collections::BTreeMap<String, Limits>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_read_as_written() {
        assert_eq!(Limits::parse("60/min, 10000/month"), Ok(Limits { per_minute: Some(60), per_period: Some(10_000) }));
        assert_eq!(Limits::parse("5/minute"), Ok(Limits { per_minute: Some(5), per_period: None }));
        for bad in ["", "60", "60/hour", "0/min", "x/min", "-1/month", "99999999999/min"] {
            assert!(Limits::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_need_their_prefix() {
        assert!(CustomerId::parse("cus_abc123").is_ok());
        assert!(CustomerId::parse("sub_abc").is_err());
        assert!(CustomerId::parse("cus_").is_err());
        assert!(CustomerId::parse("cus_a b").is_err());
        assert!(PriceId::parse("price_pro_monthly").is_ok());
        assert!(UserId::parse("user_x<script>").is_err());
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(Email::parse("  Ada@Example.COM ").unwrap().as_str(), "ada@example.com");
        for bad in ["", "ada", "ada@", "@example.com", "ada@example", "a@b@c.com", "a b@c.com", "ada@.com", "ada@example..com"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        // Visually identical spellings are one address.
        let one = |raw: &str| Email::parse(raw).unwrap().as_str().to_string();
        assert_eq!(one("jose\u{301}@example.com"), one("jos\u{e9}@example.com"), "NFD and NFC");
        assert_eq!(one("\u{ff41}\u{ff44}\u{ff41}@\u{ff45}xample.com"), "ada@example.com", "full-width letters");
        assert_eq!(one("ada@b\u{fc}cher.example"), "ada@xn--bcher-kva.example", "IDNA domains in their ASCII form");
        assert_eq!(one("ada@BÜCHER.example"), one("ada@bücher.example"));
        // Invisible characters and mixed scripts are refused rather than made into another account.
        for bad in ["ad\u{200b}a@example.com", "\u{feff}ada@example.com", "ada\u{2060}@example.com", "p\u{430}ypal@example.com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            one("\u{43f}\u{430}\u{432}\u{435}\u{43b}@example.com"),
            "\u{43f}\u{430}\u{432}\u{435}\u{43b}@example.com",
            "one script is fine"
        );
    }

    proptest::proptest! {
        /// Any text: no panic; an accepted address is already normal (parsing it again changes
        /// nothing), has one `@`, a dotted ASCII domain and nothing invisible.
        #[test]
        fn email_normalisation_is_stable(local in proptest::prelude::any::<String>(), domain in "[a-zA-Z\u{e0}-\u{ff}\u{ff41}-\u{ff5a}.-]{0,20}") {
            let raw = format!("{local}@{domain}");
            if let Ok(email) = Email::parse(&raw) {
                let again = Email::parse(email.as_str()).expect("a normal address parses");
                proptest::prop_assert_eq!(again.as_str(), email.as_str());
                proptest::prop_assert_eq!(email.as_str().matches('@').count(), 1);
                let (_, domain) = email.as_str().split_once('@').unwrap();
                proptest::prop_assert!(domain.is_ascii() && domain.contains('.'));
                proptest::prop_assert!(!email.as_str().chars().any(|c| c.is_whitespace() || c.is_control()));
            }
        }
    }

    #[test]
    fn cache_json_is_the_recipes_shape() {
        let entry = SubscriptionCache::Subscribed(Box::new(CachedSubscription {
            subscription_id: Some("sub_1".into()),
            status: SubscriptionStatus::PastDue,
            price_id: Some("price_1".into()),
            current_period_start: Some(1),
            current_period_end: Some(2),
            cancel_at_period_end: false,
            payment_method: Some(PaymentMethodSummary { brand: Some("visa".into()), last4: Some("4242".into()) }),
            cancel_at: None,
            trial_end: None,
            live_subscriptions: None,
            features: None,
            discount: None,
            scheduled_price_id: None,
            scheduled_at: None,
        }));
        assert_eq!(
            serde_json::to_value(&entry).unwrap(),
            json!({"subscriptionId": "sub_1", "status": "past_due", "priceId": "price_1", "currentPeriodStart": 1, "currentPeriodEnd": 2, "cancelAtPeriodEnd": false, "paymentMethod": {"brand": "visa", "last4": "4242"}})
        );
        assert_eq!(serde_json::to_value(SubscriptionCache::none()).unwrap(), json!({"status": "none"}));
        // What the recipe's own code writes reads back.
        let from_recipe: SubscriptionCache = serde_json::from_value(json!({"subscriptionId": "sub_1", "status": "active", "priceId": "price_1", "currentPeriodStart": 1, "currentPeriodEnd": 2, "cancelAtPeriodEnd": true, "paymentMethod": null})).unwrap();
        assert_eq!(from_recipe.status(), SubscriptionStatus::Active);
        let none: SubscriptionCache = serde_json::from_value(json!({"status": "none"})).unwrap();
        assert_eq!(none, SubscriptionCache::none());
    }

    #[test]
    fn access_policy() {
        let strict = AccessPolicy { past_due_grace: false, stale_after_period_end: 86_400, billing_subject: BillingSubject::User };
        let lenient = AccessPolicy { past_due_grace: true, stale_after_period_end: 86_400, billing_subject: BillingSubject::User };
        assert!(strict.grants(SubscriptionStatus::Active) && strict.grants(SubscriptionStatus::Trialing));
        assert!(!strict.grants(SubscriptionStatus::PastDue) && lenient.grants(SubscriptionStatus::PastDue));
        for s in [
            SubscriptionStatus::Canceled,
            SubscriptionStatus::Unpaid,
            SubscriptionStatus::Incomplete,
            SubscriptionStatus::Paused,
            SubscriptionStatus::None,
        ] {
            assert!(!lenient.grants(s));
        }
        let entry = |status: &str, end: i64| -> SubscriptionCache {
            serde_json::from_value(serde_json::json!({"subscriptionId": "sub_1", "status": status, "priceId": "price_1",
                "currentPeriodStart": end - 100, "currentPeriodEnd": end, "cancelAtPeriodEnd": false, "paymentMethod": null}))
            .unwrap()
        };
        let now = 1_000_000;
        assert!(!strict.needs_fresh_read(&entry("active", now - 3600), now), "within a day of the period end: trusted");
        assert!(strict.needs_fresh_read(&entry("active", now - 2 * 86_400), now), "long past the period end: asked again");
        assert!(!strict.needs_fresh_read(&entry("canceled", now - 2 * 86_400), now), "no access to confirm");
        assert!(!strict.needs_fresh_read(&SubscriptionCache::none(), now));
    }
}
