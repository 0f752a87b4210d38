//! `[org]`: the organisation's callback policy, business hours and holidays.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::callback::hours::{BusinessHours, Gates, HoursError};
use crate::callback::timezone::CallingWindow;

use super::{Fault, Invalid, fail, is_digits};

/// `[org]`: the organisation's callback policy, business hours and
/// holidays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrgConfig {
    /// The organisation's name (shown by the API and the console).
    pub name: String,
    /// IANA time zone the hours and holidays are written in.
    pub timezone: String,
    /// Callbacks are offered at all (a runtime switch can override).
    pub registration_enabled: bool,
    /// Registered callbacks are launched; when off, registration still
    /// works but no ECBT is announced.
    pub launch_enabled: bool,
    /// Local dates (`YYYY-MM-DD`) closed all day, for every queue.
    pub holidays: Vec<String>,
    /// Numbers entered with the `011` international prefix may be accepted.
    pub allow_international: bool,
    /// International destinations dearer than this per minute are refused.
    pub max_rate_per_minute: f64,
    /// Numbers or prefixes (digits) never called back.
    pub blacklist: Vec<String>,
    /// Read back "international" before a number entered with `011`.
    pub spoken_international_prefix: bool,
    /// Weekday (`mon`…`sun`) → `HH:MM-HH:MM` or `closed`; a day not listed
    /// is closed. The default is open around the clock.
    pub hours: BTreeMap<String, String>,
    /// International destination prefix (the digits after `011`) → price
    /// per minute.
    pub rates: BTreeMap<String, f64>,
    /// The numbers presented to customers (caller IDs): each queue's
    /// `callback_number` is one of them, an agent may be restricted to some
    /// (`[[agents]] callback_numbers`), a callback may ask for one. Empty:
    /// any queue's number is allowed (no central list).
    pub callback_numbers: Vec<String>,
    /// When any callback may ring a customer, in the customer's local time
    /// (`HH:MM-HH:MM`; the zone comes from the number, see
    /// [`crate::callback::timezone`]): automatic, IVR and API callbacks
    /// alike wait for it.
    pub calling_window: String,
    /// Automatic (missed-call) callback calls at once, apart from
    /// `[callbacks] max_lines`.
    pub auto_callback_lines: u32,
    /// The organisation is frozen: every missed-call rule is off (their
    /// pending tasks cancelled) and nothing is dialed. Unfreezing turns
    /// nothing back on: rules and launching are switched on by hand.
    pub frozen: bool,
}

impl OrgConfig {
    /// Whether `number` may be presented to customers: one of
    /// [`OrgConfig::callback_numbers`], or any number when the list is
    /// empty.
    pub fn presents(&self, number: &crate::domain::number::PhoneNumber) -> bool {
        self.callback_numbers.is_empty()
            || self
                .callback_numbers
                .iter()
                .any(|text| crate::domain::number::own_number(text).is_ok_and(|n| n == *number))
    }

    /// The organisation's business hours: [`OrgConfig::timezone`],
    /// [`OrgConfig::hours`] and [`OrgConfig::holidays`]. Fails only on
    /// values [`Config::check`](super::Config::check) refuses;
    /// [`super::Settings`] holds the result.
    pub(super) fn business_hours(&self) -> Result<BusinessHours, HoursError> {
        self.business_hours_with(&self.hours)
    }

    /// The configured on/off switches, before any runtime override.
    pub fn gates(&self) -> Gates {
        Gates {
            registration_enabled: self.registration_enabled,
            launch_enabled: self.launch_enabled,
        }
    }

    /// The number rules for [`crate::callback::number::validate`]: one
    /// place applies blacklist and international rates.
    pub fn number_policy(&self) -> crate::callback::number::NumberPolicy {
        crate::callback::number::NumberPolicy {
            allow_international: self.allow_international,
            max_rate_per_minute: self.max_rate_per_minute,
            rates: self.rates.iter().map(|(p, r)| (p.clone(), *r)).collect(),
            blacklist: self.blacklist.clone(),
        }
    }

    /// Business hours from `weekly` in this organisation's zone, with its
    /// holidays.
    pub(super) fn business_hours_with(
        &self,
        weekly: &BTreeMap<String, String>,
    ) -> Result<BusinessHours, HoursError> {
        let days: Vec<(&str, &str)> = weekly
            .iter()
            .map(|(day, range)| (day.as_str(), range.as_str()))
            .collect();
        let holidays: Vec<&str> = self.holidays.iter().map(String::as_str).collect();
        BusinessHours::parse(&self.timezone, &days, &holidays)
    }

    /// The `[org]` value rules: hours, time zone and holidays in one
    /// go (the error is placed on the key it came from), then prices and
    /// the blacklist.
    pub(super) fn check(&self) -> Result<(), Fault> {
        // Time zone, holidays and weekly hours in one go; the error is
        // placed on the key it came from.
        if let Err(e) = self.business_hours() {
            let (field, reason) = hours_invalid(self, "org.hours", e);
            return fail(&field, reason);
        }
        if let Some(reason) = bad_rate(self.max_rate_per_minute) {
            return fail("org.max_rate_per_minute", reason);
        }
        for (i, entry) in self.blacklist.iter().enumerate() {
            if !is_digits(entry) {
                return fail(&format!("org.blacklist[{i}]"), Invalid::not_digits(entry));
            }
        }
        let mut seen = Vec::with_capacity(self.callback_numbers.len());
        for (i, text) in self.callback_numbers.iter().enumerate() {
            let field = format!("org.callback_numbers[{i}]");
            let number = match crate::domain::number::own_number(text) {
                Ok(number) => number,
                Err(reason) => {
                    return fail(
                        &field,
                        Invalid::BadCallbackNumber {
                            value: text.clone(),
                            reason,
                        },
                    );
                }
            };
            if seen.contains(&number) {
                return fail(&field, Invalid::duplicate(text));
            }
            seen.push(number);
        }
        if let Err(e) = CallingWindow::parse(&self.calling_window) {
            return fail(
                "org.calling_window",
                Invalid::BadCallingWindow {
                    reason: e.to_string(),
                },
            );
        }
        super::in_range(
            "org.auto_callback_lines",
            self.auto_callback_lines.into(),
            0..=1000,
        )?;
        for (prefix, rate) in &self.rates {
            let field = format!("org.rates.{prefix}");
            if !is_digits(prefix) {
                return fail(&field, Invalid::not_digits(prefix));
            }
            if let Some(reason) = bad_rate(*rate) {
                return fail(&field, reason);
            }
        }
        Ok(())
    }
}

impl Default for OrgConfig {
    fn default() -> OrgConfig {
        OrgConfig {
            name: "callbackd".to_owned(),
            timezone: "America/Chicago".to_owned(),
            registration_enabled: true,
            launch_enabled: true,
            holidays: Vec::new(),
            allow_international: false,
            max_rate_per_minute: 0.10,
            blacklist: Vec::new(),
            spoken_international_prefix: true,
            // Open around the clock, so a fresh checkout can be tried at
            // any hour.
            hours: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .into_iter()
                .map(|day| (day.to_owned(), "00:00-24:00".to_owned()))
                .collect(),
            rates: BTreeMap::new(),
            callback_numbers: Vec::new(),
            calling_window: "08:00-21:00".to_owned(),
            auto_callback_lines: 15,
            frozen: false,
        }
    }
}

/// Where a business-hours error belongs in the file, and why. `hours_field`
/// is the table the weekly hours came from (`org.hours`, `queues[1].hours`);
/// the time zone and holidays are always the organisation's.
pub(super) fn hours_invalid(
    org: &OrgConfig,
    hours_field: &str,
    error: HoursError,
) -> (String, Invalid) {
    match error {
        HoursError::UnknownZone { name, source: _ } => {
            ("org.timezone".to_owned(), Invalid::UnknownTimeZone { name })
        }
        HoursError::UnknownDay { day } => (format!("{hours_field}.{day}"), Invalid::UnknownWeekday),
        HoursError::DuplicateDay { day } => {
            (format!("{hours_field}.{day}"), Invalid::DuplicateWeekday)
        }
        HoursError::BadRange { day, range } => {
            (format!("{hours_field}.{day}"), Invalid::BadHours { range })
        }
        HoursError::CloseNotAfterOpen { day, open, close } => (
            format!("{hours_field}.{day}"),
            Invalid::CloseNotAfterOpen { open, close },
        ),
        HoursError::BadHoliday { value, source: _ } => {
            let field = org.holidays.iter().position(|h| *h == value).map_or_else(
                || "org.holidays".to_owned(),
                |i| format!("org.holidays[{i}]"),
            );
            (field, Invalid::BadDate { value })
        }
    }
}

/// Why `rate` is not a usable price, if it is not.
fn bad_rate(rate: f64) -> Option<Invalid> {
    (!rate.is_finite() || rate < 0.0).then(|| Invalid::BadRate {
        value: rate.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn shipped_hours_are_open_around_the_clock_in_chicago() {
        let c = parse(SHIPPED).expect("shipped config.toml");
        let hours = c.org.business_hours().expect("valid hours");
        assert_eq!(
            hours.tz,
            jiff::tz::TimeZone::get("America/Chicago").expect("zone")
        );
        assert!(hours.holidays.is_empty());
        // Sunday 03:00 local, Christmas evening, Monday midnight.
        for at in [
            "2026-06-07T08:00:00Z",
            "2026-12-26T03:00:00Z",
            "2026-06-08T05:00:00Z",
        ] {
            assert!(hours.is_open(ts(at)), "{at}");
        }
    }

    #[test]
    fn org_hours_table_closes_days_it_does_not_list() {
        let c = parse(
            "[org]\ntimezone = \"America/Chicago\"\nholidays = [\"2026-12-25\"]\n\
             [org.hours]\nmon = \"08:00-18:00\"\nthu = \"08:00-18:00\"\nsat = \"closed\"\n",
        )
        .expect("office hours");
        let hours = c.org.business_hours().expect("valid hours");
        // Monday 2026-06-08, CDT (UTC-5).
        assert!(hours.is_open(ts("2026-06-08T13:00:00Z")), "mon 08:00");
        assert!(!hours.is_open(ts("2026-06-08T23:00:00Z")), "mon 18:00");
        assert!(!hours.is_open(ts("2026-06-09T15:00:00Z")), "tue not listed");
        assert!(!hours.is_open(ts("2026-06-13T15:00:00Z")), "sat closed");
        // Thursday 2026-12-24 is open, Thursday 2026-12-25 a holiday (CST).
        assert!(hours.is_open(ts("2026-12-24T18:00:00Z")));
        assert!(!hours.is_open(ts("2026-12-25T18:00:00Z")), "holiday");
    }

    #[test]
    fn rejects_unknown_time_zone() {
        let e = error("[org]\ntimezone = \"America/Gotham\"\n");
        assert_eq!(
            e,
            "config.toml: org.timezone: unknown time zone \"America/Gotham\" (expected an IANA name such as \"America/Chicago\")"
        );
    }

    #[test]
    fn rejects_malformed_org_hours() {
        let e = error("[org.hours]\nmon = \"8-18\"\n");
        assert_eq!(
            e,
            "config.toml: org.hours.mon: \"8-18\" is not HH:MM-HH:MM (24-hour clock, 24:00 = midnight) or \"closed\""
        );
    }

    #[test]
    fn rejects_org_hours_closing_before_opening() {
        let e = error("[org.hours]\nfri = \"18:00-08:00\"\n");
        assert_eq!(
            e,
            "config.toml: org.hours.fri: closes at 08:00, which is not after it opens at 18:00"
        );
    }

    #[test]
    fn rejects_unknown_weekday_in_hours() {
        let e = error("[org.hours]\nmonday = \"08:00-18:00\"\n");
        assert_eq!(
            e,
            "config.toml: org.hours.monday: unknown weekday (expected mon, tue, wed, thu, fri, sat or sun)"
        );
    }

    #[test]
    fn rejects_weekday_given_twice_in_hours() {
        let e = error("[org.hours]\nMon = \"08:00-12:00\"\nmon = \"13:00-18:00\"\n");
        assert_eq!(
            e,
            "config.toml: org.hours.mon: names a weekday that is already given"
        );
    }

    #[test]
    fn rejects_malformed_holiday() {
        let e = error("[org]\nholidays = [\"2026-12-25\", \"2026-02-30\"]\n");
        assert_eq!(
            e,
            "config.toml: org.holidays[1]: \"2026-02-30\" is not a YYYY-MM-DD date"
        );
        let e = error("[org]\nholidays = [\"christmas\"]\n");
        assert!(e.starts_with("config.toml: org.holidays[0]: "), "{e}");
    }

    #[test]
    fn rejects_negative_or_non_finite_max_rate() {
        for (text, shown) in [("-0.01", "-0.01"), ("nan", "NaN"), ("inf", "inf")] {
            let e = error(&format!("[org]\nmax_rate_per_minute = {text}\n"));
            assert_eq!(
                e,
                format!(
                    "config.toml: org.max_rate_per_minute: {shown} is not a finite price of 0 or more"
                )
            );
        }
        parse("[org]\nmax_rate_per_minute = 0.0\n").expect("zero allows only free destinations");
    }

    #[test]
    fn rejects_negative_or_non_finite_rate() {
        let e = error("[org.rates]\n\"44\" = 0.02\n\"52\" = -1.5\n");
        assert_eq!(
            e,
            "config.toml: org.rates.52: -1.5 is not a finite price of 0 or more"
        );
        let e = error("[org.rates]\n\"44\" = inf\n");
        assert_eq!(
            e,
            "config.toml: org.rates.44: inf is not a finite price of 0 or more"
        );
    }

    #[test]
    fn rejects_rate_prefix_that_is_not_digits() {
        let e = error("[org.rates]\n\"+44\" = 0.02\n");
        assert_eq!(
            e,
            "config.toml: org.rates.+44: \"+44\" must be digits 0-9 only, at least one"
        );
    }

    #[test]
    fn rejects_blacklist_entry_that_is_not_digits() {
        let e = error("[org]\nblacklist = [\"900\", \"312-555-0100\"]\n");
        assert_eq!(
            e,
            "config.toml: org.blacklist[1]: \"312-555-0100\" must be digits 0-9 only, at least one"
        );
        let e = error("[org]\nblacklist = [\"\"]\n");
        assert_eq!(
            e,
            "config.toml: org.blacklist[0]: \"\" must be digits 0-9 only, at least one"
        );
    }

    #[test]
    fn number_policy_carries_the_org_rules() {
        let c = parse(
            "[org]\nallow_international = true\nmax_rate_per_minute = 0.05\nblacklist = [\"900\"]\n[org.rates]\n\"44\" = 0.02\n",
        )
        .expect("org");
        let policy = c.org.number_policy();
        assert!(policy.allow_international);
        assert_eq!(policy.max_rate_per_minute, 0.05);
        assert_eq!(policy.rates, vec![("44".to_string(), 0.02)]);
        assert_eq!(policy.blacklist, vec!["900".to_string()]);
        use crate::callback::number::{InvalidNumber, validate};
        assert_eq!(
            validate("9005551234", &policy),
            Err(InvalidNumber::Blacklisted)
        );
        assert!(validate("011442071234567", &policy).is_ok());
    }

    #[test]
    fn reads_the_callback_switches() {
        let c = parse(
            "[org]\nregistration_enabled = false\nlaunch_enabled = false\n\
             spoken_international_prefix = false\n",
        )
        .expect("switches");
        assert_eq!(
            c.org.gates(),
            Gates {
                registration_enabled: false,
                launch_enabled: false
            }
        );
        assert!(!c.org.spoken_international_prefix);
    }
}
