//! Money, dates and billing intervals as people read them, written once for the pages of Tollgate
//! and of its Stripe emulator (which showed them differently while each had a copy). Escaping is
//! the templates' job.

/// An amount in minor units as people read it: `$12.00`, `-€0.05`, `1200.00 JPY`.
pub fn money(amount: i64, currency: &str) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    let major = format!("{}.{:02}", (amount / 100).unsigned_abs(), (amount % 100).unsigned_abs());
    match currency.to_ascii_lowercase().as_str() {
        "usd" => format!("{sign}${major}"),
        "eur" => format!("{sign}€{major}"),
        "gbp" => format!("{sign}£{major}"),
        other => format!("{sign}{major} {}", other.to_uppercase()),
    }
}

/// A Unix timestamp as a UTC date: `27 Nov 2026`.
pub fn date(ts: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ts) {
        Ok(at) => {
            let month = at.month().to_string();
            format!("{} {} {}", at.day(), &month[..3], at.year())
        }
        Err(_) => "an unknown date".into(),
    }
}

/// `per month`, `every 3 months`.
pub fn per_interval(interval: &str, count: i64) -> String {
    match count {
        1 => format!("per {interval}"),
        n => format!("every {n} {interval}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(money(1200, "usd"), "$12.00");
        assert_eq!(money(5, "eur"), "€0.05");
        assert_eq!(money(-5, "usd"), "-$0.05", "the emulator's copy showed $0.05");
        assert_eq!(money(-250, "gbp"), "-£2.50");
        assert_eq!(money(i64::MIN, "usd"), "-$92233720368547758.08");
        assert_eq!(money(120000, "jpy"), "1200.00 JPY");
        assert_eq!(date(0), "1 Jan 1970");
        assert_eq!(date(-86_400), "31 Dec 1969");
        assert_eq!(date(1_795_737_600), "27 Nov 2026");
        assert_eq!(date(i64::MAX), "an unknown date");
        assert_eq!(per_interval("month", 1), "per month");
        assert_eq!(per_interval("month", 3), "every 3 months");
    }
}
