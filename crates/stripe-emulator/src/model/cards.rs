//! Test cards: what a card number or test token does when charged.

use crate::model::error::ApiError;

/// How a test card behaves. Stored by its code (`succeeds`, a decline code, …) so a data file keeps it.
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
    /// Needs 3D Secure every time (Stripe's `4000 0027 6000 3184`): the payer authenticates on
    /// Checkout's page, but a renewal charged off-session asks for action and does not pay.
    AuthenticationRequired,
    /// A saved card whose later charges are declined with this code: one reported lost or stolen
    /// after it was attached (set by `POST /_emulator/payment_methods/{id}/outcome`).
    DeclinedWhenCharged(&'static str),
}

/// The decline codes a saved card can be given by `POST /_emulator/payment_methods/{id}/outcome`.
pub const LATER_DECLINES: &[&str] =
    &["lost_card", "stolen_card", "pickup_card", "insufficient_funds", "generic_decline", "expired_card", "do_not_honor"];

const DECLINES: [Outcome; 4] = [
    INSUFFICIENT,
    GENERIC,
    Outcome::Declined { decline_code: "lost_card", message: "Your card has been declined." },
    Outcome::Declined { decline_code: "expired_card", message: "Your card has expired." },
];

impl From<Outcome> for String {
    fn from(outcome: Outcome) -> String {
        match outcome {
            Outcome::Succeeds => "succeeds".into(),
            Outcome::Declined { decline_code, .. } => decline_code.into(),
            Outcome::FailsWhenCharged => "fails_when_charged".into(),
            Outcome::AuthenticationRequired => "authentication_required".into(),
            Outcome::DeclinedWhenCharged(code) => format!("declined_when_charged:{code}"),
        }
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&String::from(self.clone()))
    }
}

impl<'de> serde::Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Outcome::try_from(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<String> for Outcome {
    type Error = String;
    fn try_from(code: String) -> Result<Outcome, String> {
        match code.as_str() {
            "succeeds" => Ok(Outcome::Succeeds),
            "fails_when_charged" => Ok(Outcome::FailsWhenCharged),
            "authentication_required" => Ok(Outcome::AuthenticationRequired),
            other => match other.strip_prefix("declined_when_charged:") {
                Some(code) => LATER_DECLINES.iter().find(|c| **c == code).map(|c| Outcome::DeclinedWhenCharged(c)),
                None => DECLINES.iter().find(|d| matches!(d, Outcome::Declined { decline_code, .. } if *decline_code == other)).cloned(),
            }
            .ok_or_else(|| format!("unknown card outcome {other}")),
        }
    }
}

impl Outcome {
    /// The error of a charge made off-session (a renewal); `None` when it pays.
    pub fn charge_error(&self) -> Option<ApiError> {
        match self {
            Outcome::Succeeds => None,
            Outcome::AuthenticationRequired => Some(ApiError {
                code: Some("authentication_required".into()),
                ..ApiError::card_declined("authentication_required", "Your card was declined. This transaction requires authentication.")
            }),
            Outcome::Declined { decline_code, message } => Some(ApiError::card_declined(decline_code, message)),
            Outcome::FailsWhenCharged => Some(ApiError::card_declined("generic_decline", "Your card was declined.")),
            Outcome::DeclinedWhenCharged(code) => Some(ApiError::card_declined(code, "Your card was declined.")),
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
            "4000000000009987" => DECLINES[2].clone(),
            "4000000000000069" => DECLINES[3].clone(),
            "4000000000000341" => Outcome::FailsWhenCharged,
            "4000002760003184" => Outcome::AuthenticationRequired,
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
            "authenticationRequired" | "threeDSecure2Required" => "4000002760003184",
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
        for number in ["4242424242424242", "4000000000009995", "4000000000009987", "4000000000000341", "4000002760003184"] {
            let outcome = TestCard::from_number(number).unwrap().outcome;
            assert_eq!(Outcome::try_from(String::from(outcome.clone())).unwrap(), outcome, "{number} survives a data file");
        }
        let lost_later = Outcome::DeclinedWhenCharged("lost_card");
        assert_eq!(Outcome::try_from(String::from(lost_later.clone())).unwrap(), lost_later);
        assert!(Outcome::try_from("declined_when_charged:made_up".to_string()).is_err());
        assert_eq!(lost_later.charge_error().unwrap().decline_code.as_deref(), Some("lost_card"));
    }
}
