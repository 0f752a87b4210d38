//! In-band DTMF: digits detected in the G.711 audio itself, for calls where
//! no telephone-event (RFC 4733) was negotiated.
//!
//! # Method
//!
//! The 8 kHz linear audio is cut into blocks of [`BLOCK_LEN`] = 102 samples
//! (12.75 ms). In each block a Goertzel filter measures the power at the eight
//! DTMF frequencies and at their second harmonics, and the block is judged
//! (see [`Reject`] for the tests, in order):
//!
//! | test | threshold | why |
//! |---|---|---|
//! | level | each tone ≥ −30 dBm0 | keypads send about −6…−10 dBm0 per tone and receivers are expected to work down to about −25 dBm0 after line loss; 5 dB margin below that, far above G.711 idle noise |
//! | twist | low group ≤ 8 dB above the high group ("normal"), high group ≤ 4 dB above the low group ("reverse") | the usual receiver limits (lines attenuate the high group more, so more slack that way) |
//! | relative peak | the strongest row (column) ≥ 6 dB above the other three rows (columns) | measured on G.711 keys: ≥ 11 dB at equal tone levels, down to 7.5 dB at the normal twist limit, where the loud row tone's sidelobes reach the column filters; speech and music spread energy over several filters |
//! | energy share | the two tones ≥ 70 % (−1.5 dB) of the block's whole power | DTMF is two tones and nothing else; speech, music and noise put most of their power elsewhere. This is the main talk-off guard |
//! | second harmonic | each tone's 2nd harmonic ≥ 15 dB below the tone | voiced speech is a harmonic series; a keypad's sine has none (measured on G.711 keys, also in noise: −27 dB or lower) |
//!
//! The harmonic filters see Hann-windowed samples: with the plain block the
//! column tone leaks about −18 dB into the row harmonic filter 185 Hz away,
//! too close to the limit once twist is added; the window's sidelobes beyond
//! its ±157 Hz main lobe are below −31 dB. The row tone's harmonic is not
//! judged for the five keys whose column tone lies inside that main lobe
//! (2, 3: 697 × 2 = 1394 Hz beside 1336 and 1477 Hz; 6, B: 770 × 2 = 1540
//! beside 1477 and 1633; C: 852 × 2 = 1704 beside 1633). The column
//! harmonics (2418–3266 Hz) are clear of every DTMF tone.
//!
//! # Timing (ITU-T Q.24 practice)
//!
//! Receivers must accept a tone of 40 ms and a pause of 40 ms, and should
//! refuse tones much shorter than that (about 23 ms in the North American
//! figures). The block length is chosen from those numbers:
//!
//! - a digit is **reported** on the second consecutive block that hears it
//!   (≥ 25.5 ms of tone): any 40 ms tone (320 samples), however it falls
//!   across block boundaries, covers at least two whole blocks (2 × 102 + 101
//!   = 305 ≤ 320), while a 20 ms tone covers at most one;
//! - a digit is **released** after three consecutive blocks without it
//!   (≈ 38 ms, as asked of a 40 ms pause): a key held for any length is one
//!   digit, a 20 ms packet lost in the middle of a tone (at most one whole
//!   block plus two mostly-tone halves) does not split it, and a second press
//!   of the same key after a pause of ≥ 40 ms is a second digit;
//! - 102 samples give ~78 Hz resolution, just wide enough for the 73 Hz gap
//!   between 697 and 770 Hz to fall near the first null of the filter, and
//!   short enough for the timing above. Twenty-millisecond (160-sample) blocks
//!   would resolve better but cannot guarantee two whole blocks inside a
//!   40 ms tone, nor three inside a 40 ms pause.
//!
//! Audio comes in any chunk size (a 20 ms or 30 ms packet, or anything else):
//! blocks run on across chunks. Nothing is allocated after
//! [`InbandDetector::new`]; the filter state is 16 pairs of `f32`.
//!
//! # Talk-off
//!
//! Measured on the 95 shipped prompts (speech, hold music, ringback; 9 106
//! blocks): level, twist and relative peak alone pass 69 blocks, 25 of them
//! in pairs, i.e. about 25 false digits; with the energy-share test none pass,
//! also with the level floor 10 dB lower. The harmonic test alone removes a
//! few of the 69; it is the second line. `no_shipped_prompt_produces_a_digit`
//! keeps this true.
//!
//! Limits, on purpose: no frequency-deviation rejection (Q.24's ±3.5 %,
//! which a 78 Hz filter cannot resolve) and no adaptive thresholds. Tones of
//! 15 ms or less never count; 18 ms tones count at about 1 % of alignments
//! against the block grid, 23 ms at about 37 %, 35 ms and longer always.

// std
use std::sync::LazyLock;
use std::time::{Duration, Instant};

// crate
use crate::media::dtmf::DtmfDigit;
use crate::media::g711::Law;

/// Samples per analysis block (12.75 ms at 8 kHz); see the module docs.
pub const BLOCK_LEN: usize = 102;

/// Sample rate of the audio the detector expects (G.711).
pub const SAMPLE_RATE: u32 = 8000;

/// The DTMF row (low group) frequencies, Hz.
pub const ROW_HZ: [f32; 4] = [697.0, 770.0, 852.0, 941.0];

/// The DTMF column (high group) frequencies, Hz.
pub const COLUMN_HZ: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// The keypad: `KEYPAD[row][column]`.
pub const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Minimum level of each of the two tones, dBm0.
pub const MIN_TONE_DBM0: f32 = -30.0;
/// Largest accepted excess of the row tone over the column tone, dB.
pub const MAX_NORMAL_TWIST_DB: f32 = 8.0;
/// Largest accepted excess of the column tone over the row tone, dB.
pub const MAX_REVERSE_TWIST_DB: f32 = 4.0;
/// How far the chosen tone must stand above the others of its group, dB.
pub const RELATIVE_PEAK_DB: f32 = 6.0;
/// Share of the block's power the two tones must carry.
pub const MIN_ENERGY_SHARE: f32 = 0.70;
/// How far below its tone a second harmonic must stay, dB.
pub const HARMONIC_REJECT_DB: f32 = 15.0;
/// Blocks in a row without the digit before it is released.
pub const MISSES_TO_RELEASE: u8 = 3;
/// Audio missing between two chunks beyond which the detector treats the
/// hole as a pause: the arrival gap minus the new chunk's own duration. Well
/// above network jitter, so a delayed burst does not split a held key, and
/// catches the silence-suppressed pause between two presses of one key.
pub const MAX_AUDIO_HOLE: Duration = Duration::from_millis(120);

/// Peak amplitude (16-bit linear) of a 0 dBm0 sine: G.711 µ-law's full
/// scale (8159 × 4) is +3.17 dBm0. A-law's is +3.14 dBm0; 0.03 dB apart.
pub const DBM0_PEAK: f32 = 22_656.0;

/// Why a block was not a DTMF digit, in the order the tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// One of the two strongest tones is below [`MIN_TONE_DBM0`].
    Level,
    /// Row and column tones differ by more than the twist limits.
    Twist,
    /// Another tone of the same group is within [`RELATIVE_PEAK_DB`].
    RelativePeak,
    /// The two tones carry less than [`MIN_ENERGY_SHARE`] of the block.
    EnergyShare,
    /// A tone has a second harmonic (speech, music).
    Harmonic,
}

/// Counters for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InbandStats {
    /// Blocks analysed.
    pub blocks: u64,
    /// Blocks that heard a valid digit.
    pub tone_blocks: u64,
    /// Digits reported.
    pub digits: u64,
    /// Blocks refused per test: level, twist, relative peak, energy share,
    /// harmonic (indexed by `Reject as usize`).
    pub rejected: [u64; 5],
    /// Holes in the audio taken as a pause (see [`MAX_AUDIO_HOLE`]).
    pub holes: u64,
    /// Digits dropped because more than [`InbandDetector::PENDING`] were
    /// detected in a single chunk and not drained with `poll_digit`.
    pub overflow: u64,
}

/// In-band DTMF detector for one audio stream (sans-IO; see the module docs).
#[derive(Debug, Clone)]
pub struct InbandDetector {
    filters: Filters,
    track: Track,
    pending: [Option<DtmfDigit>; InbandDetector::PENDING],
    last_push: Option<Instant>,
    limits: Limits,
    stats: InbandStats,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl InbandDetector {
    /// Digits held for [`InbandDetector::poll_digit`]: more than one only
    /// when a single chunk spans several blocks (e.g. a 200 ms buffer).
    pub const PENDING: usize = 8;

    /// A detector with no digit held.
    pub fn new() -> Self {
        InbandDetector {
            filters: Filters::new(),
            track: Track::Idle { onset: None },
            pending: [None; Self::PENDING],
            last_push: None,
            limits: Limits::new(),
            stats: InbandStats::default(),
        }
    }

    /// Feeds linear 8 kHz samples that arrived at `now` (any count; blocks
    /// run on across calls) and returns the first digit they completed.
    /// A chunk completes a second digit only if it spans several blocks and
    /// two keys follow each other with no pause; such extra digits wait in
    /// [`InbandDetector::poll_digit`], which a caller drains after each push.
    pub fn push(&mut self, now: Instant, samples: &[i16]) -> Option<DtmfDigit> {
        self.check_hole(now, samples.len());
        for &s in samples {
            self.feed(s);
        }
        self.poll_digit()
    }

    /// Like [`InbandDetector::push`] for G.711 codes of `law`; decodes
    /// sample by sample through the law's table, without a buffer.
    pub fn push_g711(&mut self, now: Instant, law: Law, codes: &[u8]) -> Option<DtmfDigit> {
        self.check_hole(now, codes.len());
        for &c in codes {
            self.feed(law.decode(c));
        }
        self.poll_digit()
    }

    /// The next detected digit not yet returned, oldest first.
    pub fn poll_digit(&mut self) -> Option<DtmfDigit> {
        let first = self.pending[0].take()?;
        self.pending.rotate_left(1);
        Some(first)
    }

    /// Forgets the partial block and any held digit, e.g. when the stream's
    /// source changes (new SSRC) or after hold.
    pub fn reset(&mut self) {
        self.filters.clear();
        self.track = Track::Idle { onset: None };
    }

    /// What has been seen so far.
    pub fn stats(&self) -> InbandStats {
        self.stats
    }

    /// Judges one block of exactly [`BLOCK_LEN`] samples on its own, without
    /// touching the detector's state: the digit it carries, or why not.
    #[cfg(test)]
    pub(crate) fn classify_block(samples: &[i16; BLOCK_LEN]) -> Result<DtmfDigit, Reject> {
        let mut filters = Filters::new();
        for &s in samples {
            filters.feed(s);
        }
        filters.classify(&Limits::new())
    }

    fn check_hole(&mut self, now: Instant, len: usize) {
        let chunk = Duration::from_micros(len as u64 * 1_000_000 / u64::from(SAMPLE_RATE));
        if let Some(prev) = self.last_push {
            let hole = now.saturating_duration_since(prev).saturating_sub(chunk);
            if hole > MAX_AUDIO_HOLE {
                self.stats.holes += 1;
                self.reset();
            }
        }
        self.last_push = Some(now);
    }

    fn feed(&mut self, sample: i16) {
        if !self.filters.feed(sample) {
            return;
        }
        self.stats.blocks += 1;
        let heard = match self.filters.classify(&self.limits) {
            Ok(digit) => {
                self.stats.tone_blocks += 1;
                Some(digit)
            }
            Err(reason) => {
                self.stats.rejected[reason as usize] += 1;
                None
            }
        };
        self.filters.clear();
        let (next, report) = self.track.step(heard);
        self.track = next;
        if let Some(digit) = report {
            self.stats.digits += 1;
            match self.pending.iter_mut().find(|p| p.is_none()) {
                Some(slot) => *slot = Some(digit),
                None => self.stats.overflow += 1,
            }
        }
    }
}

/// Per-block tracking of the digit heard: onset, held, released.
///
/// ```text
///            hit d                 hit d (2nd block)
///   Idle{-} ───────▶ Idle{onset d} ─────────────────▶ Held{d} ──▶ report d
///      ▲                                               │  ▲
///      │      3rd block in a row without d             │  │ hit d: misses = 0
///      └───────────────────────────────────────────────┘──┘
///   Held{d} with a different digit e heard in 2 blocks in a row ──▶ Held{e}, report e
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    /// No digit held; `onset` is the digit the previous block heard.
    Idle { onset: Option<DtmfDigit> },
    /// `digit` was reported and has not been absent for
    /// [`MISSES_TO_RELEASE`] blocks; `onset` as in `Idle`, for another digit.
    Held {
        digit: DtmfDigit,
        misses: u8,
        onset: Option<DtmfDigit>,
    },
}

impl Track {
    /// The next state after a block that heard `heard`, and the digit to
    /// report, if any. A digit is reported on its second block in a row:
    /// the `onset` block plus this one.
    fn step(self, heard: Option<DtmfDigit>) -> (Track, Option<DtmfDigit>) {
        match (self, heard) {
            (Track::Idle { onset }, Some(h)) if onset == Some(h) => (Self::held(h), Some(h)),
            (Track::Idle { .. }, heard) => (Track::Idle { onset: heard }, None),
            (Track::Held { digit, .. }, Some(h)) if h == digit => (Self::held(digit), None),
            (Track::Held { onset, .. }, Some(h)) if onset == Some(h) => (Self::held(h), Some(h)),
            (Track::Held { digit, misses, .. }, heard) => {
                let misses = misses + 1;
                if misses >= MISSES_TO_RELEASE {
                    (Track::Idle { onset: heard }, None)
                } else {
                    let onset = heard;
                    (
                        Track::Held {
                            digit,
                            misses,
                            onset,
                        },
                        None,
                    )
                }
            }
        }
    }

    fn held(digit: DtmfDigit) -> Track {
        Track::Held {
            digit,
            misses: 0,
            onset: None,
        }
    }
}

/// Index of a filter: rows 0..4, columns 4..8, then the second harmonics of
/// rows 8..12 and of columns 12..16.
const FILTERS: usize = 16;
/// First harmonic filter; those from here on see Hann-windowed samples.
const HARMONICS: usize = 8;
/// Farthest a column tone may leak into a Hann-windowed filter: its main
/// lobe is two bins wide each side (2 × 8000 / 102 ≈ 157 Hz); beyond it the
/// sidelobes are below −31 dB.
const HANN_MAIN_LOBE_HZ: f32 = 2.0 * SAMPLE_RATE as f32 / BLOCK_LEN as f32;

/// The periodic Hann window over one block, for the harmonic filters. Its
/// sidelobes fall off fast, so a row tone's harmonic filter does not pick
/// up the column tone 185 Hz away (the plain block leaks −18 dB there).
static HANN: LazyLock<[f32; BLOCK_LEN]> = LazyLock::new(|| {
    std::array::from_fn(|n| {
        let phase = 2.0 * std::f32::consts::PI * n as f32 / BLOCK_LEN as f32;
        0.5 - 0.5 * phase.cos()
    })
});

/// The Goertzel filters of the current block.
#[derive(Debug, Clone)]
struct Filters {
    /// 2·cos(2πf/fs) per filter.
    coeff: [f32; FILTERS],
    /// [`HANN`], forced once here rather than checked per sample.
    window: &'static [f32; BLOCK_LEN],
    s1: [f32; FILTERS],
    s2: [f32; FILTERS],
    /// Sum of squares of the block's samples.
    energy: f32,
    filled: usize,
}

impl Filters {
    fn new() -> Self {
        let mut coeff = [0.0; FILTERS];
        for (i, c) in coeff.iter_mut().enumerate() {
            let f = filter_hz(i);
            *c = 2.0 * (2.0 * std::f32::consts::PI * f / SAMPLE_RATE as f32).cos();
        }
        Filters {
            coeff,
            window: LazyLock::force(&HANN),
            s1: [0.0; FILTERS],
            s2: [0.0; FILTERS],
            energy: 0.0,
            filled: 0,
        }
    }

    /// Adds one sample; true when the block is full.
    #[inline]
    fn feed(&mut self, sample: i16) -> bool {
        let x = f32::from(sample);
        self.energy += x * x;
        for i in 0..HARMONICS {
            let s = x + self.coeff[i] * self.s1[i] - self.s2[i];
            self.s2[i] = self.s1[i];
            self.s1[i] = s;
        }
        let xw = x * self.window[self.filled];
        for i in HARMONICS..FILTERS {
            let s = xw + self.coeff[i] * self.s1[i] - self.s2[i];
            self.s2[i] = self.s1[i];
            self.s1[i] = s;
        }
        self.filled += 1;
        self.filled == BLOCK_LEN
    }

    fn clear(&mut self) {
        self.s1 = [0.0; FILTERS];
        self.s2 = [0.0; FILTERS];
        self.energy = 0.0;
        self.filled = 0;
    }

    /// Mean-square power of filter `i`'s frequency in the block: A²/2 for a
    /// sine of amplitude A at that frequency, comparable with the block's
    /// mean square.
    fn power(&self, i: usize) -> f32 {
        let (s1, s2) = (self.s1[i], self.s2[i]);
        let mag2 = s1 * s1 + s2 * s2 - self.coeff[i] * s1 * s2;
        // The gain of the window at its own frequency: N for the plain
        // block, the sum of the window (N/2) for the Hann-windowed filters.
        let gain = if i < HARMONICS {
            BLOCK_LEN as f32
        } else {
            BLOCK_LEN as f32 / 2.0
        };
        2.0 * mag2.max(0.0) / (gain * gain)
    }

    fn classify(&self, limits: &Limits) -> Result<DtmfDigit, Reject> {
        let rows: [f32; 4] = std::array::from_fn(|i| self.power(i));
        let cols: [f32; 4] = std::array::from_fn(|i| self.power(4 + i));
        let row = strongest(&rows);
        let col = strongest(&cols);
        let (pr, pc) = (rows[row], cols[col]);
        if pr < limits.min_tone || pc < limits.min_tone {
            return Err(Reject::Level);
        }
        if pr > pc * limits.normal_twist || pc > pr * limits.reverse_twist {
            return Err(Reject::Twist);
        }
        let stands_out =
            |p: &[f32; 4], best: usize| (0..4).all(|i| i == best || p[i] * limits.peak <= p[best]);
        if !stands_out(&rows, row) || !stands_out(&cols, col) {
            return Err(Reject::RelativePeak);
        }
        let mean_square = self.energy / BLOCK_LEN as f32;
        if pr + pc < limits.energy_share * mean_square {
            return Err(Reject::EnergyShare);
        }
        if self.power(12 + col) * limits.harmonic > pc {
            return Err(Reject::Harmonic);
        }
        let row_harmonic_hz = 2.0 * ROW_HZ[row];
        let clear_of_column = (row_harmonic_hz - COLUMN_HZ[col]).abs() > HANN_MAIN_LOBE_HZ;
        if clear_of_column && self.power(8 + row) * limits.harmonic > pr {
            return Err(Reject::Harmonic);
        }
        let key = KEYPAD[row][col];
        Ok(DtmfDigit::try_from(key).expect("KEYPAD holds only DTMF keys"))
    }
}

/// The thresholds as power ratios, computed once from the dB constants.
#[derive(Debug, Clone, Copy)]
struct Limits {
    min_tone: f32,
    normal_twist: f32,
    reverse_twist: f32,
    peak: f32,
    energy_share: f32,
    harmonic: f32,
}

impl Limits {
    fn new() -> Self {
        let ratio = |db: f32| 10f32.powf(db / 10.0);
        Limits {
            min_tone: DBM0_PEAK * DBM0_PEAK / 2.0 * ratio(MIN_TONE_DBM0),
            normal_twist: ratio(MAX_NORMAL_TWIST_DB),
            reverse_twist: ratio(MAX_REVERSE_TWIST_DB),
            peak: ratio(RELATIVE_PEAK_DB),
            energy_share: MIN_ENERGY_SHARE,
            harmonic: ratio(HARMONIC_REJECT_DB),
        }
    }
}

fn filter_hz(i: usize) -> f32 {
    let base = i % 8;
    let f = if base < 4 {
        ROW_HZ[base]
    } else {
        COLUMN_HZ[base - 4]
    };
    if i < 8 { f } else { 2.0 * f }
}

fn strongest(p: &[f32; 4]) -> usize {
    let mut best = 0;
    for i in 1..4 {
        if p[i] > p[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    // std
    use std::path::Path;

    /// Peak amplitude of a sine at `dbm0`.
    fn amplitude(dbm0: f32) -> f32 {
        DBM0_PEAK * 10f32.powf(dbm0 / 20.0)
    }

    fn position(key: char) -> (usize, usize) {
        for (r, row) in KEYPAD.iter().enumerate() {
            if let Some(c) = row.iter().position(|&k| k == key) {
                return (r, c);
            }
        }
        panic!("{key:?} is not on the keypad");
    }

    /// Appends `ms` of silence.
    fn silence(out: &mut Vec<f32>, ms: usize) {
        out.extend(std::iter::repeat_n(0.0, ms * 8));
    }

    /// Appends `ms` of the given frequencies at the given levels (dBm0).
    fn tones(out: &mut Vec<f32>, ms: usize, parts: &[(f32, f32)]) {
        let start = out.len();
        for n in 0..ms * 8 {
            let t = (start + n) as f32 / SAMPLE_RATE as f32;
            let v: f32 = parts
                .iter()
                .map(|&(hz, dbm0)| amplitude(dbm0) * (2.0 * std::f32::consts::PI * hz * t).sin())
                .sum();
            out.push(v);
        }
    }

    /// Appends `ms` of `key` with each tone at `row_dbm0` / `col_dbm0`.
    fn key_at(out: &mut Vec<f32>, key: char, ms: usize, row_dbm0: f32, col_dbm0: f32) {
        let (r, c) = position(key);
        tones(out, ms, &[(ROW_HZ[r], row_dbm0), (COLUMN_HZ[c], col_dbm0)]);
    }

    fn key(out: &mut Vec<f32>, key: char, ms: usize) {
        key_at(out, key, ms, -10.0, -10.0);
    }

    fn to_i16(audio: &[f32]) -> Vec<i16> {
        audio
            .iter()
            .map(|&v| v.round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    /// Encodes `audio` with `law`, feeds it in `chunk`-sample packets (one
    /// packet time apart on the fake clock) and collects the digits.
    fn detect_g711(audio: &[f32], law: Law, chunk: usize) -> String {
        let t0 = Instant::now();
        let mut det = InbandDetector::new();
        let mut codes = Vec::new();
        law.encode_into(&to_i16(audio), &mut codes);
        let mut got = String::new();
        for (i, packet) in codes.chunks(chunk).enumerate() {
            let now = t0 + Duration::from_micros((i * chunk) as u64 * 125);
            if let Some(d) = det.push_g711(now, law, packet) {
                got.push(d.as_char());
            }
            while let Some(d) = det.poll_digit() {
                got.push(d.as_char());
            }
        }
        got
    }

    fn detect(audio: &[f32]) -> String {
        detect_g711(audio, Law::Ulaw, 160)
    }

    const ALL_KEYS: &str = "123A456B789C*0#D";

    #[test]
    fn every_key_through_both_laws_is_detected_once() {
        for law in [Law::Ulaw, Law::Alaw] {
            for (on, off) in [(50, 50), (100, 50), (70, 60)] {
                let mut audio = Vec::new();
                silence(&mut audio, 30);
                for k in ALL_KEYS.chars() {
                    key(&mut audio, k, on);
                    silence(&mut audio, off);
                }
                assert_eq!(
                    detect_g711(&audio, law, 160),
                    ALL_KEYS,
                    "{law:?} {on}/{off} ms"
                );
            }
        }
    }

    #[test]
    fn q24_minimum_tone_and_pause_at_every_block_alignment() {
        // 40 ms on / 40 ms off, shifted by every few samples against the
        // block grid: each key still counts exactly once.
        for shift in (0..BLOCK_LEN).step_by(7) {
            let mut audio = vec![0.0; shift];
            for k in ALL_KEYS.chars() {
                key(&mut audio, k, 40);
                silence(&mut audio, 40);
            }
            assert_eq!(detect(&audio), ALL_KEYS, "shift {shift}");
        }
    }

    #[test]
    fn rejects_tones_of_15ms_at_every_block_alignment() {
        // Shorter than one block plus a bit: never two hits in a row.
        // (Measured: 18 ms tones count at 1 % of alignments, 23 ms at 37 %,
        // 35 ms and longer at all.)
        for shift in 0..BLOCK_LEN {
            let mut audio = vec![0.0; shift];
            for k in ALL_KEYS.chars() {
                key(&mut audio, k, 15);
                silence(&mut audio, 60);
            }
            assert_eq!(detect(&audio), "", "shift {shift}");
        }
    }

    #[test]
    fn same_key_twice_with_a_60ms_gap_counts_twice() {
        let mut audio = Vec::new();
        key(&mut audio, '5', 80);
        silence(&mut audio, 60);
        key(&mut audio, '5', 80);
        silence(&mut audio, 60);
        assert_eq!(detect(&audio), "55");
    }

    #[test]
    fn held_key_counts_once() {
        let mut audio = Vec::new();
        silence(&mut audio, 20);
        key(&mut audio, '5', 500);
        silence(&mut audio, 100);
        assert_eq!(detect(&audio), "5");
    }

    #[test]
    fn held_key_with_a_lost_packet_counts_once() {
        // A 20 ms packet of the tone replaced by silence (loss without PLC)
        // at each alignment against the block grid.
        for shift in (0..BLOCK_LEN).step_by(11) {
            let mut audio = vec![0.0; shift];
            key(&mut audio, '8', 200);
            silence(&mut audio, 20);
            key(&mut audio, '8', 200);
            silence(&mut audio, 60);
            assert_eq!(detect(&audio), "8", "shift {shift}");
        }
    }

    #[test]
    fn thirty_ms_chunks_work_like_twenty_ms_chunks() {
        let mut audio = Vec::new();
        for k in "3125550188".chars() {
            key(&mut audio, k, 60);
            silence(&mut audio, 60);
        }
        for law in [Law::Ulaw, Law::Alaw] {
            assert_eq!(detect_g711(&audio, law, 160), "3125550188");
            assert_eq!(detect_g711(&audio, law, 240), "3125550188");
            assert_eq!(detect_g711(&audio, law, 1), "3125550188");
        }
    }

    #[test]
    fn long_chunk_yields_every_digit_through_poll() {
        let t0 = Instant::now();
        let mut audio = Vec::new();
        for k in "147".chars() {
            key(&mut audio, k, 60);
            silence(&mut audio, 60);
        }
        let pcm = to_i16(&audio);
        let mut det = InbandDetector::new();
        let first = det.push(t0, &pcm).map(DtmfDigit::as_char);
        let rest: String = std::iter::from_fn(|| det.poll_digit())
            .map(DtmfDigit::as_char)
            .collect();
        assert_eq!(first, Some('1'));
        assert_eq!(rest, "47");
        assert_eq!(det.stats().digits, 3);
    }

    #[test]
    fn hole_in_arrival_separates_two_presses() {
        // Silence suppression: the pause between two presses of 5 is not
        // sent at all. Without the arrival gap the tones would join.
        let t0 = Instant::now();
        let mut tone = Vec::new();
        key(&mut tone, '5', 80);
        let pcm = to_i16(&tone);
        let mut det = InbandDetector::new();
        let mut got = String::new();
        let mut now = t0;
        for round in 0..2 {
            for packet in pcm.chunks(160) {
                got.extend(det.push(now, packet).map(DtmfDigit::as_char));
                now += Duration::from_millis(20);
            }
            if round == 0 {
                now += Duration::from_millis(300);
            }
        }
        assert_eq!(got, "55");
        assert_eq!(det.stats().holes, 1);
    }

    #[test]
    fn jitter_below_the_hole_limit_does_not_split_a_held_key() {
        let t0 = Instant::now();
        let mut tone = Vec::new();
        key(&mut tone, '9', 400);
        let pcm = to_i16(&tone);
        let mut det = InbandDetector::new();
        let mut got = String::new();
        for (i, packet) in pcm.chunks(160).enumerate() {
            // Packet 5 is 100 ms late, the next ones arrive right behind it.
            let late = if i >= 5 { 100 } else { 0 };
            let now = t0 + Duration::from_millis(20 * i as u64 + late);
            got.extend(det.push(now, packet).map(DtmfDigit::as_char));
        }
        assert_eq!(got, "9");
        assert_eq!(det.stats().holes, 0);
    }

    #[test]
    fn accepts_twist_within_limits_on_every_key() {
        for (row_db, col_db) in [(-6.0, -13.5), (-13.5, -10.0)] {
            let mut audio = Vec::new();
            for k in ALL_KEYS.chars() {
                key_at(&mut audio, k, 60, row_db, col_db);
                silence(&mut audio, 60);
            }
            let got = detect(&audio);
            assert_eq!(got, ALL_KEYS, "row {row_db} dBm0, column {col_db} dBm0");
        }
    }

    #[test]
    fn rejects_normal_twist_beyond_8db() {
        let mut audio = Vec::new();
        key_at(&mut audio, '1', 100, -5.0, -15.0);
        silence(&mut audio, 60);
        assert_eq!(detect(&audio), "");
        let block: [i16; BLOCK_LEN] = to_i16(&audio[200..200 + BLOCK_LEN]).try_into().unwrap();
        assert_eq!(InbandDetector::classify_block(&block), Err(Reject::Twist));
    }

    #[test]
    fn rejects_reverse_twist_beyond_4db() {
        let mut audio = Vec::new();
        key_at(&mut audio, '9', 100, -16.0, -10.0);
        silence(&mut audio, 60);
        assert_eq!(detect(&audio), "");
        let block: [i16; BLOCK_LEN] = to_i16(&audio[200..200 + BLOCK_LEN]).try_into().unwrap();
        assert_eq!(InbandDetector::classify_block(&block), Err(Reject::Twist));
    }

    #[test]
    fn accepts_quiet_keys_down_to_minus_25_dbm0() {
        let mut audio = Vec::new();
        for k in ALL_KEYS.chars() {
            key_at(&mut audio, k, 60, -25.0, -25.0);
            silence(&mut audio, 60);
        }
        assert_eq!(detect(&audio), ALL_KEYS);
    }

    #[test]
    fn rejects_keys_below_the_level_floor() {
        let mut audio = Vec::new();
        for k in ALL_KEYS.chars() {
            key_at(&mut audio, k, 60, -35.0, -35.0);
            silence(&mut audio, 60);
        }
        assert_eq!(detect(&audio), "");
    }

    #[test]
    fn rejects_silence() {
        let audio = vec![0.0; 8000];
        assert_eq!(detect(&audio), "");
        assert_eq!(detect_g711(&audio, Law::Alaw, 160), "");
    }

    #[test]
    fn rejects_white_noise() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for dbfs_amp in [500.0, 4000.0, 20000.0] {
            let audio: Vec<f32> = (0..8000 * 5)
                .map(|_| (rng.f32() * 2.0 - 1.0) * dbfs_amp)
                .collect();
            assert_eq!(detect(&audio), "", "noise amplitude {dbfs_amp}");
        }
    }

    #[test]
    fn detects_keys_in_moderate_noise() {
        // Control for the noise test: the same noise under real keys
        // (about 20 dB below them) does not hide them.
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let mut audio = Vec::new();
        for k in "3125550188".chars() {
            key(&mut audio, k, 60);
            silence(&mut audio, 60);
        }
        for v in &mut audio {
            *v += (rng.f32() * 2.0 - 1.0) * 1200.0;
        }
        assert_eq!(detect(&audio), "3125550188");
    }

    #[test]
    fn rejects_a_1khz_tone() {
        let mut audio = Vec::new();
        tones(&mut audio, 1000, &[(1000.0, -10.0)]);
        assert_eq!(detect(&audio), "");
    }

    #[test]
    fn rejects_a_single_dtmf_frequency() {
        for hz in ROW_HZ.iter().chain(COLUMN_HZ.iter()) {
            let mut audio = Vec::new();
            tones(&mut audio, 300, &[(*hz, -10.0)]);
            assert_eq!(detect(&audio), "", "{hz} Hz alone");
        }
    }

    #[test]
    fn rejects_a_key_with_a_strong_third_tone() {
        // 5 plus a 400 Hz tone as loud as its tones: not DTMF alone.
        let mut audio = Vec::new();
        tones(
            &mut audio,
            200,
            &[(770.0, -10.0), (1336.0, -10.0), (400.0, -7.0)],
        );
        assert_eq!(detect(&audio), "");
    }

    #[test]
    fn rejects_a_key_with_harmonics() {
        // 1 (697 + 1209 Hz) with its second harmonics at −6 dB: a voiced
        // sound, not a keypad.
        let mut audio = Vec::new();
        let parts = [
            (697.0, -10.0),
            (1209.0, -10.0),
            (1394.0, -16.0),
            (2418.0, -16.0),
        ];
        tones(&mut audio, 200, &parts);
        assert_eq!(detect(&audio), "");
        let block: [i16; BLOCK_LEN] = to_i16(&audio[300..300 + BLOCK_LEN]).try_into().unwrap();
        assert_eq!(
            InbandDetector::classify_block(&block),
            Err(Reject::Harmonic)
        );
    }

    #[test]
    fn rejects_adjacent_row_pair() {
        // 697 + 770 Hz: two low-group tones, no column.
        let mut audio = Vec::new();
        tones(&mut audio, 200, &[(697.0, -10.0), (770.0, -10.0)]);
        assert_eq!(detect(&audio), "");
    }

    fn prompt_audio(name: &str) -> Vec<f32> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("prompts")
            .join(format!("{name}.wav"));
        let mut reader = hound::WavReader::open(&path).expect("shipped prompt");
        let spec = reader.spec();
        assert_eq!((spec.sample_rate, spec.channels), (8000, 1), "{name}");
        reader
            .samples::<i16>()
            .map(|s| f32::from(s.expect("16-bit sample")))
            .collect()
    }

    #[test]
    fn welcome_prompt_produces_no_digit() {
        let audio = prompt_audio("welcome");
        assert!(audio.len() > 8000, "the prompt has audio");
        for law in [Law::Ulaw, Law::Alaw] {
            assert_eq!(
                detect_g711(&audio, law, 160),
                "",
                "talk-off in welcome ({law:?})"
            );
        }
    }

    #[test]
    fn no_shipped_prompt_produces_a_digit() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("prompts dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_none_or(|e| e != "wav") {
                continue;
            }
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name");
            let audio = prompt_audio(name);
            assert_eq!(detect(&audio), "", "talk-off in {name}");
            checked += 1;
        }
        assert!(checked >= 90, "only {checked} prompts found");
    }

    #[test]
    fn keys_mixed_over_speech_are_found() {
        // Control for the talk-off tests: the same speech with keys laid over
        // it at a normal level is not a blind spot. The keys sit in the
        // prompt's quieter parts, as a caller barging in would.
        let speech = prompt_audio("welcome");
        let mut audio: Vec<f32> = speech.iter().map(|v| v * 0.1).collect();
        let mut overlay = Vec::new();
        for k in "159#".chars() {
            silence(&mut overlay, 200);
            key(&mut overlay, k, 80);
        }
        for (a, o) in audio.iter_mut().zip(&overlay) {
            *a += o;
        }
        assert_eq!(detect(&audio), "159#");
    }

    #[test]
    fn reset_forgets_a_held_digit() {
        let t0 = Instant::now();
        let mut tone = Vec::new();
        key(&mut tone, '2', 100);
        let pcm = to_i16(&tone);
        let mut det = InbandDetector::new();
        assert_eq!(det.push(t0, &pcm).map(DtmfDigit::as_char), Some('2'));
        det.reset();
        let again = det.push(t0 + Duration::from_millis(100), &pcm);
        assert_eq!(again.map(DtmfDigit::as_char), Some('2'));
    }

    #[test]
    fn extreme_input_does_not_panic() {
        let t0 = Instant::now();
        let mut det = InbandDetector::new();
        let loud: Vec<i16> = (0..4000)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        assert_eq!(det.push(t0, &loud), None);
        assert_eq!(det.push(t0, &[]), None);
        for code in 0..=255u8 {
            det.push_g711(t0, Law::Alaw, &[code; 103]);
        }
        assert_eq!(det.stats().digits, 0);
    }
}
