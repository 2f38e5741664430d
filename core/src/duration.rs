//! Go-style durations as Kubernetes tools spell them: `87600h`, `30m`, `1h30m`, `45s`, `500ms`.

use std::time::Duration;

use crate::{Error, Result};

/// Parses a Go-style duration. Units: `h`, `m`, `s`, `ms`; at least one number-unit pair.
pub fn parse(text: &str) -> Result<Duration> {
    let bad = || {
        Error::Invalid(format!(
            "invalid duration {text:?}: use a number with a unit, e.g. 8760h, 30m, 1h30m, 45s"
        ))
    };
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        let part = unit
            .checked_mul(u32::try_from(n).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse`] reads it, with the largest exact units
/// (`8760h`, `1h30m`, `45s`).
pub fn format(d: Duration) -> String {
    let mut secs = d.as_secs();
    let ms = d.subsec_millis();
    let mut out = String::new();
    for (unit, name) in [(3600, "h"), (60, "m"), (1, "s")] {
        if secs >= unit {
            out.push_str(&format!("{}{name}", secs / unit));
            secs %= unit;
        }
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("87600h").unwrap(), Duration::from_secs(87_600 * 3600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse("1500ms").unwrap(), Duration::from_millis(1500));
        for bad in ["", "10", "h", "10d", "-5s", "1.5h", "10h x"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        for d in ["8760h", "1h30m", "45s", "2m5s", "0s", "1s500ms"] {
            assert_eq!(format(parse(d).unwrap()), d);
        }
    }
}
