//! The few JavaScript semantics `@clerk/backend`'s decisions rest on, so Tollgate decides as it
//! does on the same bytes: `Number.parseInt` (`__client_uat`), `Number(text)` (the redirect
//! counter), the relational operators on unverified JSON claims (which session cookie is used),
//! `new Date(0).setUTCSeconds(s)` (expiry), `decodeURIComponent` as the `cookie` package applies
//! it, and a number's text. These are ECMAScript's rules, not a format a crate implements, hence
//! written here; each is small and tested against what Node prints.

use std::cmp::Ordering;

use serde_json::Value;

/// ECMAScript's `StrWhiteSpaceChar`: what `parseInt` and `Number` skip around a number.
fn is_js_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}')
}

/// `Number.parseInt(text)`: an optional sign, `0x` for hexadecimal, then the longest run of
/// digits; `NaN` without one ("123x" is 123, "x" is NaN).
pub(crate) fn parse_int(text: &str) -> f64 {
    let text = text.trim_start_matches(is_js_space);
    let (sign, text) = match text.as_bytes().first() {
        Some(b'-') => (-1.0, &text[1..]),
        Some(b'+') => (1.0, &text[1..]),
        _ => (1.0, text),
    };
    let (radix, text) = match text.get(..2) {
        Some("0x" | "0X") => (16, &text[2..]),
        _ => (10, text),
    };
    let digits = &text[..text.find(|c: char| !c.is_digit(radix)).unwrap_or(text.len())];
    if digits.is_empty() {
        return f64::NAN;
    }
    let magnitude = match radix {
        10 => digits.parse::<f64>().unwrap_or(f64::NAN),
        _ => digits.chars().fold(0.0, |n, d| n * 16.0 + f64::from(d.to_digit(16).unwrap_or(0))),
    };
    sign * magnitude
}

/// `Number(text)`: the whole text (spaces aside) is a number, or `NaN`; "" is 0.
pub(crate) fn to_number(text: &str) -> f64 {
    let text = text.trim_matches(is_js_space);
    if text.is_empty() {
        return 0.0;
    }
    for (prefix, radix) in [("0x", 16), ("0X", 16), ("0o", 8), ("0O", 8), ("0b", 2), ("0B", 2)] {
        if let Some(digits) = text.strip_prefix(prefix) {
            if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                return f64::NAN;
            }
            return digits.chars().fold(0.0, |n, d| n * f64::from(radix) + f64::from(d.to_digit(radix).unwrap_or(0)));
        }
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if unsigned == "Infinity" {
        return if text.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY };
    }
    if is_decimal_literal(unsigned) {
        text.parse().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

/// `StrUnsignedDecimalLiteral` without `Infinity`: digits with an optional fraction and exponent
/// (Rust's float parser also takes "inf" and "nan", which JavaScript does not).
fn is_decimal_literal(text: &str) -> bool {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// A number as JavaScript prints it (`String(n)`), for the integers and the odd fractions Clerk's
/// counters hold.
pub(crate) fn number_text(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if n == 0.0 {
        "0".into()
    } else if n.abs() < 1e21 && n.abs() >= 1e-6 {
        format!("{n}")
    } else {
        let text = format!("{n:e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => format!("{mantissa}e+{exponent}"),
            _ => text,
        }
    }
}

/// A JSON claim (or its absence) as a JavaScript operand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    /// An object or array: always truthy; compared as its `toString()`.
    Object(String),
}

impl Operand {
    pub(crate) fn of(value: Option<&Value>) -> Operand {
        match value {
            None => Operand::Undefined,
            Some(Value::Null) => Operand::Null,
            Some(Value::Bool(b)) => Operand::Bool(*b),
            Some(Value::Number(n)) => Operand::Number(n.as_f64().unwrap_or(f64::NAN)),
            Some(Value::String(s)) => Operand::String(s.clone()),
            Some(other) => Operand::Object(display(other)),
        }
    }

    /// `String(value)`.
    pub(crate) fn text(&self) -> String {
        match self {
            Operand::Undefined => "undefined".into(),
            Operand::Null => "null".into(),
            Operand::Bool(b) => b.to_string(),
            Operand::Number(n) => number_text(*n),
            Operand::String(s) | Operand::Object(s) => s.clone(),
        }
    }

    pub(crate) fn truthy(&self) -> bool {
        match self {
            Operand::Undefined | Operand::Null => false,
            Operand::Bool(b) => *b,
            Operand::Number(n) => *n != 0.0 && !n.is_nan(),
            Operand::String(s) => !s.is_empty(),
            Operand::Object(_) => true,
        }
    }

    /// `value || fallback`.
    pub(crate) fn or(self, fallback: Operand) -> Operand {
        if self.truthy() {
            self
        } else {
            fallback
        }
    }

    fn number(&self) -> f64 {
        match self {
            Operand::Undefined => f64::NAN,
            Operand::Null => 0.0,
            Operand::Bool(b) => f64::from(u8::from(*b)),
            Operand::Number(n) => *n,
            Operand::String(s) | Operand::Object(s) => to_number(s),
        }
    }

    /// The abstract relational comparison: two strings by UTF-16 code units, anything else as
    /// numbers; `None` when either is `NaN` (every `<`, `<=`, `>` is then false).
    pub(crate) fn compare(&self, other: &Operand) -> Option<Ordering> {
        let text = |o: &Operand| match o {
            Operand::String(s) | Operand::Object(s) => Some(s.clone()),
            _ => None,
        };
        match (text(self), text(other)) {
            (Some(a), Some(b)) => Some(a.encode_utf16().cmp(b.encode_utf16())),
            _ => self.number().partial_cmp(&other.number()),
        }
    }

    pub(crate) fn less_than(&self, other: &Operand) -> bool {
        self.compare(other) == Some(Ordering::Less)
    }

    pub(crate) fn greater_than(&self, other: &Operand) -> bool {
        self.compare(other) == Some(Ordering::Greater)
    }

    pub(crate) fn at_most(&self, other: &Operand) -> bool {
        matches!(self.compare(other), Some(Ordering::Less | Ordering::Equal))
    }
}

/// `String(value)` of a JSON object or array.
fn display(value: &Value) -> String {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Null => String::new(),
                other => display(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => number_text(n.as_f64().unwrap_or(f64::NAN)),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
    }
}

/// `new Date(0).setUTCSeconds(seconds).getTime()`: whole seconds in milliseconds, or `None` (an
/// invalid date, which no comparison passes) past ±8.64e15 ms.
pub(crate) fn date_ms(seconds: f64) -> Option<f64> {
    let ms = seconds.trunc() * 1000.0;
    (ms.is_finite() && ms.abs() <= 8.64e15).then_some(ms + 0.0)
}

/// `decodeURIComponent(text)`, or `None` where it throws (a `%` without two hex digits, or bytes
/// that are not UTF-8).
pub(crate) fn decode_uri_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok().filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each expectation is what Node 20 prints for the same expression.
    #[test]
    fn parse_int_reads_as_javascript_does() {
        for (text, expected) in [
            ("1730409958", 1730409958.0),
            ("123x", 123.0),
            ("  42", 42.0),
            ("\u{feff}7", 7.0),
            ("-5", -5.0),
            ("+8", 8.0),
            ("0x1F", 31.0),
            ("0x", f64::NAN),
            ("1e3", 1.0),
            ("12.9", 12.0),
            ("x", f64::NAN),
            ("", f64::NAN),
            ("- 5", f64::NAN),
        ] {
            let got = parse_int(text);
            assert!(got == expected || (got.is_nan() && expected.is_nan()), "parseInt({text:?}) = {got}");
        }
        assert_eq!(parse_int(&"9".repeat(400)), f64::INFINITY);
    }

    #[test]
    fn number_reads_as_javascript_does() {
        for (text, expected) in [
            ("3", 3.0),
            (" 3 ", 3.0),
            ("3.0", 3.0),
            ("3e0", 3.0),
            ("0x3", 3.0),
            ("0b11", 3.0),
            ("", 0.0),
            ("-Infinity", f64::NEG_INFINITY),
            (".5", 0.5),
            ("5.", 5.0),
            ("3x", f64::NAN),
            ("inf", f64::NAN),
            ("nan", f64::NAN),
            ("-0x3", f64::NAN),
            ("1_000", f64::NAN),
        ] {
            let got = to_number(text);
            assert!(got == expected || (got.is_nan() && expected.is_nan()), "Number({text:?}) = {got}");
        }
    }

    #[test]
    fn numbers_print_as_javascript_prints_them() {
        for (n, text) in [(4.0, "4"), (4.5, "4.5"), (-0.0, "0"), (1e21, "1e+21"), (1e-7, "1e-7"), (f64::INFINITY, "Infinity")] {
            assert_eq!(number_text(n), text);
        }
    }

    #[test]
    fn comparisons_follow_the_abstract_relational_comparison() {
        let of = |v: Value| Operand::of(Some(&v));
        assert!(of(json!(5)).less_than(&Operand::Number(6.0)));
        assert!(of(json!("5")).less_than(&Operand::Number(6.0)), "a numeric string compares as a number");
        assert!(of(json!("10")).less_than(&of(json!("9"))), "two strings compare as text");
        assert!(of(json!(null)).less_than(&Operand::Number(1.0)), "null is 0");
        assert!(!Operand::Undefined.less_than(&Operand::Number(1.0)), "undefined is NaN");
        assert!(!Operand::Undefined.at_most(&Operand::Number(1.0)));
        assert!(of(json!([5])).less_than(&Operand::Number(6.0)), "[5] is \"5\"");
        assert!(!of(json!({})).less_than(&Operand::Number(6.0)));
        assert_eq!(of(json!(0)).or(Operand::Number(0.0)), Operand::Number(0.0));
        assert_eq!(of(json!("")).or(Operand::Number(0.0)), Operand::Number(0.0));
        assert!(of(json!([])).truthy());
    }

    #[test]
    fn dates_and_uri_components() {
        assert_eq!(date_ms(1.9), Some(1000.0));
        assert_eq!(date_ms(-1e300), None);
        assert_eq!(date_ms(f64::NAN), None);
        assert_eq!(decode_uri_component("a%20b%3Bc").as_deref(), Some("a b;c"));
        assert_eq!(decode_uri_component("%E2%82%AC").as_deref(), Some("€"));
        assert_eq!(decode_uri_component("100%"), None);
        assert_eq!(decode_uri_component("%zz"), None);
        assert_eq!(decode_uri_component("%+1"), None);
        assert_eq!(decode_uri_component("%C3"), None, "not UTF-8");
    }
}
