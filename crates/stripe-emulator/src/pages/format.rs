//! Small text helpers for the pages' view models (also used by Tollgate's own pages); escaping is
//! the templates' job.

use crate::model::calendar::civil_from_days;

/// An amount in minor units as people read it: `$12.00`, `€9.50`, `1200.00 JPY`.
pub fn money(amount: i64, currency: &str) -> String {
    let major = format!("{}.{:02}", amount / 100, (amount % 100).abs());
    match currency {
        "usd" => format!("${major}"),
        "eur" => format!("€{major}"),
        "gbp" => format!("£{major}"),
        other => format!("{major} {}", other.to_uppercase()),
    }
}

/// A Unix timestamp as a UTC date: `27 Nov 2026`.
pub fn date(ts: i64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (y, m, d) = civil_from_days(ts.div_euclid(86_400));
    format!("{d} {} {y}", MONTHS[(m - 1) as usize])
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
        assert_eq!(money(120000, "jpy"), "1200.00 JPY");
        assert_eq!(date(0), "1 Jan 1970");
        assert_eq!(per_interval("month", 1), "per month");
        assert_eq!(per_interval("month", 3), "every 3 months");
    }
}
