//! The pages render from templates that escape everything they show: hostile product names and
//! emails come out as text on every page, and the stylesheet is a cached static asset.

use reqwest::Method;

use crate::helpers::{shown_text, spawn_app_against, spawn_emulator, stripe_api, Options, MONTHLY};

const PRODUCT: &str = r#"<script>alert("product")</script> & 'Pro'"#;
const EMAIL: &str = "o'brien&<i>x</i>@example.com";

fn assert_shown_as_text(page: &str, what: &str) {
    assert!(!page.contains("<script>alert") && !page.contains("<i>x</i>"), "{what}: raw markup in the page:\n{page}");
}

#[tokio::test]
async fn hostile_names_and_emails_are_escaped_on_every_page() {
    let stripe = spawn_emulator().await;
    stripe_api(&reqwest::Client::new(), &stripe, Method::POST, "/v1/products/prod_pro", &[("name", PRODUCT)]).await;
    let app = spawn_app_against(&stripe, Options::default()).await;

    let anonymous = app.browser().get("/").await;
    assert_eq!(anonymous.status, 200);
    assert_shown_as_text(&anonymous.text, "pricing, signed out");
    assert!(shown_text(&anonymous.text).contains(PRODUCT), "the name is shown as text: {}", anonymous.text);

    let (browser, _) = app.subscribed(EMAIL, MONTHLY).await;
    browser.get("/success").await;
    for path in ["/", "/dashboard", "/app"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert_shown_as_text(&page.text, path);
        assert!(shown_text(&page.text).contains(EMAIL), "{path} shows the email as text:\n{}", page.text);
    }
    let dashboard = browser.get("/dashboard").await.text;
    assert!(shown_text(&dashboard).contains(&format!("id=\"plan\">{PRODUCT} ($10.00 per month)")), "the plan's name: {dashboard}");

    let refused = app.browser().form("/auth/sign-in", &[("email", EMAIL), ("password", "not the password")]).await;
    assert_eq!(refused.status, 401);
    assert_shown_as_text(&refused.text, "sign-in form echoing the email");
    let missing = app.browser().get("/<i>x</i>").await;
    assert_eq!(missing.status, 404);
    assert_shown_as_text(&missing.text, "error page");
}

#[tokio::test]
async fn the_stylesheet_is_a_cached_asset() {
    let app = crate::helpers::spawn_app().await;
    let page = app.browser().get("/auth").await.text;
    let href = page.split("rel=\"stylesheet\" href=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("a stylesheet link");
    assert!(href.starts_with("/assets/style.css?v="), "{href}");
    assert!(!page.contains("<style>"), "no inline CSS");
    let css = app.browser().get(href).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    assert!(css.headers["cache-control"].to_str().unwrap().contains("max-age=31536000"));
    assert!(css.text.contains(".card{"));
}
