//! The customer's time zone, from the number, and the legal calling window.
//!
//! [`zones_of`] maps a callback number to the IANA zones its prefix covers,
//! by longest-prefix match on libphonenumber's time-zone map
//! (`timezone/map_data.txt`, shipped in the repository with its origin in
//! its header; `scripts/update-timezones` refreshes it by hand). NANP
//! numbers are looked up as `1` + the ten digits, so an exchange-level
//! entry (`1208201`) wins over its area code (`1208`). Outside NANP the map
//! sometimes names a zone that shares the country's offset but not
//! necessarily its DST rules (Algeria, `213`, is `Europe/Paris`); that is
//! the upstream data's choice and is kept as is.
//!
//! [`CallingWindow`] is the local time of day inside which a customer may
//! be called (default 08:00–21:00). A number whose prefix covers several
//! zones (an area code across a zone line) is called only when the window
//! is open in **every** one of them, so a call is never placed outside the
//! window wherever the customer actually is.
//!
//! Pure: no clock, no IO. The map is parsed once, on first use.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use jiff::civil::Time;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan};
use thiserror::Error;

use crate::callback::hours::parse_hh_mm;
use crate::domain::number::PhoneNumber;

/// How far past the instant asked about [`CallingWindow::earliest`] looks
/// for a moment legal in every zone, in days.
pub const EARLIEST_HORIZON_DAYS: i64 = 8;

/// The zones a number's prefix covers, with their IANA names (for records
/// and display), in the map's order.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerZones {
    prefix: &'static str,
    names: Vec<Cow<'static, str>>,
    zones: Vec<TimeZone>,
}

impl CustomerZones {
    /// Zones given by IANA name: a rule's fallback zone, or the zones
    /// stored with a task. `None` when the list is empty or a name is not
    /// a zone. The prefix is empty (no number said it).
    pub fn from_names(names: &[&str]) -> Option<CustomerZones> {
        if names.is_empty() {
            return None;
        }
        let zones = names
            .iter()
            .map(|n| TimeZone::get(n).ok())
            .collect::<Option<Vec<_>>>()?;
        Some(CustomerZones {
            prefix: "",
            names: names.iter().map(|n| Cow::Owned((*n).to_owned())).collect(),
            zones,
        })
    }

    /// One zone (the contact center's own, for a number whose zone the map
    /// does not know), named by its IANA name (`UTC` for a fixed offset).
    pub fn of_zone(zone: TimeZone) -> CustomerZones {
        let name = zone.iana_name().unwrap_or("UTC").to_owned();
        CustomerZones {
            prefix: "",
            names: vec![Cow::Owned(name)],
            zones: vec![zone],
        }
    }

    /// The IANA names, e.g. `["America/Chicago"]`.
    pub fn names(&self) -> &[Cow<'static, str>] {
        &self.names
    }

    /// The zones, in the same order as [`CustomerZones::names`].
    pub fn zones(&self) -> &[TimeZone] {
        &self.zones
    }

    /// The map prefix that matched, country calling code first
    /// (`"1312"`, `"44"`).
    pub fn prefix(&self) -> &'static str {
        self.prefix
    }
}

/// The names joined by `&`, as the map writes them:
/// `America/Denver&America/North_Dakota/Center`.
impl fmt::Display for CustomerZones {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.names.iter().map(|n| n.as_ref()).collect();
        f.write_str(&names.join("&"))
    }
}

/// The customer's zones, by the longest prefix of the number in the map;
/// `None` if the number's zone is unknown: no prefix matches, the entry
/// holds only libphonenumber's unknown marker, or the number matches only
/// NANP's country-wide `1` entry (an area code the map does not know;
/// that entry lists every NANP zone from Guam to Newfoundland, so it says
/// nothing about the customer).
pub fn zones_of(number: &PhoneNumber) -> Option<CustomerZones> {
    let key = match number {
        PhoneNumber::National { digits } => {
            let mut key = String::with_capacity(11);
            key.push('1');
            key.extend(digits.iter().map(|&d| char::from(d)));
            key
        }
        PhoneNumber::International { digits } => digits.to_string(),
    };
    let map = &*MAP;
    let longest = key.len().min(map.longest);
    let entry = (1..=longest).rev().find_map(|len| {
        let prefix = key.get(..len)?;
        if prefix == NANP_COUNTRY_WIDE {
            return None;
        }
        map.entries.get(prefix)
    })?;
    // A matching entry with no usable zone is the answer "unknown"; a
    // shorter prefix would only guess.
    if entry.zones.is_empty() {
        return None;
    }
    Some(CustomerZones {
        prefix: entry.prefix,
        names: entry.names.iter().map(|n| Cow::Borrowed(*n)).collect(),
        zones: entry.zones.clone(),
    })
}

/// The local time of day inside which a customer may be called: from
/// `start` (inclusive) to `end` (exclusive), the same every day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingWindow {
    start: Time,
    /// [`Time::MAX`] stands for `24:00` (until midnight), as in
    /// [`crate::callback::hours::BusinessHours`].
    end: Time,
}

impl Default for CallingWindow {
    /// 08:00–21:00.
    fn default() -> Self {
        CallingWindow {
            start: Time::constant(8, 0, 0, 0),
            end: Time::constant(21, 0, 0, 0),
        }
    }
}

impl CallingWindow {
    /// Parses configuration text `HH:MM-HH:MM` (24-hour clock, `H:MM`
    /// allowed, spaces around the times ignored). The end may be `24:00`
    /// (until midnight) and must be after the start; windows across
    /// midnight are refused.
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let malformed = || WindowError::Malformed {
            text: text.to_owned(),
        };
        let (start_text, end_text) = text.trim().split_once('-').ok_or_else(malformed)?;
        let (start_h, start_m) = parse_hh_mm(start_text.trim()).ok_or_else(malformed)?;
        let (end_h, end_m) = parse_hh_mm(end_text.trim()).ok_or_else(malformed)?;
        if start_h == 24 {
            return Err(malformed());
        }
        let start = Time::new(start_h, start_m, 0, 0).map_err(|_| malformed())?;
        let end = match (end_h, end_m) {
            (24, 0) => Time::MAX,
            (24, _) => return Err(malformed()),
            (h, m) => Time::new(h, m, 0, 0).map_err(|_| malformed())?,
        };
        if end <= start {
            return Err(WindowError::EndNotAfterStart {
                text: text.to_owned(),
            });
        }
        Ok(CallingWindow { start, end })
    }

    /// The local time the window opens.
    pub fn start(&self) -> Time {
        self.start
    }

    /// The local time the window closes; [`Time::MAX`] means midnight
    /// (`24:00`).
    pub fn end(&self) -> Time {
        self.end
    }

    /// True if the local time at `at` is inside the window in every zone
    /// of `zones`; false for no zones (an unknown place is never legal).
    pub fn contains(&self, zones: &[TimeZone], at: Timestamp) -> bool {
        !zones.is_empty() && zones.iter().all(|tz| self.contains_in(tz, at))
    }

    /// The earliest instant at or after `at` at which the local time is
    /// inside the window in **every** zone of `zones` (an area code that
    /// spans two zones is called only when it is legal in both): `at`
    /// itself if it is legal now. `None` if there is no such instant within
    /// [`EARLIEST_HORIZON_DAYS`] (the windows of zones far apart never
    /// overlap) or `zones` is empty.
    ///
    /// Local times follow each zone's DST changes: a start that does not
    /// exist that day (clocks jumped over it) opens when the clocks jump;
    /// one that occurs twice opens at its first occurrence and, if the
    /// clocks went back to before it, again at its second.
    pub fn earliest(&self, zones: &[TimeZone], at: Timestamp) -> Option<Timestamp> {
        if zones.is_empty() {
            return None;
        }
        let limit = at.checked_add(horizon()).ok()?;
        // Every candidate is at or before the answer: a zone closed at `t`
        // opens next at or before any later instant it is open at. So the
        // latest of the zones' next openings is the next candidate, and a
        // candidate every zone is open at is the answer. Openings are a few
        // a day per zone, so this ends within the horizon.
        let mut t = at;
        while t <= limit {
            let mut latest = t;
            for tz in zones {
                latest = latest.max(self.next_open_in(tz, t)?);
            }
            if latest == t {
                return Some(t);
            }
            t = latest;
        }
        None
    }

    /// Whether the local time in `tz` at `at` is in `[start, end)`.
    fn contains_in(&self, tz: &TimeZone, at: Timestamp) -> bool {
        let t = tz.to_datetime(at).time();
        self.start <= t && (t < self.end || self.end == Time::MAX)
    }

    /// The first instant at or after `at` inside the window in `tz`, within
    /// the horizon.
    ///
    /// Not [`crate::callback::hours::BusinessHours::next_open`]: that skips a window whose start
    /// passed before `at` on the same local date, but after clocks go back
    /// the local time can reach the start a second time that date (a window
    /// opening at 01:30 opens at 01:30 CDT and again at 01:30 CST).
    /// Closed turns to open only where the local time reaches `start`
    /// (once a day, twice in a fold, never in a gap) or where it jumps (a
    /// zone transition: clocks jumped over `start`, or went back into the
    /// window), so those instants are the candidates.
    fn next_open_in(&self, tz: &TimeZone, at: Timestamp) -> Option<Timestamp> {
        if self.contains_in(tz, at) {
            return Some(at);
        }
        let limit = at.checked_add(horizon()).ok()?;
        let today = tz.to_datetime(at).date();
        let starts = (0..=EARLIEST_HORIZON_DAYS as i32 + 1)
            .filter_map(|days| today.checked_add(days.days()).ok())
            .flat_map(|date| {
                let dt = date.to_datetime(self.start);
                match tz.to_ambiguous_timestamp(dt).offset() {
                    AmbiguousOffset::Unambiguous { offset } => [offset.to_timestamp(dt).ok(), None],
                    AmbiguousOffset::Fold { before, after } => {
                        [before.to_timestamp(dt).ok(), after.to_timestamp(dt).ok()]
                    }
                    AmbiguousOffset::Gap { .. } => [None, None],
                }
            })
            .flatten();
        let jumps = tz
            .following(at)
            .map(|transition| transition.timestamp())
            .take_while(|&t| t <= limit);
        starts
            .chain(jumps)
            .filter(|&t| t > at && t <= limit && self.contains_in(tz, t))
            .min()
    }
}

/// [`EARLIEST_HORIZON_DAYS`] as a duration.
fn horizon() -> SignedDuration {
    SignedDuration::from_hours(24 * EARLIEST_HORIZON_DAYS)
}

/// `HH:MM-HH:MM`, the form [`CallingWindow::parse`] reads.
impl fmt::Display for CallingWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hh_mm = |t: Time| {
            if t == Time::MAX {
                (24, 0)
            } else {
                (t.hour(), t.minute())
            }
        };
        let (sh, sm) = hh_mm(self.start);
        let (eh, em) = hh_mm(self.end);
        write!(f, "{sh:02}:{sm:02}-{eh:02}:{em:02}")
    }
}

/// Errors in a configured calling window (local faults: the config).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WindowError {
    /// Not `HH:MM-HH:MM` with valid times.
    #[error("calling window {text:?} is not HH:MM-HH:MM (24-hour clock, end up to 24:00)")]
    Malformed {
        /// The window as configured.
        text: String,
    },
    /// The end is at or before the start.
    #[error(
        "calling window {text:?} does not end after it starts (windows across midnight are not supported)"
    )]
    EndNotAfterStart {
        /// The window as configured.
        text: String,
    },
}

/// The map's entry for every NANP number, listing all NANP zones; never
/// an answer for a number (see [`zones_of`]).
const NANP_COUNTRY_WIDE: &str = "1";

/// libphonenumber's name for "zone unknown" (`Etc/Unknown`); not a zone.
const UNKNOWN_ZONE: &str = "Etc/Unknown";

/// The shipped map, parsed on first use.
static MAP: LazyLock<ZoneMap> =
    LazyLock::new(|| ZoneMap::parse(include_str!("timezone/map_data.txt")));

/// The prefix → zones map.
struct ZoneMap {
    entries: HashMap<&'static str, Entry>,
    /// The longest prefix, in digits.
    longest: usize,
    /// Zone names jiff does not know, left out of their entries.
    unresolved: Vec<&'static str>,
    /// Lines that are not `digits|Zone&Zone…`, skipped.
    malformed: Vec<&'static str>,
}

/// One prefix's zones, without [`UNKNOWN_ZONE`] and unresolved names.
struct Entry {
    prefix: &'static str,
    names: Vec<&'static str>,
    zones: Vec<TimeZone>,
}

impl ZoneMap {
    /// Reads `prefix|Zone1&Zone2…` lines; `#` comments and blank lines are
    /// skipped. Never fails: a bad line or zone name is left out and
    /// counted (a unit test requires none).
    fn parse(text: &'static str) -> ZoneMap {
        let mut map = ZoneMap {
            entries: HashMap::new(),
            longest: 0,
            unresolved: Vec::new(),
            malformed: Vec::new(),
        };
        let mut resolved: HashMap<&'static str, Option<TimeZone>> = HashMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((prefix, zone_list)) = line.split_once('|') else {
                map.malformed.push(line);
                continue;
            };
            let names: Vec<&'static str> = zone_list.split('&').map(str::trim).collect();
            if prefix.is_empty()
                || !prefix.bytes().all(|b| b.is_ascii_digit())
                || names.iter().any(|name| name.is_empty())
                || map.entries.contains_key(prefix)
            {
                map.malformed.push(line);
                continue;
            }
            let mut entry = Entry {
                prefix,
                names: Vec::with_capacity(names.len()),
                zones: Vec::with_capacity(names.len()),
            };
            for name in names {
                if name == UNKNOWN_ZONE {
                    continue;
                }
                let tz = resolved
                    .entry(name)
                    .or_insert_with(|| TimeZone::get(name).ok());
                match tz {
                    Some(tz) => {
                        entry.names.push(name);
                        entry.zones.push(tz.clone());
                    }
                    None => map.unresolved.push(name),
                }
            }
            map.longest = map.longest.max(prefix.len());
            map.entries.insert(prefix, entry);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn nanp(ten: &str) -> PhoneNumber {
        let digits: [u8; 10] = ten.as_bytes().try_into().expect("ten digits");
        PhoneNumber::National { digits }
    }

    fn international(digits: &str) -> PhoneNumber {
        PhoneNumber::International {
            digits: digits.into(),
        }
    }

    fn names_of(number: &PhoneNumber) -> Vec<String> {
        zones_of(number)
            .unwrap_or_else(|| panic!("{number:?} has zones"))
            .names()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).expect("test zone")
    }

    fn window(text: &str) -> CallingWindow {
        CallingWindow::parse(text).expect("test window")
    }

    #[test]
    fn every_line_and_zone_name_of_the_shipped_map_is_usable() {
        let map = &*MAP;
        assert_eq!(map.malformed, Vec::<&str>::new());
        assert_eq!(map.unresolved, Vec::<&str>::new());
        // The whole map (all countries) is shipped: more than three
        // thousand prefixes, NANP and others.
        assert!(map.entries.len() > 3000, "{}", map.entries.len());
        assert!(map.entries.contains_key("1201"));
        assert!(map.entries.contains_key("44"));
        assert!(map.entries.values().all(|e| !e.zones.is_empty()));
        assert!(map.entries.values().all(|e| e.names.len() == e.zones.len()));
    }

    #[test]
    fn parse_leaves_out_bad_lines_unknown_markers_and_unresolved_names() {
        let map = ZoneMap::parse(
            "# comment\n\n\
             1312|America/Chicago\n\
             99|Etc/Unknown\n\
             98|America/Gotham&Europe/London\n\
             x1|Europe/Paris\n\
             97\n\
             96|\n\
             1312|Europe/Paris\n",
        );
        assert_eq!(map.entries["1312"].names, ["America/Chicago"]);
        assert!(map.entries["99"].zones.is_empty());
        assert_eq!(map.entries["98"].names, ["Europe/London"]);
        assert_eq!(map.unresolved, ["America/Gotham"]);
        assert_eq!(
            map.malformed,
            ["x1|Europe/Paris", "97", "96|", "1312|Europe/Paris"]
        );
        assert_eq!(map.longest, 4);
    }

    #[test]
    fn us_area_codes_map_to_their_zones() {
        for (number, zone) in [
            ("2125550100", "America/New_York"),
            ("3125550188", "America/Chicago"),
            ("3035550100", "America/Denver"),
            ("2135550100", "America/Los_Angeles"),
            ("6025550100", "America/Phoenix"),
            ("8085550100", "Pacific/Honolulu"),
        ] {
            let zones = zones_of(&nanp(number)).expect(number);
            assert_eq!(zones.names(), [zone], "{number}");
            assert_eq!(zones.zones(), [tz(zone)], "{number}");
            assert_eq!(zones.prefix(), format!("1{}", &number[..3]), "{number}");
            assert_eq!(zones.to_string(), zone);
        }
    }

    #[test]
    fn alaska_area_code_spans_two_zones_and_an_exchange_entry_wins() {
        // 907 is Alaska: Anchorage time and, on the Aleutians, Adak time.
        let alaska = zones_of(&nanp("9075550100")).expect("the map knows this number");
        assert_eq!(alaska.names(), ["America/Adak", "America/Anchorage"]);
        assert_eq!(alaska.to_string(), "America/Adak&America/Anchorage");
        // An exchange listed on its own (907-209) is Juneau only.
        assert_eq!(names_of(&nanp("9072090100")), ["America/Juneau"]);
    }

    #[test]
    fn area_code_across_a_zone_line_gives_both_zones() {
        // South Dakota: Mountain and Central time.
        let sd = zones_of(&nanp("6055550100")).expect("the map knows this number");
        assert_eq!(sd.prefix(), "1605");
        assert_eq!(sd.to_string(), "America/Denver&America/North_Dakota/Center");
        // 605-201 is listed as Central only.
        assert_eq!(names_of(&nanp("6052010100")), ["America/Chicago"]);
    }

    #[test]
    fn international_number_maps_by_country_prefix() {
        // 011 44 20 7946 0000, a London number.
        let uk = zones_of(&international("442079460000")).expect("the map knows this number");
        assert_eq!(uk.prefix(), "442");
        assert_eq!(uk.names(), ["Europe/London"]);
        assert_eq!(names_of(&international("33142685300")), ["Europe/Paris"]);
    }

    #[test]
    fn unknown_prefix_has_no_zone() {
        // 882 (international networks) is not in the map.
        assert_eq!(zones_of(&international("8821234567")), None);
        // NANP area code 999 is not assigned: only the country-wide `1`
        // entry matches, which does not count.
        assert_eq!(zones_of(&nanp("9995550100")), None);
    }

    #[test]
    fn window_parses_prints_and_defaults() {
        let w = CallingWindow::default();
        assert_eq!(w.to_string(), "08:00-21:00");
        assert_eq!(CallingWindow::parse("08:00-21:00"), Ok(w));
        assert_eq!(w.start(), Time::constant(8, 0, 0, 0));
        assert_eq!(w.end(), Time::constant(21, 0, 0, 0));
        assert_eq!(window(" 9:30 - 17:45 ").to_string(), "09:30-17:45");
        let all_day = window("00:00-24:00");
        assert_eq!(all_day.end(), Time::MAX);
        assert_eq!(all_day.to_string(), "00:00-24:00");
        assert_eq!(CallingWindow::parse(&all_day.to_string()), Ok(all_day));
    }

    #[test]
    fn rejects_malformed_windows() {
        for text in [
            "",
            "08:00",
            "08:00-",
            "-21:00",
            "8-21",
            "0800-2100",
            "08:00-21:00-22:00",
            "08:60-21:00",
            "08:00-21:5",
            "08:00-21:000",
            "123:00-21:00",
            "25:00-26:00",
            "24:00-24:00",
            "08:00-24:30",
            "08:00-25:00",
            "-1:00-08:00",
            "+8:00-21:00",
            "08.00-21.00",
            "08:00:00-21:00:00",
            "always",
        ] {
            assert_eq!(
                CallingWindow::parse(text),
                Err(WindowError::Malformed { text: text.into() }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn rejects_window_that_does_not_end_after_it_starts() {
        for text in ["21:00-08:00", "08:00-08:00", "22:00-06:00", "00:00-00:00"] {
            assert_eq!(
                CallingWindow::parse(text),
                Err(WindowError::EndNotAfterStart { text: text.into() }),
                "{text:?}"
            );
        }
        assert_eq!(
            CallingWindow::parse("21:00-08:00").unwrap_err().to_string(),
            "calling window \"21:00-08:00\" does not end after it starts \
             (windows across midnight are not supported)"
        );
    }

    #[test]
    fn chicago_number_at_night_is_called_at_eight_next_morning() {
        let zones = zones_of(&nanp("3125550188")).expect("the map knows this number");
        let w = CallingWindow::default();
        // Tuesday 2025-06-10 22:00 CDT (UTC-5) → Wednesday 08:00 CDT.
        let night = ts("2025-06-11T03:00:00Z");
        assert!(!w.contains(zones.zones(), night));
        assert_eq!(
            w.earliest(zones.zones(), night),
            Some(ts("2025-06-11T13:00:00Z"))
        );
        // 21:00 is already outside; 20:59:59 is inside.
        assert!(!w.contains(zones.zones(), ts("2025-06-11T02:00:00Z")));
        assert!(w.contains(zones.zones(), ts("2025-06-11T01:59:59Z")));
    }

    #[test]
    fn chicago_number_just_before_eight_waits_for_eight() {
        let zones = zones_of(&nanp("3125550188")).expect("the map knows this number");
        let w = CallingWindow::default();
        // 07:59 CDT → 08:00 CDT the same day.
        assert_eq!(
            w.earliest(zones.zones(), ts("2025-06-10T12:59:00Z")),
            Some(ts("2025-06-10T13:00:00Z"))
        );
    }

    #[test]
    fn inside_the_window_is_now() {
        let zones = zones_of(&nanp("3125550188")).expect("the map knows this number");
        let w = CallingWindow::default();
        for at in [
            "2025-06-10T13:00:00Z",     // 08:00 CDT
            "2025-06-10T17:00:00.123Z", // noon
            "2025-06-11T01:59:59.999Z", // 20:59:59.999
        ] {
            assert!(w.contains(zones.zones(), ts(at)), "{at}");
            assert_eq!(w.earliest(zones.zones(), ts(at)), Some(ts(at)), "{at}");
        }
    }

    #[test]
    fn window_follows_local_time_in_each_us_zone() {
        let w = CallingWindow::default();
        // 08:00 local on 2025-01-15 (winter) and 2025-07-15 (summer), from
        // 09:00Z the same day (night everywhere in the US).
        for (number, winter, summer) in [
            ("2125550100", "13:00", "12:00"), // New York, UTC-5/-4
            ("3125550188", "14:00", "13:00"), // Chicago, UTC-6/-5
            ("3035550100", "15:00", "14:00"), // Denver, UTC-7/-6
            ("2135550100", "16:00", "15:00"), // Los Angeles, UTC-8/-7
            ("6025550100", "15:00", "15:00"), // Phoenix, UTC-7, no DST
            ("8085550100", "18:00", "18:00"), // Honolulu, UTC-10, no DST
        ] {
            let zones = zones_of(&nanp(number)).expect("the map knows this number");
            for (date, want) in [("2025-01-15", winter), ("2025-07-15", summer)] {
                assert_eq!(
                    w.earliest(zones.zones(), ts(&format!("{date}T09:00:00Z"))),
                    Some(ts(&format!("{date}T{want}:00Z"))),
                    "{number} {date}"
                );
            }
        }
    }

    #[test]
    fn window_across_spring_forward() {
        let chicago = [tz("America/Chicago")];
        let w = CallingWindow::default();
        // Saturday 2025-03-08 22:00 CST (UTC-6); clocks go to CDT (UTC-5) at
        // 02:00 on Sunday: 08:00 CDT = 13:00Z, not 14:00Z.
        assert_eq!(
            w.earliest(&chicago, ts("2025-03-09T04:00:00Z")),
            Some(ts("2025-03-09T13:00:00Z"))
        );
        // A window starting at 02:30, a time that does not exist that day,
        // opens when the clocks jump (08:00Z, 03:00 CDT).
        let w = window("02:30-21:00");
        assert_eq!(
            w.earliest(&chicago, ts("2025-03-09T06:00:00Z")),
            Some(ts("2025-03-09T08:00:00Z"))
        );
        assert!(!w.contains(&chicago, ts("2025-03-09T07:59:59Z")));
        assert!(w.contains(&chicago, ts("2025-03-09T08:00:00Z")));
    }

    #[test]
    fn window_across_fall_back() {
        let chicago = [tz("America/Chicago")];
        let w = CallingWindow::default();
        // Saturday 2025-11-01 22:00 CDT (UTC-5); clocks go back to CST
        // (UTC-6) at 02:00 on Sunday: 08:00 CST = 14:00Z.
        assert_eq!(
            w.earliest(&chicago, ts("2025-11-02T03:00:00Z")),
            Some(ts("2025-11-02T14:00:00Z"))
        );
        // 01:30 happens twice (06:30Z CDT, 07:30Z CST): a window opening at
        // 01:30 opens at the first. The repeated 01:00–01:30 after it is
        // local time before the window again: not legal.
        let w = window("01:30-21:00");
        assert_eq!(
            w.earliest(&chicago, ts("2025-11-02T05:00:00Z")),
            Some(ts("2025-11-02T06:30:00Z"))
        );
        assert!(w.contains(&chicago, ts("2025-11-02T06:45:00Z")));
        assert!(!w.contains(&chicago, ts("2025-11-02T07:15:00Z")));
        assert_eq!(
            w.earliest(&chicago, ts("2025-11-02T07:15:00Z")),
            Some(ts("2025-11-02T07:30:00Z"))
        );
    }

    #[test]
    fn window_entered_when_clocks_go_back_into_it() {
        // 00:30–01:30 in Chicago on 2025-11-02: 01:59 CDT (06:59Z) is
        // outside; at 07:00Z the clocks go back to 01:00 CST, inside.
        let chicago = [tz("America/Chicago")];
        let w = window("00:30-01:30");
        assert!(!w.contains(&chicago, ts("2025-11-02T06:59:00Z")));
        assert_eq!(
            w.earliest(&chicago, ts("2025-11-02T06:45:00Z")),
            Some(ts("2025-11-02T07:00:00Z"))
        );
    }

    /// `earliest` against a minute-by-minute scan, for windows and zone sets
    /// around both 2025 DST changes (US, Europe, Lord Howe's half hour):
    /// every boundary here falls on a whole minute, so the scan is exact.
    #[test]
    fn earliest_agrees_with_a_minute_by_minute_scan() {
        let sets: [&[&str]; 6] = [
            &["America/Chicago"],
            &["America/Denver", "America/North_Dakota/Center"],
            &["America/Adak", "America/Anchorage"],
            &["Europe/London", "Asia/Tokyo"],
            &["Australia/Lord_Howe"],
            &["America/Phoenix", "America/Los_Angeles"],
        ];
        let windows = [
            "08:00-21:00",
            "01:30-21:00",
            "00:30-01:30",
            "02:30-02:45",
            "20:00-24:00",
            "09:00-12:00",
            "00:00-24:00",
        ];
        let starts = [
            "2025-03-08T20:00:00Z",
            "2025-03-09T07:30:00Z",
            "2025-03-30T00:17:00Z",
            "2025-04-05T14:00:00Z",
            "2025-10-04T15:29:00Z",
            "2025-10-26T00:59:00Z",
            "2025-11-02T06:45:00Z",
            "2025-11-02T07:15:00Z",
        ];
        let minute = SignedDuration::from_mins(1);
        for set in sets {
            let zones: Vec<TimeZone> = set.iter().map(|name| tz(name)).collect();
            for text in windows {
                let w = window(text);
                for start in starts {
                    let at = ts(start);
                    let limit = at
                        .checked_add(horizon())
                        .expect("inside the representable range");
                    let mut scan = at;
                    while scan <= limit && !w.contains(&zones, scan) {
                        scan = scan
                            .checked_add(minute)
                            .expect("inside the representable range");
                    }
                    let want = (scan <= limit).then_some(scan);
                    assert_eq!(w.earliest(&zones, at), want, "{set:?} {text} {start}");
                }
            }
        }
    }

    #[test]
    fn two_zone_number_is_called_only_when_legal_in_both() {
        // South Dakota, Mountain (Denver) and Central, summer: UTC-6 and
        // UTC-5. Legal in both from 08:00 MDT (14:00Z) to 21:00 CDT (02:00Z).
        let zones = zones_of(&nanp("6055550100")).expect("the map knows this number");
        let w = CallingWindow::default();
        // 08:30 CDT = 07:30 MDT → 08:00 MDT.
        assert_eq!(
            w.earliest(zones.zones(), ts("2025-06-10T13:30:00Z")),
            Some(ts("2025-06-10T14:00:00Z"))
        );
        assert!(!w.contains(zones.zones(), ts("2025-06-10T13:30:00Z")));
        assert!(w.contains(zones.zones(), ts("2025-06-11T01:59:00Z")));
        // 21:00 CDT = 20:00 MDT: closed in Central → 08:00 MDT next day.
        assert!(!w.contains(zones.zones(), ts("2025-06-11T02:00:00Z")));
        assert_eq!(
            w.earliest(zones.zones(), ts("2025-06-11T02:00:00Z")),
            Some(ts("2025-06-11T14:00:00Z"))
        );
        // Alaska (Adak UTC-9 and Anchorage UTC-8 in summer): 08:00 in Adak
        // is 09:00 in Anchorage.
        let alaska = zones_of(&nanp("9075550100")).expect("the map knows this number");
        assert_eq!(
            w.earliest(alaska.zones(), ts("2025-06-10T10:00:00Z")),
            Some(ts("2025-06-10T17:00:00Z"))
        );
    }

    #[test]
    fn windows_that_never_overlap_give_none() {
        // 09:00–12:00 in London (UTC+0 in January) and Tokyo (UTC+9) never
        // meet: 09:00–12:00Z against 00:00–03:00Z.
        let zones = [tz("Europe/London"), tz("Asia/Tokyo")];
        let w = window("09:00-12:00");
        assert!(!w.contains(&zones, ts("2025-01-15T10:00:00Z")));
        assert_eq!(w.earliest(&zones, ts("2025-01-15T10:00:00Z")), None);
        // The default window does overlap there: 08:00 London (08:00Z) is
        // 17:00 in Tokyo.
        assert_eq!(
            CallingWindow::default().earliest(&zones, ts("2025-01-15T00:00:00Z")),
            Some(ts("2025-01-15T08:00:00Z"))
        );
    }

    #[test]
    fn no_zones_is_never_legal() {
        let w = CallingWindow::default();
        let at = ts("2025-06-10T17:00:00Z");
        assert!(!w.contains(&[], at));
        assert_eq!(w.earliest(&[], at), None);
    }

    #[test]
    fn window_until_midnight() {
        let w = window("20:00-24:00");
        let chicago = [tz("America/Chicago")];
        // 23:59:59 CDT is inside; midnight is not.
        assert!(w.contains(&chicago, ts("2025-06-11T04:59:59Z")));
        assert!(!w.contains(&chicago, ts("2025-06-11T05:00:00Z")));
        assert_eq!(
            w.earliest(&chicago, ts("2025-06-11T04:59:00Z")),
            Some(ts("2025-06-11T04:59:00Z"))
        );
        // 00:00 CDT → 20:00 CDT that day.
        assert_eq!(
            w.earliest(&chicago, ts("2025-06-11T05:00:00Z")),
            Some(ts("2025-06-12T01:00:00Z"))
        );
    }
}
