//! Human durations (`"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1h30m"`, `"2d"`),
//! parsed at compile time into milliseconds.

/// Milliseconds in `text`, or why it is not a duration.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    const EXPECTED: &str = "expected a duration such as \"500ms\", \"30s\", \"5m\", \"1h\" or \"1h30m\"";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {EXPECTED}"));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {text:?}: {EXPECTED}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {text:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("duration {text:?} has a number without a unit; {EXPECTED}")),
            unit => return Err(format!("unknown unit {unit:?} in duration {text:?}; {EXPECTED}")),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(per_unit)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
    }
    if total == 0 {
        return Err(format!("duration {text:?} is zero; it must be at least 1ms"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_millis("500ms"), Ok(500));
        assert_eq!(parse_millis("30s"), Ok(30_000));
        assert_eq!(parse_millis("5m"), Ok(300_000));
        assert_eq!(parse_millis("1h"), Ok(3_600_000));
        assert_eq!(parse_millis("1h30m"), Ok(5_400_000));
        assert_eq!(parse_millis("2d"), Ok(172_800_000));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "1.5s",
            "-1s",
            "0s",
            "0ms",
            "99999999999999999999s",
            "5 m",
        ] {
            assert!(parse_millis(bad).is_err(), "{bad:?}");
        }
    }
}
