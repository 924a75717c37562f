//! Calendar arithmetic for billing periods (UTC, proleptic Gregorian).

/// The timestamp `count` intervals after `start`, by the calendar (a month after Jan 31 is Feb 28/29).
pub fn add_interval(start: i64, interval: &str, count: i64) -> i64 {
    const DAY: i64 = 86_400;
    match interval {
        "day" => start + count * DAY,
        "week" => start + count * 7 * DAY,
        _ => {
            let months = if interval == "year" { 12 * count } else { count };
            let (days, secs) = (start.div_euclid(DAY), start.rem_euclid(DAY));
            let (y, m, d) = civil_from_days(days);
            let total = y * 12 + (m - 1) + months;
            let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
            let nd = d.min(days_in_month(ny, nm));
            days_from_civil(ny, nm, nd) * DAY + secs
        }
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days-from-civil algorithms (proleptic Gregorian calendar).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_intervals() {
        let jan31 = days_from_civil(2025, 1, 31) * 86_400 + 3600;
        let feb = add_interval(jan31, "month", 1);
        assert_eq!(civil_from_days(feb.div_euclid(86_400)), (2025, 2, 28));
        assert_eq!(feb % 86_400, 3600);
        let leap = add_interval(days_from_civil(2024, 2, 29) * 86_400, "year", 1);
        assert_eq!(civil_from_days(leap / 86_400), (2025, 2, 28));
        assert_eq!(add_interval(0, "week", 2), 14 * 86_400);
        assert_eq!(civil_from_days(add_interval(days_from_civil(2025, 11, 15) * 86_400, "month", 3) / 86_400), (2026, 2, 15));
    }
}
