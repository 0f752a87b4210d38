//! Business hours, holidays and the registration gate.
//!
//! Hours are civil (wall-clock) times in an IANA time zone: a queue open
//! 08:00–18:00 in `America/Chicago` opens at 08:00 local time on both sides
//! of a DST change. jiff does the zone arithmetic. The time zone database is
//! the system's (`/usr/share/zoneinfo`, kept current by the OS); jiff's
//! `tzdb-bundle-always` feature embeds a copy that is used only when no
//! system database is found, so zone lookups work on any machine.
//!
//! Pure: every function takes the instant to judge (`jiff::Timestamp`, wall
//! clock) as an argument and reads no clock.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};
use thiserror::Error;

/// How far ahead [`BusinessHours::next_open`] searches, in days.
pub const NEXT_OPEN_HORIZON_DAYS: i32 = 14;

/// Weekly opening hours in a time zone, with holidays (closed all day).
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    /// The zone the hours are written in.
    pub tz: TimeZone,
    /// Opening window per weekday, Monday first: open while
    /// `open <= local time < close`. `None` is closed all day. A close of
    /// [`Time::MAX`] means "until midnight" (written `24:00` in
    /// [`BusinessHours::parse`]). A window with `close <= open` never opens;
    /// windows across midnight are written as two days.
    pub weekly: [Option<(Time, Time)>; 7],
    /// Local dates on which it is closed all day.
    pub holidays: Vec<Date>,
}

impl BusinessHours {
    /// Open at all times (24/7, UTC, no holidays).
    pub fn always() -> Self {
        BusinessHours {
            tz: TimeZone::UTC,
            weekly: [Some((Time::MIN, Time::MAX)); 7],
            holidays: Vec::new(),
        }
    }

    /// Builds hours from configuration text: an IANA zone name, day windows
    /// such as `("mon", "08:00-18:00")` (days `mon`…`sun`, any case; a day
    /// not listed, or given as `closed`, is closed; `24:00` closes at
    /// midnight) and holidays as `YYYY-MM-DD`.
    pub fn parse(
        tz_name: &str,
        weekly: &[(&str, &str)],
        holidays: &[&str],
    ) -> Result<Self, HoursError> {
        let tz = TimeZone::get(tz_name).map_err(|source| HoursError::UnknownZone {
            name: tz_name.to_owned(),
            source,
        })?;
        let mut days: [Option<(Time, Time)>; 7] = [None; 7];
        let mut seen = [false; 7];
        for &(day, range) in weekly {
            let Some(index) = DAY_NAMES
                .iter()
                .position(|name| name.eq_ignore_ascii_case(day.trim()))
            else {
                return Err(HoursError::UnknownDay {
                    day: day.to_owned(),
                });
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(HoursError::DuplicateDay {
                    day: day.to_owned(),
                });
            }
            days[index] = parse_window(day, range)?;
        }
        let holidays = holidays
            .iter()
            .map(|text| {
                text.trim()
                    .parse::<Date>()
                    .map_err(|source| HoursError::BadHoliday {
                        value: (*text).to_owned(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BusinessHours {
            tz,
            weekly: days,
            holidays,
        })
    }

    /// True if open at `at`: not a holiday (local date) and
    /// `open <= local time < close` for the local weekday.
    pub fn is_open(&self, at: Timestamp) -> bool {
        let local = self.tz.to_datetime(at);
        let Some((open, close)) = self.window(local.date()) else {
            return false;
        };
        let t = local.time();
        open <= t && (t < close || close == Time::MAX)
    }

    /// The first instant at or after `at` when it is open: `at` itself if
    /// open now, else the next opening within [`NEXT_OPEN_HORIZON_DAYS`]
    /// local days; `None` if closed throughout.
    ///
    /// An opening time that falls in a DST gap opens at the end of the gap;
    /// one that occurs twice (a fold) opens at its first occurrence.
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        if self.is_open(at) {
            return Some(at);
        }
        let today = self.tz.to_datetime(at).date();
        for offset in 0..=NEXT_OPEN_HORIZON_DAYS {
            let Ok(date) = today.checked_add(offset.days()) else {
                return None;
            };
            let Some((open, _)) = self.window(date) else {
                continue;
            };
            let Some(start) = self.first_instant_at_or_after(date.to_datetime(open)) else {
                continue;
            };
            // Closed at `at`, so a window that started at or before `at` has
            // already closed; a window lying wholly in a DST gap never opens.
            if start > at && self.is_open(start) {
                return Some(start);
            }
        }
        None
    }

    /// The opening window of `date`, unless it is a holiday.
    fn window(&self, date: Date) -> Option<(Time, Time)> {
        if self.holidays.contains(&date) {
            return None;
        }
        self.weekly[day_index(date.weekday())]
    }

    /// The earliest instant whose local time is `dt` or later.
    fn first_instant_at_or_after(&self, dt: jiff::civil::DateTime) -> Option<Timestamp> {
        match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
            // `dt` happens twice (clocks went back): the first time.
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
            // `dt` never happens (clocks jumped forward over it): read with
            // the later offset it lies just before the transition, which is
            // the first instant whose local time is past `dt`.
            AmbiguousOffset::Gap { after, .. } => {
                let just_before = after.to_timestamp(dt).ok()?;
                self.tz.following(just_before).next().map(|t| t.timestamp())
            }
        }
    }
}

/// Errors in the business-hours configuration (local faults: the config).
#[derive(Debug, Error)]
pub enum HoursError {
    /// The time zone is not in the IANA database.
    #[error("unknown time zone {name:?}: {source}")]
    UnknownZone {
        /// The name as configured.
        name: String,
        /// jiff's reason.
        #[source]
        source: jiff::Error,
    },
    /// A weekday other than `mon`…`sun`.
    #[error("unknown weekday {day:?} (expected mon, tue, wed, thu, fri, sat or sun)")]
    UnknownDay {
        /// The day as configured.
        day: String,
    },
    /// The same weekday is given twice.
    #[error("weekday {day:?} is given twice")]
    DuplicateDay {
        /// The day as configured.
        day: String,
    },
    /// A window that is not `HH:MM-HH:MM` (or `closed`).
    #[error("{day}: hours {range:?} are not HH:MM-HH:MM (24-hour clock) or \"closed\"")]
    BadRange {
        /// The day the window belongs to.
        day: String,
        /// The window as configured.
        range: String,
    },
    /// The closing time is not after the opening time.
    #[error("{day}: closes at {close} which is not after it opens at {open}")]
    CloseNotAfterOpen {
        /// The day the window belongs to.
        day: String,
        /// Opening time as configured.
        open: String,
        /// Closing time as configured.
        close: String,
    },
    /// A holiday that is not a `YYYY-MM-DD` date.
    #[error("holiday {value:?} is not a YYYY-MM-DD date: {source}")]
    BadHoliday {
        /// The holiday as configured.
        value: String,
        /// jiff's reason.
        #[source]
        source: jiff::Error,
    },
}

/// The switches that turn the callback feature on and off (config and
/// runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gates {
    /// Callbacks may be offered to and registered by callers.
    pub registration_enabled: bool,
    /// Registered callbacks are being launched (dialed out).
    pub launch_enabled: bool,
}

impl Gates {
    /// Both switched on: registration and launching each need both sets
    /// (the organisation's and a queue's).
    pub fn and(self, other: Gates) -> Gates {
        Gates {
            registration_enabled: self.registration_enabled && other.registration_enabled,
            launch_enabled: self.launch_enabled && other.launch_enabled,
        }
    }
}

/// What the IVR may do for a caller right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// Offer a callback; announce the ECBT only when callbacks are being
    /// launched (otherwise no honest estimate exists).
    Offer {
        /// Whether the estimated callback time is announced.
        announce_ecbt: bool,
    },
    /// "We are unable to offer callbacks at this time": registration is
    /// disabled or it is outside business hours.
    Unavailable,
}

/// Decides whether a callback may be offered at `now`: registration must be
/// enabled and `now` inside the effective hours — the queue's override if it
/// has one, else the organisation's. Launching disabled still offers the
/// callback but without an ECBT.
pub fn registration_gate(
    gates: &Gates,
    org: &BusinessHours,
    queue_override: Option<&BusinessHours>,
    now: Timestamp,
) -> GateDecision {
    if !gates.registration_enabled {
        return GateDecision::Unavailable;
    }
    let hours = queue_override.unwrap_or(org);
    if !hours.is_open(now) {
        return GateDecision::Unavailable;
    }
    GateDecision::Offer {
        announce_ecbt: gates.launch_enabled,
    }
}

/// Configuration names of the weekdays, Monday first.
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(day: Weekday) -> usize {
    match day {
        Weekday::Monday => 0,
        Weekday::Tuesday => 1,
        Weekday::Wednesday => 2,
        Weekday::Thursday => 3,
        Weekday::Friday => 4,
        Weekday::Saturday => 5,
        Weekday::Sunday => 6,
    }
}

/// Parses `HH:MM-HH:MM` (or `closed`) for `day`.
fn parse_window(day: &str, range: &str) -> Result<Option<(Time, Time)>, HoursError> {
    let range = range.trim();
    if range.eq_ignore_ascii_case("closed") {
        return Ok(None);
    }
    let bad = || HoursError::BadRange {
        day: day.to_owned(),
        range: range.to_owned(),
    };
    let (open_text, close_text) = range.split_once('-').ok_or_else(bad)?;
    let (open_text, close_text) = (open_text.trim(), close_text.trim());
    let (open_h, open_m) = parse_hh_mm(open_text).ok_or_else(bad)?;
    let (close_h, close_m) = parse_hh_mm(close_text).ok_or_else(bad)?;
    if open_h == 24 {
        return Err(bad());
    }
    let open = Time::new(open_h, open_m, 0, 0).map_err(|_| bad())?;
    let close = match (close_h, close_m) {
        (24, 0) => Time::MAX,
        (24, _) => return Err(bad()),
        (h, m) => Time::new(h, m, 0, 0).map_err(|_| bad())?,
    };
    if close <= open {
        return Err(HoursError::CloseNotAfterOpen {
            day: day.to_owned(),
            open: open_text.to_owned(),
            close: close_text.to_owned(),
        });
    }
    Ok(Some((open, close)))
}

/// `H:MM` or `HH:MM`, hour 0–24, minute 0–59 (also the calling window's,
/// [`crate::callback::timezone::CallingWindow::parse`]).
pub(crate) fn parse_hh_mm(text: &str) -> Option<(i8, i8)> {
    let (h, m) = text.split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || h.len() > 2 || !digits(m) || m.len() != 2 {
        return None;
    }
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    (h <= 24 && m <= 59).then_some((h, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    /// Chicago, weekdays 08:00–18:00, Saturday 09:00–13:00, Sunday closed,
    /// Christmas 2025 (a Thursday) a holiday.
    fn chicago() -> BusinessHours {
        BusinessHours::parse(
            "America/Chicago",
            &[
                ("mon", "08:00-18:00"),
                ("tue", "08:00-18:00"),
                ("wed", "08:00-18:00"),
                ("thu", "08:00-18:00"),
                ("fri", "08:00-18:00"),
                ("sat", "09:00-13:00"),
            ],
            &["2025-12-25"],
        )
        .unwrap()
    }

    fn weekdays_only() -> BusinessHours {
        let days = ["mon", "tue", "wed", "thu", "fri"].map(|d| (d, "08:00-18:00"));
        BusinessHours::parse("America/Chicago", &days, &[]).unwrap()
    }

    #[test]
    fn open_at_opening_and_closed_at_closing_edge() {
        let h = chicago();
        // Monday 2025-06-02, CDT (UTC-5): 08:00 local = 13:00Z.
        assert!(!h.is_open(ts("2025-06-02T12:59:59.999Z")));
        assert!(h.is_open(ts("2025-06-02T13:00:00Z")));
        assert!(h.is_open(ts("2025-06-02T22:59:59.999Z")));
        assert!(!h.is_open(ts("2025-06-02T23:00:00Z")));
        // Saturday window, Sunday closed.
        assert!(h.is_open(ts("2025-06-07T14:00:00Z")));
        assert!(!h.is_open(ts("2025-06-07T18:00:00Z")));
        assert!(!h.is_open(ts("2025-06-08T17:00:00Z")));
    }

    #[test]
    fn closed_on_a_holiday() {
        let h = chicago();
        // Noon CST (UTC-6) = 18:00Z; Christmas is a Thursday.
        assert!(h.is_open(ts("2025-12-24T18:00:00Z")));
        assert!(!h.is_open(ts("2025-12-25T18:00:00Z")));
        assert!(h.is_open(ts("2025-12-26T18:00:00Z")));
        assert_eq!(
            // 18:30 CST on the 24th → 08:00 CST on the 26th.
            h.next_open(ts("2025-12-25T00:30:00Z")),
            Some(ts("2025-12-26T14:00:00Z"))
        );
    }

    #[test]
    fn holiday_is_judged_on_the_local_date() {
        let h = BusinessHours::parse(
            "America/Chicago",
            &[("thu", "00:00-24:00"), ("fri", "00:00-24:00")],
            &["2025-12-25"],
        )
        .unwrap();
        // 2025-12-26T03:00Z is still 21:00 on the 25th in Chicago.
        assert!(!h.is_open(ts("2025-12-26T03:00:00Z")));
        // 2025-12-26T06:00Z is 00:00 on the 26th.
        assert!(h.is_open(ts("2025-12-26T06:00:00Z")));
    }

    #[test]
    fn opening_follows_local_time_across_dst_changes() {
        let sundays =
            BusinessHours::parse("America/Chicago", &[("sun", "08:00-18:00")], &[]).unwrap();
        // 2025-03-02, CST (UTC-6): 08:00 local = 14:00Z.
        assert!(!sundays.is_open(ts("2025-03-02T13:30:00Z")));
        assert!(sundays.is_open(ts("2025-03-02T14:00:00Z")));
        // 2025-03-09 springs forward at 02:00: 08:00 CDT = 13:00Z.
        assert!(!sundays.is_open(ts("2025-03-09T12:59:59Z")));
        assert!(sundays.is_open(ts("2025-03-09T13:00:00Z")));
        assert!(!sundays.is_open(ts("2025-03-09T23:00:00Z")));
        // 2025-11-02 falls back at 02:00: 08:00 CST = 14:00Z.
        assert!(!sundays.is_open(ts("2025-11-02T13:30:00Z")));
        assert!(sundays.is_open(ts("2025-11-02T14:00:00Z")));
        assert!(sundays.is_open(ts("2025-11-02T23:59:59Z")));
        assert!(!sundays.is_open(ts("2025-11-03T00:00:00Z")));
    }

    #[test]
    fn next_open_at_a_time_skipped_by_dst_is_the_end_of_the_gap() {
        // 02:30 does not exist on 2025-03-09 in Chicago (02:00 CST → 03:00
        // CDT at 08:00Z); the window is open from the jump on.
        let h = BusinessHours::parse("America/Chicago", &[("sun", "02:30-05:00")], &[]).unwrap();
        assert!(!h.is_open(ts("2025-03-09T07:59:59Z")));
        assert!(h.is_open(ts("2025-03-09T08:00:00Z")));
        assert_eq!(
            h.next_open(ts("2025-03-09T06:00:00Z")),
            Some(ts("2025-03-09T08:00:00Z"))
        );
    }

    #[test]
    fn next_open_at_a_time_repeated_by_dst_is_its_first_occurrence() {
        // 01:30 happens twice on 2025-11-02: 06:30Z (CDT) and 07:30Z (CST).
        let h = BusinessHours::parse("America/Chicago", &[("sun", "01:30-05:00")], &[]).unwrap();
        assert_eq!(
            h.next_open(ts("2025-11-02T05:00:00Z")),
            Some(ts("2025-11-02T06:30:00Z"))
        );
    }

    #[test]
    fn next_open_skips_a_window_lying_wholly_in_a_dst_gap() {
        let h = BusinessHours::parse("America/Chicago", &[("sun", "02:10-02:50")], &[]).unwrap();
        // 2025-03-09 never reaches 02:10; the next Sunday does (CDT).
        assert_eq!(
            h.next_open(ts("2025-03-09T06:00:00Z")),
            Some(ts("2025-03-16T07:10:00Z"))
        );
    }

    #[test]
    fn next_open_over_a_weekend_is_monday_morning() {
        let h = weekdays_only();
        // Friday 2025-06-06 18:30 CDT → Monday 2025-06-09 08:00 CDT.
        assert_eq!(
            h.next_open(ts("2025-06-06T23:30:00Z")),
            Some(ts("2025-06-09T13:00:00Z"))
        );
        // Saturday noon → the same Monday.
        assert_eq!(
            h.next_open(ts("2025-06-07T17:00:00Z")),
            Some(ts("2025-06-09T13:00:00Z"))
        );
        // Monday before opening → that morning; open now → now.
        assert_eq!(
            h.next_open(ts("2025-06-09T11:00:00Z")),
            Some(ts("2025-06-09T13:00:00Z"))
        );
        assert_eq!(
            h.next_open(ts("2025-06-09T15:00:00Z")),
            Some(ts("2025-06-09T15:00:00Z"))
        );
    }

    #[test]
    fn next_open_skips_holidays() {
        let mut h = weekdays_only();
        h.holidays.push("2025-06-09".parse().unwrap());
        assert_eq!(
            h.next_open(ts("2025-06-06T23:30:00Z")),
            Some(ts("2025-06-10T13:00:00Z"))
        );
    }

    #[test]
    fn next_open_is_none_when_never_open() {
        let h = BusinessHours::parse("America/Chicago", &[], &[]).unwrap();
        assert_eq!(h.next_open(ts("2025-06-06T23:30:00Z")), None);
        // Open only beyond the horizon: holidays cover every Monday within it.
        let mut h = BusinessHours::parse("UTC", &[("mon", "08:00-09:00")], &[]).unwrap();
        let first = Date::new(2025, 6, 9).unwrap();
        h.holidays = (0..3)
            .map(|w| first.checked_add((7 * w).days()).unwrap())
            .collect();
        assert_eq!(h.next_open(ts("2025-06-06T12:00:00Z")), None);
    }

    #[test]
    fn always_is_open_at_any_instant() {
        let h = BusinessHours::always();
        for at in [
            "2025-06-08T00:00:00Z",
            "2025-12-25T12:00:00Z",
            "2025-06-08T23:59:59.999999999Z",
            "2025-03-09T08:00:00Z",
        ] {
            assert!(h.is_open(ts(at)), "{at}");
            assert_eq!(h.next_open(ts(at)), Some(ts(at)));
        }
    }

    #[test]
    fn parse_accepts_midnight_close_closed_days_and_any_case() {
        let h = BusinessHours::parse(
            "Europe/Paris",
            &[("Mon", " 9:00 - 24:00 "), ("TUE", "closed")],
            &[" 2025-05-01 "],
        )
        .unwrap();
        let nine = Time::new(9, 0, 0, 0).unwrap();
        assert_eq!(h.weekly[0], Some((nine, Time::MAX)));
        assert_eq!(h.weekly[1..], [None; 6]);
        assert_eq!(h.holidays, [Date::new(2025, 5, 1).unwrap()]);
        // Monday 2025-06-02 23:59:59 CEST is open, midnight is Tuesday.
        assert!(h.is_open(ts("2025-06-02T21:59:59Z")));
        assert!(!h.is_open(ts("2025-06-02T22:00:00Z")));
    }

    #[test]
    fn rejects_unknown_zone() {
        let err = BusinessHours::parse("America/Gotham", &[], &[]).unwrap_err();
        assert!(matches!(&err, HoursError::UnknownZone { name, .. } if name == "America/Gotham"));
        assert!(err.to_string().contains("America/Gotham"), "{err}");
    }

    #[test]
    fn rejects_unknown_day() {
        let err = BusinessHours::parse("UTC", &[("monday", "08:00-18:00")], &[]).unwrap_err();
        assert!(matches!(&err, HoursError::UnknownDay { day } if day == "monday"));
    }

    #[test]
    fn rejects_duplicate_day() {
        let err = BusinessHours::parse(
            "UTC",
            &[("mon", "08:00-12:00"), ("Mon", "13:00-18:00")],
            &[],
        )
        .unwrap_err();
        assert!(matches!(&err, HoursError::DuplicateDay { day } if day == "Mon"));
    }

    #[test]
    fn rejects_malformed_ranges() {
        for range in [
            "",
            "8-18",
            "08:00",
            "08:00-",
            "08:60-18:00",
            "08:00-18:5",
            "25:00-26:00",
            "24:00-24:00",
            "08:00-24:30",
            "-1:00-08:00",
            "08:00-18:00-19:00",
            "0800-1800",
            "open",
        ] {
            let err = BusinessHours::parse("UTC", &[("wed", range)], &[]).unwrap_err();
            assert!(
                matches!(&err, HoursError::BadRange { day, range: r } if day == "wed" && r == range.trim()),
                "{range:?}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_close_not_after_open() {
        for range in ["18:00-08:00", "08:00-08:00", "22:00-06:00"] {
            let err = BusinessHours::parse("UTC", &[("fri", range)], &[]).unwrap_err();
            assert!(
                matches!(err, HoursError::CloseNotAfterOpen { .. }),
                "{range:?}: {err:?}"
            );
        }
        let err = BusinessHours::parse("UTC", &[("fri", "18:00-08:00")], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "fri: closes at 08:00 which is not after it opens at 18:00"
        );
    }

    #[test]
    fn rejects_malformed_holiday() {
        for bad in ["2025-13-01", "2025-02-30", "christmas", "25/12/2025"] {
            let err = BusinessHours::parse("UTC", &[], &[bad]).unwrap_err();
            assert!(
                matches!(&err, HoursError::BadHoliday { value, .. } if value == bad),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn gate_covers_every_combination() {
        let open = BusinessHours::always();
        let closed = BusinessHours::parse("UTC", &[], &[]).unwrap();
        let now = ts("2025-06-02T15:00:00Z");
        use GateDecision::{Offer, Unavailable};
        let cases = [
            // (registration, launch, hours open) → decision
            (false, false, false, Unavailable),
            (false, false, true, Unavailable),
            (false, true, false, Unavailable),
            (false, true, true, Unavailable),
            (true, false, false, Unavailable),
            (
                true,
                false,
                true,
                Offer {
                    announce_ecbt: false,
                },
            ),
            (true, true, false, Unavailable),
            (
                true,
                true,
                true,
                Offer {
                    announce_ecbt: true,
                },
            ),
        ];
        for (registration_enabled, launch_enabled, is_open, want) in cases {
            let gates = Gates {
                registration_enabled,
                launch_enabled,
            };
            let hours = if is_open { &open } else { &closed };
            assert_eq!(
                registration_gate(&gates, hours, None, now),
                want,
                "{gates:?} open={is_open}"
            );
        }
    }

    #[test]
    fn queue_override_wins_over_org_hours() {
        let gates = Gates {
            registration_enabled: true,
            launch_enabled: true,
        };
        let org = weekdays_only();
        let saturday_queue =
            BusinessHours::parse("America/Chicago", &[("sat", "09:00-13:00")], &[]).unwrap();
        let saturday = ts("2025-06-07T15:00:00Z"); // 10:00 CDT
        let monday = ts("2025-06-09T15:00:00Z"); // 10:00 CDT
        assert_eq!(
            registration_gate(&gates, &org, None, saturday),
            GateDecision::Unavailable
        );
        assert_eq!(
            registration_gate(&gates, &org, Some(&saturday_queue), saturday),
            GateDecision::Offer {
                announce_ecbt: true
            }
        );
        assert_eq!(
            registration_gate(&gates, &org, None, monday),
            GateDecision::Offer {
                announce_ecbt: true
            }
        );
        assert_eq!(
            registration_gate(&gates, &org, Some(&saturday_queue), monday),
            GateDecision::Unavailable
        );
    }
}
