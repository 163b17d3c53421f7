//! Parsing of the values operators type: sizes (`64KiB`, `1MiB`, `4096`) and durations
//! (`100ms`, `1s`). Plain functions so clap can use them as value parsers and unit tests can
//! pin every accepted and refused spelling.

use std::time::Duration;

/// Binary size units, longest spelling first so that `KiB` is not read as `K` + `iB`.
/// `KB`, `MB` and `GB` are refused on purpose: half the world reads them as powers of ten.
const SIZE_UNITS: [(&str, u64); 9] = [
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("g", 1 << 30),
    ("t", 1 << 40),
    ("b", 1),
];

/// Duration units, longest spelling first so that `ms` is not read as `m` + `s`.
const DURATION_UNITS: [(&str, Duration); 8] = [
    ("min", Duration::from_secs(60)),
    ("ns", Duration::from_nanos(1)),
    ("us", Duration::from_micros(1)),
    ("µs", Duration::from_micros(1)),
    ("ms", Duration::from_millis(1)),
    ("s", Duration::from_secs(1)),
    ("h", Duration::from_secs(3600)),
    ("d", Duration::from_secs(86_400)),
];

/// Parses a byte size: plain bytes (`65536`) or a whole number with a binary unit
/// (`64KiB`, `1MiB`, `1GiB`; also `K`, `M`, `G`, case-insensitive, an optional space).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)?;
    let unit_lower = unit.to_ascii_lowercase();
    let multiplier = if unit_lower.is_empty() {
        1
    } else if let Some((_, multiplier)) = SIZE_UNITS.iter().find(|(name, _)| *name == unit_lower) {
        *multiplier
    } else if matches!(unit_lower.as_str(), "kb" | "mb" | "gb" | "tb") {
        return Err(format!(
            "{unit:?} is ambiguous; write a binary unit such as KiB, MiB or GiB"
        ));
    } else {
        return Err(format!(
            "unknown size unit {unit:?}; use B, KiB, MiB or GiB"
        ));
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a duration: a whole number with a unit (`100ms`, `1s`, `500us`, `2min`, `1h`, `30d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text)?;
    if unit.is_empty() {
        return Err(format!("{text:?} has no unit; write e.g. 100ms or 1s"));
    }
    let Some((_, unit_len)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "unknown duration unit {unit:?}; use ns, us, ms, s, min, h or d"
        ));
    };
    let number = u32::try_from(number).map_err(|_| format!("{text:?} is too large"))?;
    unit_len
        .checked_mul(number)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Writes a duration as [`parse_duration`] reads it, in the largest unit that divides it
/// exactly: `30d`, `2h`, `90s`, `1500ms`.
pub fn format_duration(duration: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("min", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let (unit, unit_nanos) = UNITS
        .into_iter()
        .find(|(_, unit_nanos)| nanos.is_multiple_of(*unit_nanos))
        .unwrap_or(("ns", 1));
    format!("{}{unit}", nanos / unit_nanos)
}

/// Splits `"64 KiB"` into `(64, "KiB")`. The number must be a whole decimal number.
fn split_number(text: &str) -> Result<(u64, &str), String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("{text:?} does not start with a whole number"));
    }
    let number = digits
        .parse::<u64>()
        .map_err(|_| format!("{digits:?} is too large"))?;
    Ok((number, unit.trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        let cases = [
            ("4096", 4096),
            ("0", 0),
            ("10B", 10),
            ("64KiB", 64 * 1024),
            ("64kib", 64 * 1024),
            ("64K", 64 * 1024),
            ("1MiB", 1024 * 1024),
            ("1 MiB", 1024 * 1024),
            (" 2m ", 2 * 1024 * 1024),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_refused_with_a_reason() {
        for text in [
            "",
            "MiB",
            "-1",
            "1.5MiB",
            "1XB",
            "1 MB",
            "1KB",
            "99999999999999999999",
        ] {
            let err = parse_size(text).expect_err(text);
            assert!(!err.is_empty(), "{text}");
        }
        assert!(parse_size("1KB").unwrap_err().contains("KiB"));
        assert!(parse_size("16777216TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn formatted_durations_parse_back() {
        let cases = [
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2min"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::ZERO, "0s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
    }

    #[test]
    fn durations_need_a_unit() {
        let cases = [
            ("100ms", Duration::from_millis(100)),
            ("1s", Duration::from_secs(1)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("2min", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("30d", Duration::from_secs(30 * 86_400)),
            ("5 s", Duration::from_secs(5)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for text in ["100", "", "ms", "1.5s", "3 days", "99999999999h"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }
}
