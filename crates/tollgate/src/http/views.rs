//! Server-rendered HTML: one layout and the pages of the flow. No JavaScript, readable on a phone.

use axum::http::StatusCode;
use stripe_emulator::format::{date, escape, money, per_interval};

use crate::auth::User;
use crate::domain::{CachedSubscription, Plan, SubscriptionCache, SubscriptionStatus};

const STYLE: &str = r#"
*{box-sizing:border-box}body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#0f172a;background:#f8fafc;line-height:1.5}
a{color:#4f46e5}header{background:#fff;border-bottom:1px solid #e2e8f0}nav{max-width:1000px;margin:0 auto;padding:14px 20px;display:flex;align-items:center;gap:18px;flex-wrap:wrap}
.brand{font-weight:700;font-size:18px;text-decoration:none;color:#0f172a;margin-right:auto}nav form{margin:0}
main{max-width:1000px;margin:0 auto;padding:32px 20px}h1{font-size:30px;margin:0 0 8px}h2{font-size:20px;margin:0 0 12px}
.lead{color:#475569;font-size:18px;margin:0 0 28px}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:20px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:12px;padding:24px}.price{font-size:34px;font-weight:700}.muted{color:#64748b}
button,.button{display:inline-block;border:0;border-radius:8px;padding:11px 18px;font-size:15px;font-weight:600;background:#4f46e5;color:#fff;cursor:pointer;text-decoration:none}
button.link{background:none;color:#4f46e5;padding:0;font-weight:500}.secondary{background:#fff;color:#4f46e5;border:1px solid #c7d2fe}
label{display:block;font-size:14px;color:#334155;margin:14px 0 6px}input{width:100%;padding:10px 12px;border:1px solid #cbd5e1;border-radius:8px;font-size:16px}
.error{background:#fef2f2;color:#b91c1c;border:1px solid #fecaca;border-radius:8px;padding:10px 12px;margin:12px 0}
.notice{background:#eff6ff;color:#1e40af;border:1px solid #bfdbfe;border-radius:8px;padding:10px 12px;margin:0 0 20px}
.badge{display:inline-block;border-radius:999px;padding:2px 10px;font-size:13px;font-weight:600;background:#e2e8f0}
.badge.ok{background:#dcfce7;color:#166534}.badge.warn{background:#fef9c3;color:#854d0e}.badge.bad{background:#fee2e2;color:#991b1b}
dl{display:grid;grid-template-columns:max-content 1fr;gap:8px 20px;margin:16px 0}dt{color:#64748b}dd{margin:0;font-weight:500}
"#;

/// The page frame: navigation (with sign-out for a signed-in user) around `body`.
pub fn layout(title: &str, user: Option<&User>, csrf: &str, body: &str) -> String {
    let account = match user {
        Some(user) => format!(
            r#"<a href="/dashboard">Dashboard</a><span class="muted">{}</span><form method="post" action="/auth/sign-out"><input type="hidden" name="csrf" value="{}"><button class="link" id="sign-out">Sign out</button></form>"#,
            escape(user.email.as_str()),
            escape(csrf)
        ),
        None => r#"<a href="/auth" id="sign-in">Sign in</a>"#.to_string(),
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{} · Tollgate</title><style>{STYLE}</style></head>
<body><header><nav><a class="brand" href="/">Tollgate</a><a href="/#plans">Pricing</a>{account}</nav></header><main>{body}</main></body></html>"#,
        escape(title)
    )
}

pub fn notice(text: Option<&str>) -> String {
    text.map(|t| format!(r#"<div class="notice" id="notice">{}</div>"#, escape(t))).unwrap_or_default()
}

pub fn error_page(status: StatusCode, message: &str) -> String {
    let body = format!(
        r#"<div class="card"><h1>{}</h1><p>{}</p><p><a href="/">Back to the start</a></p></div>"#,
        status.canonical_reason().unwrap_or("Error"),
        escape(message)
    );
    layout("Error", None, "", &body)
}

pub fn plan_price(plan: &Plan) -> String {
    format!("{} {}", money(plan.unit_amount, &plan.currency), per_interval(&plan.interval, plan.interval_count))
}

pub fn landing(plans: &[Plan], user: Option<&User>, csrf: &str, message: Option<&str>) -> String {
    let cards: String = plans
        .iter()
        .map(|plan| {
            let action = match user {
                Some(_) => format!(
                    r#"<form method="post" action="/api/generate-stripe-checkout"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="priceId" value="{}"><button id="subscribe-{}">Subscribe</button></form>"#,
                    escape(csrf),
                    escape(plan.price_id.as_str()),
                    escape(plan.price_id.as_str())
                ),
                None => format!(r#"<a class="button" href="/auth?next=/" id="subscribe-{}">Subscribe</a>"#, escape(plan.price_id.as_str())),
            };
            let billed = match (plan.interval.as_str(), plan.interval_count) {
                ("day", 1) => "Daily".to_string(),
                (interval, 1) => format!("{}{}ly", interval[..1].to_uppercase(), &interval[1..]),
                (interval, n) => format!("Every {n} {interval}s"),
            };
            format!(
                r#"<div class="card"><p class="muted">{}</p><h2>{billed}</h2><div class="price">{}</div><p class="muted">{}. Cancel any time.</p>{action}</div>"#,
                escape(&plan.product_name),
                money(plan.unit_amount, &plan.currency),
                per_interval(&plan.interval, plan.interval_count),
            )
        })
        .collect();
    let body = format!(
        r#"{}<h1>Ship your product, not your billing.</h1><p class="lead">Sign up, subscribe with a card, and get to work. Your subscription is ready the moment you are back.</p><section id="plans" class="grid">{cards}</section>"#,
        notice(message)
    );
    layout("Pricing", user, csrf, &body)
}

pub struct AuthForm<'a> {
    pub next: &'a str,
    pub email: &'a str,
    pub sign_in_error: Option<&'a str>,
    pub sign_up_error: Option<&'a str>,
}

pub fn auth_page(form: &AuthForm, csrf: &str) -> String {
    let error = |e: Option<&str>, id: &str| {
        e.map(|e| format!(r#"<div class="error" role="alert" id="{id}">{}</div>"#, escape(e))).unwrap_or_default()
    };
    let fields = |prefix: &str, autocomplete: &str| {
        format!(
            r#"<input type="hidden" name="csrf" value="{}"><input type="hidden" name="next" value="{}">
<label for="{prefix}-email">Email</label><input id="{prefix}-email" name="email" type="email" autocomplete="email" value="{}" required>
<label for="{prefix}-password">Password</label><input id="{prefix}-password" name="password" type="password" autocomplete="{autocomplete}" required>"#,
            escape(csrf),
            escape(form.next),
            escape(form.email)
        )
    };
    let body = format!(
        r#"<div class="grid"><div class="card"><h2>Sign in</h2><form method="post" action="/auth/sign-in">{}{}<p><button id="sign-in-submit">Sign in</button></p></form></div>
<div class="card"><h2>Create an account</h2><form method="post" action="/auth/sign-up">{}<p class="muted">At least 10 characters.</p>{}<p><button id="sign-up-submit">Create account</button></p></form></div></div>"#,
        fields("in", "current-password"),
        error(form.sign_in_error, "sign-in-error"),
        fields("up", "new-password"),
        error(form.sign_up_error, "sign-up-error"),
    );
    layout("Sign in", None, csrf, &body)
}

fn status_badge(status: SubscriptionStatus) -> String {
    let class = match status {
        SubscriptionStatus::Active | SubscriptionStatus::Trialing => "ok",
        SubscriptionStatus::PastDue | SubscriptionStatus::Incomplete | SubscriptionStatus::Paused => "warn",
        _ => "bad",
    };
    format!(r#"<span class="badge {class}" id="status">{}</span>"#, status.as_str().replace('_', " "))
}

fn subscription_details(sub: &CachedSubscription, plan: Option<&Plan>) -> String {
    let plan_name =
        plan.map(|p| format!("{} ({})", p.product_name, plan_price(p))).or(sub.price_id.clone()).unwrap_or_else(|| "Unknown plan".into());
    let ending = sub.cancel_at.or(if sub.cancel_at_period_end { sub.current_period_end } else { None });
    let (label, when) = match (sub.status, ending, sub.trial_end) {
        (SubscriptionStatus::Canceled, _, _) => ("Ended", sub.current_period_end),
        (_, Some(end), _) => ("Ends on", Some(end)),
        (SubscriptionStatus::Trialing, None, Some(trial)) => ("Trial ends", Some(trial)),
        _ => ("Renews on", sub.current_period_end),
    };
    let card = match &sub.payment_method {
        Some(pm) => format!("{} •••• {}", escape(pm.brand.as_deref().unwrap_or("card")), escape(pm.last4.as_deref().unwrap_or("????"))),
        None => "None on file".into(),
    };
    let cancel_note = if ending.is_some() && sub.status.is_live() {
        r#"<p class="notice" id="cancels">Your subscription is set to cancel at the end of the billing period. Renew it from billing to keep access.</p>"#
    } else {
        ""
    };
    format!(
        r#"{cancel_note}<dl><dt>Plan</dt><dd id="plan">{}</dd><dt>Status</dt><dd>{}</dd><dt>{label}</dt><dd id="period-end">{}</dd><dt>Card</dt><dd id="card">{card}</dd></dl>"#,
        escape(&plan_name),
        status_badge(sub.status),
        when.map(date).unwrap_or_else(|| "—".into())
    )
}

pub fn dashboard(user: &User, csrf: &str, cache: &SubscriptionCache, plans: &[Plan], entitled: bool, message: Option<&str>) -> String {
    let content = match cache.subscription() {
        Some(sub) => {
            let plan = plans.iter().find(|p| Some(p.price_id.as_str()) == sub.price_id.as_deref());
            let mut html = subscription_details(sub, plan);
            html.push_str(&format!(
                r#"<form method="post" action="/api/billing-portal"><input type="hidden" name="csrf" value="{}"><button id="manage-billing">Manage billing</button></form>"#,
                escape(csrf)
            ));
            if !sub.status.is_live() {
                html.push_str(r#"<p><a class="button secondary" href="/#plans" id="subscribe">Subscribe again</a></p>"#);
            }
            html
        }
        None => {
            r#"<p>You have no subscription yet.</p><p><a class="button" href="/#plans" id="subscribe">Choose a plan</a></p>"#.to_string()
        }
    };
    let access = if entitled { r#"<p><a href="/app" id="open-app">Open the app →</a></p>"# } else { "" };
    let body = format!(
        r#"{}<h1>Dashboard</h1><p class="lead">Signed in as <strong id="email">{}</strong></p><div class="card"><h2>Subscription</h2>{content}</div>{access}"#,
        notice(message),
        escape(user.email.as_str())
    );
    layout("Dashboard", Some(user), csrf, &body)
}

pub fn app_home(user: &User, csrf: &str) -> String {
    let body = r#"<h1>Your workspace</h1><div class="card"><p id="entitled">Your subscription is active: everything here is yours to use.</p></div>"#;
    layout("App", Some(user), csrf, body)
}
