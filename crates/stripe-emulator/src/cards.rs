//! Test cards and card payment methods: what a card number or test token does when charged,
//! storing payment methods, and attaching them to customers.

use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::store::{new_id, Store};

/// How a test card behaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeds,
    /// Refused when attached to a customer and when charged.
    Declined {
        decline_code: &'static str,
        message: &'static str,
    },
    /// Attaches fine, then every charge fails (Stripe's `4000 0000 0000 0341`).
    FailsWhenCharged,
}

impl Outcome {
    pub fn charge_error(&self) -> Option<ApiError> {
        match self {
            Outcome::Succeeds => None,
            Outcome::Declined { decline_code, message } => Some(ApiError::card_declined(decline_code, message)),
            Outcome::FailsWhenCharged => Some(ApiError::card_declined("generic_decline", "Your card was declined.")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestCard {
    pub brand: &'static str,
    pub last4: String,
    pub funding: &'static str,
    pub outcome: Outcome,
}

const INSUFFICIENT: Outcome = Outcome::Declined { decline_code: "insufficient_funds", message: "Your card has insufficient funds." };
const GENERIC: Outcome = Outcome::Declined { decline_code: "generic_decline", message: "Your card was declined." };

impl TestCard {
    /// A card number typed on the Checkout page or sent as `card[number]`: Stripe's test numbers
    /// behave as documented; any other number must pass the Luhn check and then succeeds.
    pub fn from_number(raw: &str) -> Result<TestCard, ApiError> {
        let number: String = raw.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
        let incorrect = || ApiError {
            code: Some("incorrect_number".into()),
            param: Some("number".into()),
            ..ApiError::new(axum::http::StatusCode::PAYMENT_REQUIRED, "card_error", "Your card number is incorrect.")
        };
        if !(12..=19).contains(&number.len()) || !number.chars().all(|c| c.is_ascii_digit()) || !luhn(&number) {
            return Err(incorrect());
        }
        let outcome = match number.as_str() {
            "4000000000009995" => INSUFFICIENT,
            "4000000000000002" => GENERIC,
            "4000000000009987" => Outcome::Declined { decline_code: "lost_card", message: "Your card has been declined." },
            "4000000000000069" => Outcome::Declined { decline_code: "expired_card", message: "Your card has expired." },
            "4000000000000341" => Outcome::FailsWhenCharged,
            _ => Outcome::Succeeds,
        };
        let brand = match number.as_bytes()[0] {
            b'4' => "visa",
            b'5' | b'2' => "mastercard",
            b'3' if number.starts_with("34") || number.starts_with("37") => "amex",
            b'6' => "discover",
            _ => "unknown",
        };
        let funding = if number == "4000056655665556" { "debit" } else { "credit" };
        Ok(TestCard { brand, last4: number[number.len() - 4..].to_string(), funding, outcome })
    }

    /// Stripe's test payment-method ids (`pm_card_visa`) and tokens (`tok_visa`).
    pub fn from_token(token: &str) -> Option<TestCard> {
        let name = token.strip_prefix("pm_card_").or_else(|| token.strip_prefix("tok_"))?;
        let number = match name {
            "visa" => "4242424242424242",
            "visa_debit" => "4000056655665556",
            "mastercard" => "5555555555554444",
            "amex" => "378282246310005",
            "discover" => "6011111111111117",
            "chargeDeclined" => "4000000000000002",
            "chargeDeclinedInsufficientFunds" => "4000000000009995",
            "chargeDeclinedLostCard" => "4000000000009987",
            "chargeDeclinedExpiredCard" => "4000000000000069",
            "chargeCustomerFail" => "4000000000000341",
            _ => return None,
        };
        TestCard::from_number(number).ok()
    }
}

fn luhn(number: &str) -> bool {
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = (b - b'0') as u32;
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Store a card payment method (not yet attached).
pub fn create_card_payment_method(
    store: &mut Store,
    card: &TestCard,
    exp_month: i64,
    exp_year: i64,
    name: Option<&str>,
    metadata: Map<String, Value>,
) -> Value {
    let id = new_id("pm_");
    let pm = json!({
        "id": id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": { "city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null },
            "email": null,
            "name": name,
            "phone": null,
            "tax_id": null,
        },
        "card": {
            "brand": card.brand,
            "checks": { "address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass" },
            "country": "US",
            "display_brand": card.brand,
            "exp_month": exp_month,
            "exp_year": exp_year,
            "fingerprint": format!("fp{}{}", card.brand, card.last4),
            "funding": card.funding,
            "generated_from": null,
            "last4": card.last4,
            "networks": { "available": [card.brand], "preferred": null },
            "regulated_status": "unregulated",
            "three_d_secure_usage": { "supported": true },
            "wallet": null,
        },
        "created": store.now(),
        "customer": null,
        "customer_account": null,
        "livemode": false,
        "metadata": metadata,
        "type": "card",
    });
    store.card_outcomes.insert(id.clone(), card.outcome.clone());
    store.insert(pm.clone());
    pm
}

/// Attach a payment method (or a test token, which first becomes a new one) to a customer.
pub fn attach_payment_method(store: &mut Store, id: &str, customer: &str, param: &str) -> Result<String, ApiError> {
    let pm_id = match TestCard::from_token(id) {
        Some(card) => create_card_payment_method(store, &card, 12, 2034, None, Map::new())["id"].as_str().unwrap_or_default().to_string(),
        None => id.to_string(),
    };
    let pm = store.get_kind("payment_method", &pm_id, Some(param))?.clone();
    match pm["customer"].as_str() {
        Some(owner) if owner == customer => return Ok(pm_id),
        Some(_) => return Err(ApiError::bad_request("The payment method you provided has already been attached to a customer.")),
        None => {}
    }
    if let Some(Outcome::Declined { decline_code, message }) = store.card_outcomes.get(&pm_id) {
        return Err(ApiError::card_declined(decline_code, message));
    }
    store.update(&pm_id, Map::from_iter([("customer".to_string(), json!(customer))]));
    store.index_under_customer(customer, &pm_id);
    store.emit_for("payment_method.attached", &pm_id, None);
    Ok(pm_id)
}

/// A payment method parameter that must belong to `customer`; a test token is attached on the fly.
pub fn resolve_payment_method(store: &mut Store, id: &str, customer: &str, param: &str) -> Result<String, ApiError> {
    if TestCard::from_token(id).is_some() {
        return attach_payment_method(store, id, customer, param);
    }
    let pm = store.get_kind("payment_method", id, Some(param))?;
    if pm["customer"] != customer {
        return Err(ApiError::invalid(
            format!("The customer does not have a payment method with the ID {id}. The payment method must be attached to the customer."),
            Some(param),
            "resource_missing",
        ));
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards() {
        assert_eq!(TestCard::from_number("4242 4242 4242 4242").unwrap().outcome, Outcome::Succeeds);
        assert_eq!(TestCard::from_number("4242424242424242").unwrap().brand, "visa");
        assert!(matches!(
            TestCard::from_number("4000000000009995").unwrap().outcome,
            Outcome::Declined { decline_code: "insufficient_funds", .. }
        ));
        assert!(matches!(
            TestCard::from_number("4000000000000002").unwrap().outcome,
            Outcome::Declined { decline_code: "generic_decline", .. }
        ));
        assert_eq!(TestCard::from_number("5555555555554444").unwrap().brand, "mastercard");
        assert_eq!(TestCard::from_number("4242424242424241").unwrap_err().code.as_deref(), Some("incorrect_number"));
        assert!(TestCard::from_number("abcd").is_err());
        assert_eq!(TestCard::from_token("pm_card_visa").unwrap().last4, "4242");
        assert!(TestCard::from_token("pm_card_nope").is_none());
    }
}
