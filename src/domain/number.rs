//! Callback numbers as the caller keys them, validated once at the edge.
//!
//! A national number is exactly ten digits under NANP rules: `NPA NXX XXXX`,
//! the area code (NPA) and the exchange (NXX) each starting with 2–9, neither
//! an N11 service code (211 … 911). Callers are told never to key the leading
//! `1`, so an entry starting with `1` (or `0`) is rejected rather than
//! silently trimmed. An entry starting with the NANP international access
//! code `011` is international: accepted only when the policy allows it and
//! the rate table prices the destination within the configured maximum.
//!
//! ```text
//!   entered --> all digits? --no--> NotDigits
//!                  |
//!         starts with 011? --yes--> 7..=15 digits after 011 (E.164) --> allowed?
//!                  | no                 --> blacklist --> longest rate prefix <= max
//!                  v
//!   first digit 2-9 --> ten digits --> NPA not N11 --> NXX 2-9, not N11 --> blacklist
//! ```

use std::fmt;

use thiserror::Error;

/// A validated callback number. Only [`validate`] and [`national_from_ani`]
/// build one; every digit is an ASCII `'0'..='9'`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PhoneNumber {
    /// A NANP number, `NPA NXX XXXX`, as ASCII digits (`b'0'..=b'9'`).
    National {
        /// The ten digits, area code first.
        digits: [u8; 10],
    },
    /// An international number.
    International {
        /// Country code and subscriber number, without the `011` access code.
        digits: Box<str>,
    },
}

impl PhoneNumber {
    /// The plain digits as the caller keys them: `"3125550188"` or
    /// `"011442079460000"`.
    pub fn as_digits(&self) -> String {
        match self {
            PhoneNumber::National { digits } => digits.iter().map(|&d| char::from(d)).collect(),
            PhoneNumber::International { digits } => format!("011{digits}"),
        }
    }

    /// The digits to read back, one per spoken word, exactly as keyed
    /// (`011` included for an international number; the IVR may say
    /// "international" in place of it).
    pub fn spoken_digits(&self) -> Vec<char> {
        match self {
            PhoneNumber::National { digits } => digits.iter().map(|&d| char::from(d)).collect(),
            PhoneNumber::International { digits } => {
                INTERNATIONAL_ACCESS.chars().chain(digits.chars()).collect()
            }
        }
    }

    /// Whether `digits` (plain digits, as [`PhoneNumber::as_digits`] gives
    /// them) is this number, without allocating.
    pub fn has_digits(&self, digits: &str) -> bool {
        match self {
            PhoneNumber::National { digits: own } => digits.as_bytes() == own,
            PhoneNumber::International { digits: own } => digits
                .strip_prefix(INTERNATIONAL_ACCESS)
                .is_some_and(|rest| rest == &**own),
        }
    }

    /// Whether the number was keyed with the `011` international access code.
    #[cfg(test)]
    pub(crate) fn is_international(&self) -> bool {
        matches!(self, PhoneNumber::International { .. })
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhoneNumber::National { digits } => {
                // Invariant: built by `validate`, so every byte is an ASCII digit.
                f.write_str(std::str::from_utf8(digits).map_err(|_| fmt::Error)?)
            }
            PhoneNumber::International { digits } => write!(f, "{INTERNATIONAL_ACCESS}{digits}"),
        }
    }
}

/// What numbers an organisation accepts for callbacks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NumberPolicy {
    /// Whether `011` international numbers may be registered at all.
    pub allow_international: bool,
    /// The highest per-minute rate an international callback may cost.
    pub max_rate_per_minute: f64,
    /// Per-minute rates by destination prefix (the digits after `011`,
    /// country code first). The longest matching prefix wins; an empty
    /// prefix is a default for every destination. A destination no prefix
    /// matches has no rate and is refused.
    pub rates: Vec<(String, f64)>,
    /// Refused numbers and prefixes. A national entry is written as keyed
    /// (`"900"`, `"3125550100"`) or with its country code (`"1900"`,
    /// `"+1 900"`); an international one as keyed (`"01144"`) or with a
    /// plus (`"+44"`). Visual separators are ignored; an entry with no digit
    /// is ignored rather than refusing everything.
    pub blacklist: Vec<String>,
}

/// Why an entered number cannot be called back. Every variant is the
/// caller's (or the ANI's) fault; none is a local failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InvalidNumber {
    /// Fewer digits than a national (10) or international (011 + 7) number.
    #[error("too few digits")]
    TooShort,
    /// More digits than a national (10) or international (011 + 15) number.
    #[error("too many digits")]
    TooLong,
    /// The area code starts with 0 or 1 (callers must not key the leading 1).
    #[error("area code must start with 2-9")]
    LeadingOneOrZero,
    /// The exchange (NXX) starts with 0 or 1.
    #[error("exchange must start with 2-9")]
    BadExchange,
    /// The area code or exchange is an N11 service code (211 … 911).
    #[error("N11 service code")]
    ServiceCode,
    /// The number matches a blacklist entry.
    #[error("number is blacklisted")]
    Blacklisted,
    /// An international number, and the policy allows none.
    #[error("international callbacks are not allowed")]
    InternationalNotAllowed,
    /// The destination's per-minute rate exceeds the configured maximum.
    #[error("destination rate exceeds the maximum")]
    RateTooHigh,
    /// No rate table entry covers the destination.
    #[error("no rate for the destination")]
    NoRate,
    /// Something other than the digits 0–9.
    #[error("not all digits")]
    NotDigits,
}

/// One of the organisation's own numbers (a queue's or an agent's caller
/// ID, an entry of `[org] callback_numbers`, the caller ID a callback asks
/// for) under the numbering rules of a callback entry, without the
/// blacklist and rates that guard what customers may ask for.
pub fn own_number(text: &str) -> Result<PhoneNumber, InvalidNumber> {
    let own_number = NumberPolicy {
        allow_international: true,
        max_rate_per_minute: 0.0,
        rates: vec![(String::new(), 0.0)],
        blacklist: Vec::new(),
    };
    validate(text, &own_number)
}

/// Validates a number exactly as the caller keyed it (digits only; the IVR
/// has already consumed `#` and `*`).
pub fn validate(entered: &str, policy: &NumberPolicy) -> Result<PhoneNumber, InvalidNumber> {
    if !entered.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidNumber::NotDigits);
    }
    if let Some(international) = entered.strip_prefix(INTERNATIONAL_ACCESS) {
        return validate_international(entered, international, policy);
    }
    let Some(&first) = entered.as_bytes().first() else {
        return Err(InvalidNumber::TooShort);
    };
    // NANP: NPA = [2-9]XX. Checked before the length, so "13125550188"
    // (keyed with the forbidden leading 1) says why it is wrong.
    if first < b'2' {
        return Err(InvalidNumber::LeadingOneOrZero);
    }
    let digits: [u8; 10] = match entered.len() {
        0..10 => return Err(InvalidNumber::TooShort),
        10 => entered
            .as_bytes()
            .try_into()
            .expect("length checked to be exactly 10"),
        _ => return Err(InvalidNumber::TooLong),
    };
    let [_, npa2, npa3, nxx1, nxx2, nxx3, ..] = digits;
    // N11 codes (211 … 911) are service codes, never area codes or exchanges.
    if npa2 == b'1' && npa3 == b'1' {
        return Err(InvalidNumber::ServiceCode);
    }
    // NANP: NXX = [2-9]XX.
    if nxx1 < b'2' {
        return Err(InvalidNumber::BadExchange);
    }
    if nxx2 == b'1' && nxx3 == b'1' {
        return Err(InvalidNumber::ServiceCode);
    }
    if is_blacklisted(entered, policy) {
        return Err(InvalidNumber::Blacklisted);
    }
    Ok(PhoneNumber::National { digits })
}

/// The national number in a caller's ANI (a From user part such as
/// `"+13125550188"`, `"13125550188"` or `"3125550188"`; RFC 3966 visual
/// separators `-.()` are tolerated) if it is one the policy would accept as
/// an entry. Anything else (`"anonymous"`, international, N11, blacklisted)
/// gives `None`.
pub fn national_from_ani(ani: &str, policy: &NumberPolicy) -> Option<PhoneNumber> {
    let ani = ani.trim();
    let (plus, rest) = match ani.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, ani),
    };
    if !rest
        .bytes()
        .all(|b| b.is_ascii_digit() || VISUAL_SEPARATORS.contains(&b))
    {
        return None;
    }
    let mut digits = [0u8; 11];
    let mut len = 0;
    for b in rest.bytes().filter(u8::is_ascii_digit) {
        *digits.get_mut(len)? = b;
        len += 1;
    }
    let national = match (plus, &digits[..len]) {
        (_, [b'1', national @ ..]) if national.len() == 10 => national,
        (false, national) if national.len() == 10 => national,
        _ => return None,
    };
    let national = std::str::from_utf8(national).ok()?;
    match validate(national, policy) {
        Ok(number @ PhoneNumber::National { .. }) => Some(number),
        Ok(PhoneNumber::International { .. }) | Err(_) => None,
    }
}

/// The NANP international access code.
const INTERNATIONAL_ACCESS: &str = "011";

/// E.164 §6: at most 15 digits, country code included. Fewer than 7 after
/// the access code is no real destination.
const INTERNATIONAL_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;

/// RFC 3966 §3 visual separators.
const VISUAL_SEPARATORS: &[u8] = b"-.()";

fn validate_international(
    entered: &str,
    international: &str,
    policy: &NumberPolicy,
) -> Result<PhoneNumber, InvalidNumber> {
    if international.len() < *INTERNATIONAL_DIGITS.start() {
        return Err(InvalidNumber::TooShort);
    }
    if international.len() > *INTERNATIONAL_DIGITS.end() {
        return Err(InvalidNumber::TooLong);
    }
    if !policy.allow_international {
        return Err(InvalidNumber::InternationalNotAllowed);
    }
    if is_blacklisted(entered, policy) {
        return Err(InvalidNumber::Blacklisted);
    }
    let rate = policy
        .rates
        .iter()
        .filter_map(|(prefix, rate)| {
            digit_prefix_len(international, prefix).map(|len| (len, *rate))
        })
        .max_by_key(|&(len, _)| len)
        .map(|(_, rate)| rate)
        .ok_or(InvalidNumber::NoRate)?;
    // A NaN rate (or maximum) compares false both ways: refused too.
    if rate.is_nan() || policy.max_rate_per_minute.is_nan() || rate > policy.max_rate_per_minute {
        return Err(InvalidNumber::RateTooHigh);
    }
    Ok(PhoneNumber::International {
        digits: international.into(),
    })
}

/// Whether `keyed` (the number as keyed, `011` included) starts with any
/// blacklist entry, each normalised to the keyed form.
fn is_blacklisted(keyed: &str, policy: &NumberPolicy) -> bool {
    policy.blacklist.iter().any(|entry| {
        let entry = keyed_form(entry);
        !entry.is_empty() && keyed.starts_with(&entry)
    })
}

/// A blacklist entry in the form a caller keys it: `"+1 900"` and `"1900"`
/// → `"900"`, `"+44"` → `"01144"`, `"312-555-0100"` → `"3125550100"`.
fn keyed_form(entry: &str) -> String {
    let digits: String = entry.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return digits;
    }
    let plus = entry.trim_start().starts_with('+');
    match (plus, digits.strip_prefix('1')) {
        (_, Some(national)) => national.to_owned(),
        (true, None) => format!("{INTERNATIONAL_ACCESS}{digits}"),
        (false, None) => digits,
    }
}

/// The number of digits in `prefix` (non-digits ignored) if they prefix
/// `number`; `Some(0)` for a prefix with no digits (the default rate).
fn digit_prefix_len(number: &str, prefix: &str) -> Option<usize> {
    let mut number = number.bytes();
    let mut len = 0;
    for p in prefix.bytes().filter(u8::is_ascii_digit) {
        if number.next() != Some(p) {
            return None;
        }
        len += 1;
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> NumberPolicy {
        NumberPolicy::default()
    }

    fn international_policy() -> NumberPolicy {
        NumberPolicy {
            allow_international: true,
            max_rate_per_minute: 0.25,
            rates: vec![
                ("44".into(), 0.02),
                ("447".into(), 0.40), // UK mobiles cost more
                ("53".into(), 1.10),  // Cuba
            ],
            blacklist: vec!["+882".into()],
        }
    }

    #[test]
    fn own_numbers_take_any_callable_number_and_compare_by_digits() {
        let national = own_number("8005550100").expect("national");
        let international = own_number("011442079460000").expect("international");
        assert!(national.has_digits("8005550100"));
        assert!(!national.has_digits("18005550100") && !national.has_digits("800555010"));
        assert!(international.has_digits("011442079460000"));
        assert!(!international.has_digits("442079460000"));
        assert!(!international.has_digits("0114420794600001"));
        // Not the blacklist or rates customers' numbers pass, but the
        // numbering plan still holds.
        assert_eq!(own_number("9115550100"), Err(InvalidNumber::ServiceCode));
        assert_eq!(own_number("+18005550100"), Err(InvalidNumber::NotDigits));
    }

    #[test]
    fn accepts_ten_digit_national_number_with_repeated_digits() {
        let n = validate("3125550188", &policy()).expect("valid");
        assert_eq!(
            n,
            PhoneNumber::National {
                digits: *b"3125550188"
            }
        );
        assert_eq!(n.as_digits(), "3125550188");
        assert_eq!(n.to_string(), "3125550188");
        assert!(!n.is_international());
    }

    #[test]
    fn spoken_digits_are_the_keyed_digits_in_order() {
        let n = validate("3125550188", &policy()).expect("valid");
        assert_eq!(n.spoken_digits(), "3125550188".chars().collect::<Vec<_>>());
        let i = validate("011442079460000", &international_policy()).expect("valid");
        assert_eq!(
            i.spoken_digits(),
            "011442079460000".chars().collect::<Vec<_>>()
        );
        assert_eq!(i.as_digits(), "011442079460000");
    }

    #[test]
    fn rejects_empty_entry() {
        assert_eq!(validate("", &policy()), Err(InvalidNumber::TooShort));
    }

    #[test]
    fn rejects_nine_digits() {
        assert_eq!(
            validate("312555018", &policy()),
            Err(InvalidNumber::TooShort)
        );
    }

    #[test]
    fn rejects_eleven_digits() {
        assert_eq!(
            validate("31255501889", &policy()),
            Err(InvalidNumber::TooLong)
        );
    }

    #[test]
    fn rejects_leading_one() {
        assert_eq!(
            validate("1312555018", &policy()),
            Err(InvalidNumber::LeadingOneOrZero)
        );
    }

    #[test]
    fn rejects_leading_one_before_country_code_number() {
        assert_eq!(
            validate("13125550188", &policy()),
            Err(InvalidNumber::LeadingOneOrZero)
        );
    }

    #[test]
    fn rejects_leading_zero() {
        assert_eq!(
            validate("0125550188", &policy()),
            Err(InvalidNumber::LeadingOneOrZero)
        );
    }

    #[test]
    fn rejects_exchange_starting_with_zero_or_one() {
        assert_eq!(
            validate("3120550188", &policy()),
            Err(InvalidNumber::BadExchange)
        );
        assert_eq!(
            validate("3121550188", &policy()),
            Err(InvalidNumber::BadExchange)
        );
    }

    #[test]
    fn rejects_n11_area_codes() {
        for n in 2..=9 {
            let entered = format!("{n}115550188");
            assert_eq!(
                validate(&entered, &policy()),
                Err(InvalidNumber::ServiceCode),
                "{entered}"
            );
        }
    }

    #[test]
    fn rejects_n11_exchanges() {
        for n in 2..=9 {
            let entered = format!("312{n}110188");
            assert_eq!(
                validate(&entered, &policy()),
                Err(InvalidNumber::ServiceCode),
                "{entered}"
            );
        }
    }

    #[test]
    fn accepts_n11_look_alikes_elsewhere_in_the_number() {
        // 1 and 1 in positions that are not an N11 code.
        assert!(validate("2125559110", &policy()).is_ok());
        assert!(validate("3105550188", &policy()).is_ok());
    }

    #[test]
    fn rejects_blacklisted_full_number() {
        let p = NumberPolicy {
            blacklist: vec!["312-555-0188".into()],
            ..policy()
        };
        assert_eq!(validate("3125550188", &p), Err(InvalidNumber::Blacklisted));
        assert!(validate("3125550189", &p).is_ok());
    }

    #[test]
    fn rejects_blacklisted_prefix() {
        let p = NumberPolicy {
            blacklist: vec!["900".into()],
            ..policy()
        };
        assert_eq!(validate("9005550188", &p), Err(InvalidNumber::Blacklisted));
        assert!(validate("3129000188", &p).is_ok());
    }

    #[test]
    fn rejects_blacklisted_prefix_written_with_country_code() {
        for entry in ["1900", "+1 900", "+1-976"] {
            let p = NumberPolicy {
                blacklist: vec![entry.into()],
                ..policy()
            };
            let keyed = if entry.ends_with("976") {
                "9765550188"
            } else {
                "9005550188"
            };
            assert_eq!(
                validate(keyed, &p),
                Err(InvalidNumber::Blacklisted),
                "{entry}"
            );
        }
    }

    #[test]
    fn ignores_blacklist_entries_without_digits() {
        let p = NumberPolicy {
            blacklist: vec![String::new(), " ".into(), "+".into(), "1".into()],
            ..international_policy()
        };
        assert!(validate("3125550188", &p).is_ok());
        assert!(validate("011442079460000", &p).is_ok());
    }

    #[test]
    fn rejects_non_digits() {
        assert_eq!(
            validate("312555018#", &policy()),
            Err(InvalidNumber::NotDigits)
        );
        assert_eq!(
            validate("312*550188", &policy()),
            Err(InvalidNumber::NotDigits)
        );
        assert_eq!(
            validate("３125550188", &policy()),
            Err(InvalidNumber::NotDigits)
        );
    }

    #[test]
    fn rejects_international_when_not_allowed() {
        let p = NumberPolicy {
            allow_international: false,
            ..international_policy()
        };
        assert_eq!(
            validate("011442079460000", &p),
            Err(InvalidNumber::InternationalNotAllowed)
        );
    }

    #[test]
    fn accepts_international_within_rate() {
        let n = validate("011442079460000", &international_policy()).expect("valid");
        assert_eq!(
            n,
            PhoneNumber::International {
                digits: "442079460000".into()
            }
        );
        assert!(n.is_international());
    }

    #[test]
    fn rejects_international_above_max_rate_by_longest_prefix() {
        // "44" alone is cheap, but "447" (longer) is the one that applies.
        assert_eq!(
            validate("011447700900123", &international_policy()),
            Err(InvalidNumber::RateTooHigh)
        );
        assert_eq!(
            validate("011537123456", &international_policy()),
            Err(InvalidNumber::RateTooHigh)
        );
    }

    #[test]
    fn accepts_international_when_the_longest_prefix_is_cheaper() {
        let p = NumberPolicy {
            rates: vec![("".into(), 5.0), ("33".into(), 0.01)],
            ..international_policy()
        };
        assert!(validate("011331234567", &p).is_ok());
        assert_eq!(
            validate("011491234567", &p),
            Err(InvalidNumber::RateTooHigh)
        );
    }

    #[test]
    fn rejects_international_without_rate() {
        assert_eq!(
            validate("011861012345678", &international_policy()),
            Err(InvalidNumber::NoRate)
        );
    }

    #[test]
    fn rejects_international_with_nan_rate() {
        let p = NumberPolicy {
            rates: vec![("44".into(), f64::NAN)],
            ..international_policy()
        };
        assert_eq!(
            validate("011442079460000", &p),
            Err(InvalidNumber::RateTooHigh)
        );
    }

    #[test]
    fn rejects_international_too_short() {
        assert_eq!(
            validate("011", &international_policy()),
            Err(InvalidNumber::TooShort)
        );
        assert_eq!(
            validate("011442079", &international_policy()),
            Err(InvalidNumber::TooShort)
        );
    }

    #[test]
    fn rejects_international_too_long() {
        // E.164 §6: 16 digits after the access code is one too many.
        assert_eq!(
            validate("0114420794600001234", &international_policy()),
            Err(InvalidNumber::TooLong)
        );
        // 15 is the maximum and still fine.
        assert!(validate("011442079460000123", &international_policy()).is_ok());
    }

    #[test]
    fn rejects_blacklisted_international_prefix() {
        let p = NumberPolicy {
            rates: vec![("".into(), 0.0)],
            ..international_policy()
        };
        assert_eq!(
            validate("0118821234567", &p),
            Err(InvalidNumber::Blacklisted)
        );
    }

    #[test]
    fn national_from_ani_accepts_the_usual_forms() {
        let want = Some(PhoneNumber::National {
            digits: *b"3125550188",
        });
        for ani in [
            "+13125550188",
            "13125550188",
            "3125550188",
            " 312-555-0188 ",
            "+1 (312) 555.0188",
        ] {
            let ani = ani.replace(' ', "");
            assert_eq!(national_from_ani(&ani, &policy()), want, "{ani}");
        }
    }

    #[test]
    fn national_from_ani_rejects_junk_and_invalid_numbers() {
        for ani in [
            "sip-ish junk",
            "anonymous",
            "",
            "+",
            "+443125550188",
            "+23125550188",
            "23125550188",
            "312555018",
            "131255501888",
            "9115550188",
            "0114420794600",
            "+1011442079",
            "3125550188;ext=1",
        ] {
            assert_eq!(national_from_ani(ani, &policy()), None, "{ani}");
        }
    }

    #[test]
    fn national_from_ani_applies_the_blacklist() {
        let p = NumberPolicy {
            blacklist: vec!["312".into()],
            ..policy()
        };
        assert_eq!(national_from_ani("+13125550188", &p), None);
    }
}
