//! One call's DTMF digits, merged from the three ways they can arrive.
//!
//! - **RFC 4733** telephone-events in RTP, already counted once per event by
//!   [`DtmfReceiver`](crate::media::dtmf::DtmfReceiver);
//! - **SIP INFO** (RFC 6086) with an `application/dtmf-relay` or
//!   `application/dtmf` body, read by [`parse_info_digit`];
//! - **in-band** tones in the G.711 audio, found by
//!   [`InbandDetector`](crate::media::inband::InbandDetector).
//!
//! Some peers send one key press both as RFC 4733 and as INFO (Cisco's
//! "rtp-nte sip-info", some SBCs), and with no telephone-event negotiated the
//! in-band tones may come with INFO. [`DigitMerger`] turns that back into one
//! digit per key press, and still counts a key pressed twice as two digits.

// std
use std::time::{Duration, Instant};

// external
use thiserror::Error;

// crate
use crate::media::dtmf::DtmfDigit;

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DigitSource {
    /// An RFC 4733 telephone-event (the first packet of a new event).
    Rfc4733,
    /// A SIP INFO request (`application/dtmf-relay` or `application/dtmf`).
    Info,
    /// In-band tones detected in the audio.
    Inband,
}

impl DigitSource {
    const ALL: usize = 3;

    /// The name used in logs and metric labels: `rfc4733`, `info`, `inband`.
    pub fn as_str(self) -> &'static str {
        match self {
            DigitSource::Rfc4733 => "rfc4733",
            DigitSource::Info => "info",
            DigitSource::Inband => "inband",
        }
    }

    const fn index(self) -> usize {
        match self {
            DigitSource::Rfc4733 => 0,
            DigitSource::Info => 1,
            DigitSource::Inband => 2,
        }
    }
}

/// Counters for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergerStats {
    /// Digits passed on.
    pub digits: u64,
    /// Digits dropped as another source's copy of a key press already passed on.
    pub duplicates: u64,
    /// In-band digits ignored because RFC 4733 is in use on the call.
    pub inband_ignored: u64,
}

/// Merges one call's digits from RFC 4733, SIP INFO and in-band detection
/// into one digit per key press (sans-IO: time comes in as `now`).
///
/// # The rule
///
/// A digit is passed on at once, from whichever source reports it first, and
/// remembered. A later digit from *another* source is that same key press,
/// and dropped, when it pairs with a remembered digit:
///
/// - same key;
/// - not yet paired with a digit of this source;
/// - reported within [`DigitMerger::DEFAULT_WINDOW`] (500 ms, configurable)
///   before it;
/// - **in order**: after the last remembered digit this source itself
///   reported or paired with. Of the digits that qualify, the oldest is taken.
///
/// Each source delivers its own digits in key-press order (RTP events by
/// timestamp, INFO requests one after another in the dialog), so pairing
/// is an in-order alignment of two sequences: the second INFO `5` belongs to
/// the second RFC 4733 `5`. That is why a key pressed twice in quick
/// succession still counts twice — each press is a separate remembered digit
/// that takes exactly one partner per source — and why the pairing is not
/// "the nearest in time": with INFO lagging 180 ms behind presses 150 ms
/// apart (RTP `5`@0, RTP `5`@150, INFO `5`@180, INFO `5`@330), the nearest
/// pairs the first INFO with the second press, and the second INFO, which
/// may not go back to the first press, would count a third `5`. The oldest
/// unpaired one pairs them right.
///
/// The window only bounds how long a digit waits for its partner: INFO
/// travels the signalling path (proxies, SBCs) and typically arrives within
/// tens of milliseconds of the RTP event's first packet, a few hundred at
/// worst; 500 ms covers that with margin, and being one-to-one the pairing
/// does not eat genuine repeats faster than the window. Past it, a digit from
/// a peer that sends the second source only now and then counts on its own.
///
/// # In-band after RFC 4733
///
/// Once RFC 4733 has delivered a digit on the call, in-band results are
/// ignored: the audio then carries the same tones as the events (or
/// whatever the sender's suppression left of them), and a second, noisier
/// detector can only add false or double digits.
///
/// # Memory
///
/// A fixed table of the last [`DigitMerger::MEMORY`] digits passed on;
/// nothing grows per digit.
#[derive(Debug, Clone)]
pub struct DigitMerger {
    window: Duration,
    recent: [Option<Passed>; DigitMerger::MEMORY],
    next_seq: u64,
    /// Per source: sequence number of the last remembered digit it reported
    /// or paired with; its next digit may only pair after it. This alone
    /// makes the pairing one-to-one: a digit a source has reported or paired
    /// with is never after that source's cursor.
    cursor: [Option<u64>; DigitSource::ALL],
    rfc4733_seen: bool,
    stats: MergerStats,
}

impl Default for DigitMerger {
    fn default() -> Self {
        Self::new()
    }
}

impl DigitMerger {
    /// How long a digit waits for its copy from another source.
    pub const DEFAULT_WINDOW: Duration = Duration::from_millis(500);

    /// Digits remembered: more than can be keyed inside any sane window.
    pub const MEMORY: usize = 16;

    /// A merger with the default window.
    pub fn new() -> Self {
        Self::with_window(Self::DEFAULT_WINDOW)
    }

    /// A merger whose copies must arrive within `window` of the first report.
    pub fn with_window(window: Duration) -> Self {
        DigitMerger {
            window,
            recent: [None; DigitMerger::MEMORY],
            next_seq: 0,
            cursor: [None; DigitSource::ALL],
            rfc4733_seen: false,
            stats: MergerStats::default(),
        }
    }

    /// Takes a digit from `source` received at `now`; returns its key if it
    /// is a new key press, `None` if it is a copy of one already passed on
    /// (or an in-band digit on a call that uses RFC 4733).
    pub fn push(&mut self, now: Instant, source: DigitSource, digit: DtmfDigit) -> Option<char> {
        match source {
            DigitSource::Inband if self.rfc4733_seen => {
                self.stats.inband_ignored += 1;
                return None;
            }
            DigitSource::Rfc4733 => self.rfc4733_seen = true,
            DigitSource::Info | DigitSource::Inband => {}
        }
        let src = source.index();
        let after = self.cursor[src];
        let window = self.window;
        let partner = self
            .recent
            .iter()
            .flatten()
            .filter(|p| {
                p.digit == digit
                    && after.is_none_or(|a| p.seq > a)
                    && now.saturating_duration_since(p.at) <= window
            })
            .min_by_key(|p| p.seq);
        if let Some(p) = partner {
            self.cursor[src] = Some(p.seq);
            self.stats.duplicates += 1;
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = self
            .recent
            .iter()
            .position(Option::is_none)
            .or_else(|| {
                self.recent
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.as_ref().map(|p| (i, p.seq)))
                    .min_by_key(|&(_, s)| s)
                    .map(|(i, _)| i)
            })
            .expect("MEMORY > 0, so a slot is empty or one is oldest");
        self.recent[slot] = Some(Passed {
            seq,
            at: now,
            digit,
        });
        self.cursor[src] = Some(seq);
        self.stats.digits += 1;
        Some(digit.as_char())
    }

    /// True once RFC 4733 has delivered a digit (in-band is then ignored).
    #[cfg(test)]
    pub(crate) fn uses_rfc4733(&self) -> bool {
        self.rfc4733_seen
    }

    /// What has been seen so far.
    pub fn stats(&self) -> MergerStats {
        self.stats
    }
}

/// A SIP INFO DTMF body that cannot be read (faults of the peer, answered
/// with a 4xx by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InfoDigitError {
    /// The Content-Type is neither `application/dtmf-relay` nor `application/dtmf`.
    #[error("INFO body type is not application/dtmf-relay or application/dtmf")]
    UnsupportedType,
    /// An `application/dtmf-relay` body without a `Signal=` line.
    #[error("dtmf-relay body has no Signal line")]
    NoSignal,
    /// The signal is not one DTMF key (`0`-`9`, `*`, `#`, `A`-`D`, or the
    /// event codes `10`/`11` some senders use for `*`/`#`).
    #[error("INFO signal is not a DTMF key")]
    NotAKey,
}

/// Reads the key of a SIP INFO DTMF body.
///
/// - `application/dtmf-relay` (the de-facto Cisco format, no RFC): lines of
///   `Name=value`; the key is the `Signal=` line's value (`Duration=` is not
///   needed: the digit counts on arrival).
/// - `application/dtmf`: the body is the key itself.
///
/// `content_type` may carry parameters (`;charset=…`) and any case; names,
/// blanks around values, and `\r\n` or `\n` line ends are taken leniently. A
/// value of `10` or `11` is read as `*` or `#` (RFC 4733 event codes, which
/// some gateways put there).
pub fn parse_info_digit(content_type: &str, body: &[u8]) -> Result<DtmfDigit, InfoDigitError> {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    let value = if media_type.eq_ignore_ascii_case("application/dtmf-relay") {
        body.split(|&b| b == b'\n')
            .find_map(|line| {
                let eq = line.iter().position(|&b| b == b'=')?;
                let (name, value) = line.split_at(eq);
                name.trim_ascii()
                    .eq_ignore_ascii_case(b"signal")
                    .then(|| &value[1..])
            })
            .ok_or(InfoDigitError::NoSignal)?
    } else if media_type.eq_ignore_ascii_case("application/dtmf") {
        body
    } else {
        return Err(InfoDigitError::UnsupportedType);
    };
    match value.trim_ascii() {
        b"10" => Ok(DtmfDigit::try_from('*').expect("* is a key")),
        b"11" => Ok(DtmfDigit::try_from('#').expect("# is a key")),
        &[key] => DtmfDigit::try_from(char::from(key)).map_err(|_| InfoDigitError::NotAKey),
        _ => Err(InfoDigitError::NotAKey),
    }
}

/// A digit passed on, remembered for pairing.
#[derive(Debug, Clone, Copy)]
struct Passed {
    seq: u64,
    at: Instant,
    digit: DtmfDigit,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> DtmfDigit {
        DtmfDigit::try_from(c).unwrap()
    }

    /// Feeds `(ms, source, key)` events sorted by time and returns what
    /// passed.
    fn run(merger: &mut DigitMerger, events: &mut [(u64, DigitSource, char)]) -> String {
        let t0 = Instant::now();
        events.sort_by_key(|e| e.0);
        events
            .iter()
            .filter_map(|&(ms, src, c)| merger.push(t0 + Duration::from_millis(ms), src, d(c)))
            .collect()
    }

    /// Key presses `every` ms apart: RTP at the press, INFO `skew(i)` ms
    /// later (negative: earlier).
    fn both(keys: &str, every: u64, skew: impl Fn(usize) -> i64) -> Vec<(u64, DigitSource, char)> {
        let mut ev = Vec::new();
        for (i, c) in keys.chars().enumerate() {
            let press = 1000 + every * i as u64;
            ev.push((press, DigitSource::Rfc4733, c));
            ev.push((press.saturating_add_signed(skew(i)), DigitSource::Info, c));
        }
        ev
    }

    #[test]
    fn number_from_both_sources_passes_once() {
        // INFO 20–80 ms behind, sometimes 10–30 ms ahead of the RTP event.
        let skews = [35, 80, -10, 20, 60, -30, 45, 25, 70, -15];
        let mut ev = both("3125550188", 480, |i| skews[i]);
        let mut m = DigitMerger::new();
        assert_eq!(run(&mut m, &mut ev), "3125550188");
        assert_eq!(m.stats().digits, 10);
        assert_eq!(m.stats().duplicates, 10);
    }

    #[test]
    fn number_from_both_sources_with_random_skew_passes_once() {
        // INFO from 40 ms ahead to 300 ms behind; presses far enough apart
        // that INFO stays in order (it travels one dialog, in CSeq order).
        let mut rng = fastrand::Rng::with_seed(3125550188);
        for _ in 0..200 {
            let skews: Vec<i64> = (0..10).map(|_| rng.i64(-40..=300)).collect();
            let every = rng.u64(350..=600);
            let mut ev = both("3125550188", every, |i| skews[i]);
            let mut m = DigitMerger::new();
            assert_eq!(
                run(&mut m, &mut ev),
                "3125550188",
                "every {every} ms, skews {skews:?}"
            );
        }
    }

    #[test]
    fn repeated_key_from_both_sources_counts_twice() {
        // "5 5" pressed 200 ms apart, INFO 30 ms behind each.
        let mut ev = both("55", 200, |_| 30);
        assert_eq!(run(&mut DigitMerger::new(), &mut ev), "55");
        // INFO ahead of RTP.
        let mut ev = both("55", 200, |_| -25);
        assert_eq!(run(&mut DigitMerger::new(), &mut ev), "55");
    }

    #[test]
    fn repeated_key_with_info_lagging_past_the_next_press_counts_twice() {
        // The case "nearest in time" gets wrong: RTP 5@0, RTP 5@150,
        // INFO 5@180, INFO 5@330.
        let mut ev = both("55", 150, |_| 180);
        let mut m = DigitMerger::new();
        assert_eq!(run(&mut m, &mut ev), "55");
        assert_eq!(m.stats().duplicates, 2);
        let mut ev = both("555", 150, |_| 180);
        assert_eq!(run(&mut DigitMerger::new(), &mut ev), "555");
    }

    #[test]
    fn info_only() {
        let mut ev: Vec<_> = "3125550188"
            .chars()
            .enumerate()
            .map(|(i, c)| (200 * i as u64, DigitSource::Info, c))
            .collect();
        let mut m = DigitMerger::new();
        assert_eq!(run(&mut m, &mut ev), "3125550188");
        assert_eq!(m.stats().duplicates, 0);
    }

    #[test]
    fn rfc4733_only() {
        let mut ev: Vec<_> = "3125550188"
            .chars()
            .enumerate()
            .map(|(i, c)| (150 * i as u64, DigitSource::Rfc4733, c))
            .collect();
        let mut m = DigitMerger::new();
        assert_eq!(run(&mut m, &mut ev), "3125550188");
        assert!(m.uses_rfc4733());
    }

    #[test]
    fn lost_info_for_one_press_does_not_eat_the_next() {
        // INFO for the first 5 is lost. The second 5's INFO pairs with the
        // oldest unpaired RTP 5, the first one; the second RTP 5 stays
        // unpaired. Either way each press passes exactly once.
        let mut ev = both("55", 200, |_| 30);
        ev.retain(|e| !(e.1 == DigitSource::Info && e.0 == 1030));
        let mut m = DigitMerger::new();
        assert_eq!(run(&mut m, &mut ev), "55");
        assert_eq!(m.stats().duplicates, 1);
    }

    #[test]
    fn copy_after_the_window_counts_on_its_own() {
        // A peer that sent INFO for one press only, 2 s after an RTP 5: a
        // new press of 5, not a copy.
        let mut ev = vec![
            (0, DigitSource::Rfc4733, '5'),
            (2000, DigitSource::Info, '5'),
        ];
        assert_eq!(run(&mut DigitMerger::new(), &mut ev), "55");
        let mut short = DigitMerger::with_window(Duration::from_millis(50));
        let mut ev = vec![(0, DigitSource::Rfc4733, '5'), (80, DigitSource::Info, '5')];
        assert_eq!(run(&mut short, &mut ev), "55");
    }

    #[test]
    fn copy_does_not_pair_back_across_a_later_press() {
        // INFO 1 arrives after INFO 2 paired with RTP 2: it may not go back
        // to RTP 1 (INFO is in order, so this INFO 1 is a new press).
        let mut ev = vec![
            (0, DigitSource::Rfc4733, '1'),
            (200, DigitSource::Rfc4733, '2'),
            (220, DigitSource::Info, '2'),
            (300, DigitSource::Info, '1'),
        ];
        assert_eq!(run(&mut DigitMerger::new(), &mut ev), "121");
    }

    #[test]
    fn inband_ignored_after_rfc4733_seen() {
        let mut ev = vec![
            (0, DigitSource::Rfc4733, '1'),
            (30, DigitSource::Inband, '1'),
            (1000, DigitSource::Inband, '7'),
            (1500, DigitSource::Rfc4733, '2'),
        ];
        let mut m = DigitMerger::new();
        assert_eq!(run(&mut m, &mut ev), "12");
        assert_eq!(m.stats().inband_ignored, 2);
    }

    #[test]
    fn inband_counts_until_rfc4733_appears() {
        // In-band first; then the same press as RFC 4733 is a copy, and
        // in-band is off from there on.
        let mut ev = vec![
            (0, DigitSource::Inband, '4'),
            (500, DigitSource::Inband, '8'),
            (510, DigitSource::Rfc4733, '8'),
            (900, DigitSource::Inband, '9'),
            (905, DigitSource::Rfc4733, '9'),
        ];
        let mut m = DigitMerger::new();
        assert_eq!(run(&mut m, &mut ev), "489");
        assert_eq!(m.stats().duplicates, 1);
        assert_eq!(m.stats().inband_ignored, 1);
    }

    #[test]
    fn inband_and_info_for_the_same_press_pass_once() {
        let mut ev = both("707", 300, |_| 40);
        for e in &mut ev {
            if e.1 == DigitSource::Rfc4733 {
                e.1 = DigitSource::Inband;
            }
        }
        assert_eq!(run(&mut DigitMerger::new(), &mut ev), "707");
    }

    #[test]
    fn long_entry_beyond_memory_keeps_working() {
        let keys = "0123456789*#0123456789*#0123";
        let mut ev = both(keys, 250, |i| if i % 3 == 0 { -20 } else { 60 });
        assert_eq!(run(&mut DigitMerger::new(), &mut ev), keys);
    }

    #[test]
    fn parses_dtmf_relay_body() {
        let ct = "application/dtmf-relay";
        assert_eq!(
            parse_info_digit(ct, b"Signal=5\r\nDuration=160\r\n"),
            Ok(d('5'))
        );
        assert_eq!(
            parse_info_digit(ct, b"Signal= #\nDuration= 250\n"),
            Ok(d('#'))
        );
        assert_eq!(
            parse_info_digit(ct, b"Duration=160\r\nsignal=*"),
            Ok(d('*'))
        );
        assert_eq!(parse_info_digit(ct, b"Signal=11\r\n"), Ok(d('#')));
        assert_eq!(parse_info_digit(ct, b"Signal=10\r\n"), Ok(d('*')));
        assert_eq!(parse_info_digit(ct, b"Signal=d\r\n"), Ok(d('D')));
        let ct = "Application/DTMF-Relay; charset=utf-8";
        assert_eq!(parse_info_digit(ct, b"Signal=0\r\n"), Ok(d('0')));
    }

    #[test]
    fn parses_dtmf_body() {
        assert_eq!(parse_info_digit("application/dtmf", b"7"), Ok(d('7')));
        assert_eq!(parse_info_digit("application/dtmf", b" 9\r\n"), Ok(d('9')));
    }

    #[test]
    fn rejects_other_content_types() {
        for ct in [
            "application/sdp",
            "text/plain",
            "",
            "application/dtmf-relayx",
        ] {
            assert_eq!(
                parse_info_digit(ct, b"Signal=5\r\n"),
                Err(InfoDigitError::UnsupportedType),
                "{ct:?}"
            );
        }
    }

    #[test]
    fn rejects_dtmf_relay_without_signal() {
        let ct = "application/dtmf-relay";
        assert_eq!(
            parse_info_digit(ct, b"Duration=160\r\n"),
            Err(InfoDigitError::NoSignal)
        );
        assert_eq!(parse_info_digit(ct, b""), Err(InfoDigitError::NoSignal));
        assert_eq!(
            parse_info_digit(ct, b"Signal 5\r\n"),
            Err(InfoDigitError::NoSignal)
        );
    }

    #[test]
    fn rejects_signals_that_are_not_one_key() {
        let ct = "application/dtmf-relay";
        for body in [
            &b"Signal=\r\n"[..],
            b"Signal=55\r\n",
            b"Signal=E\r\n",
            b"Signal=16\r\n",
            b"Signal=\xff\r\n",
        ] {
            assert_eq!(
                parse_info_digit(ct, body),
                Err(InfoDigitError::NotAKey),
                "{body:?}"
            );
        }
        assert_eq!(
            parse_info_digit("application/dtmf", b""),
            Err(InfoDigitError::NotAKey)
        );
        assert_eq!(
            parse_info_digit("application/dtmf", b"12"),
            Err(InfoDigitError::NotAKey)
        );
    }
}
