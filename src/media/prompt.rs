//! Prompt library: WAV files loaded once at start-up, resampled to 8 kHz mono
//! and pre-encoded into G.711 frames that every call shares.
//!
//! # Pipeline (at load, never per call)
//!
//! 1. `hound` reads any integer PCM (8/16/24/32-bit) or 32-bit float WAV, at
//!    any rate and channel count; channels are averaged to mono.
//! 2. If the rate is not 8 kHz, the audio is resampled once by `dasp`'s
//!    [`Converter`](dasp::signal::interpolate::Converter) driving our own
//!    band-limited interpolator (Blackman-windowed sinc, 32 zero crossings
//!    each side, cutoff at 92.5 % of the lower Nyquist frequency: 3.7 kHz
//!    when downsampling). dasp 0.11's own `Sinc` is not used: its left and
//!    right taps are swapped (fixed upstream in RustAudio/dasp#143, never
//!    released), which plays each source interval backwards, and its cutoff
//!    is the *source* Nyquist frequency, so everything between 4 kHz and
//!    that would alias into the telephone band when downsampling.
//! 3. [`PromptLibrary::prepare`] encodes each prompt once per G.711 law and
//!    pads it with the law's silence code to whole frames of every packet time
//!    asked for. One `Arc<[u8]>` per prompt and law serves every packet time:
//!    frames are consecutive slices of it, and only the length of the silence
//!    tail differs between packet times.
//!
//! A call never copies audio: the player borrows `&[u8]` frames from the
//! library and hands them to the RTP packetiser.
//!
//! Every error here is a local configuration fault (a file on our disk); no
//! input from the network reaches this module.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dasp::interpolate::Interpolator;
use dasp::{Signal, ring_buffer, signal};

use crate::media::g711::Law;

/// The sample rate of everything the library hands out (G.711, RFC 3551 §4.5.14).
pub const SAMPLE_RATE: u32 = 8000;

/// Longest prompt accepted. Guards memory at start-up against a mistaken
/// hour-long file (30 min at 8 kHz is 28.8 MB of PCM, plus 14.4 MB per law).
pub const MAX_PROMPT_DURATION: Duration = Duration::from_secs(30 * 60);

/// The canonical prompt names (`prompts/<name>.wav`, listed with their texts in
/// `prompts/README.md`), in that document's order.
#[rustfmt::skip]
pub const STANDARD_PROMPTS: [&str; 98] = [
    "welcome", "ecbt_intro",
    "ecbt_about", "ecbt_more_than", "number_0", "number_1", "number_2", "number_3",
    "number_4", "number_5", "number_6", "number_7", "number_8", "number_9", "number_10",
    "number_11", "number_12", "number_13", "number_14", "number_15", "number_16", "number_17",
    "number_18", "number_19", "number_20", "number_21", "number_22", "number_23", "number_24",
    "number_25", "number_26", "number_27", "number_28", "number_29", "number_30", "number_31",
    "number_32", "number_33", "number_34", "number_35", "number_36", "number_37", "number_38",
    "number_39", "number_40", "number_41", "number_42", "number_43", "number_44", "number_45",
    "number_46", "number_47", "number_48", "number_49", "number_50", "number_51", "number_52",
    "number_53", "number_54", "number_55", "number_56", "number_57", "number_58", "number_59",
    "number_60", "minute", "minutes", "callback_offer", "ani_offer", "enter_number",
    "invalid_number", "you_entered", "digit_0", "digit_1", "digit_2", "digit_3", "digit_4",
    "digit_5", "digit_6", "digit_7", "digit_8", "digit_9", "digit_star", "digit_pound",
    "international_prefix", "confirm", "registered",
    "registered_asap", "already_scheduled", "unable",
    "returning_to_queue", "hold_music", "ringback", "agent_whisper", "customer_no_answer",
    "recording_notice", "missed_call_agent", "goodbye",
];

/// Index of a prompt in the [`PromptLibrary`] that issued it.
///
/// Only [`PromptLibrary::id`] makes one, so an id is always valid for its own
/// library; ids are meaningless across libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PromptId(u16);

impl PromptId {
    /// The position of the prompt in the list it was loaded from.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// An RTP packet time for G.711, in whole milliseconds (`a=ptime`, RFC 4566
/// §6; RFC 3551 §4.5 lets G.711 packets hold any whole number of samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ptime(u16);

impl Ptime {
    /// The largest packet time accepted: 180 ms of G.711 is 1440 bytes, which
    /// with IPv4 (20), UDP (8) and RTP (12) headers still fits a 1500-byte MTU.
    pub const MAX_MS: u16 = 180;

    /// 20 ms, RFC 3551 §4.5's default packetisation for audio.
    pub const DEFAULT: Ptime = Ptime(20);

    /// A packet time of `ms` milliseconds, if `1 ..= MAX_MS`.
    pub const fn from_ms(ms: u16) -> Option<Ptime> {
        if ms >= 1 && ms <= Self::MAX_MS {
            Some(Ptime(ms))
        } else {
            None
        }
    }

    /// The packet time in milliseconds.
    pub const fn ms(self) -> u16 {
        self.0
    }

    /// Samples per packet at 8 kHz, which is also the G.711 payload size in bytes.
    pub const fn samples(self) -> usize {
        self.0 as usize * (SAMPLE_RATE as usize / 1000)
    }

    /// The packet time as a [`Duration`].
    pub const fn duration(self) -> Duration {
        Duration::from_millis(self.0 as u64)
    }
}

/// One silence frame of `ptime` in `law`, from a static buffer: no allocation.
pub fn silence_frame(law: Law, ptime: Ptime) -> &'static [u8] {
    let all: &'static [u8; MAX_FRAME_BYTES] = match law {
        Law::Ulaw => &ULAW_SILENCE,
        Law::Alaw => &ALAW_SILENCE,
    };
    // Ptime::samples() ≤ MAX_FRAME_BYTES by construction of Ptime.
    &all[..ptime.samples()]
}

/// A prompt's pre-encoded frames for one law and packet time: a borrowed view
/// into the library's shared buffer. The last frame is padded with the law's
/// silence code.
#[derive(Debug, Clone, Copy)]
pub struct Frames<'a> {
    bytes: &'a [u8],
    frame_len: usize,
}

impl<'a> Frames<'a> {
    /// Number of frames (at least one: empty prompts are refused at load).
    pub fn len(&self) -> usize {
        self.bytes.len() / self.frame_len
    }

    /// Whether there are no frames (never true for a loaded prompt).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes per frame (= samples per packet for G.711).
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Frame `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let start = i.checked_mul(self.frame_len)?;
        self.bytes.get(start..start.checked_add(self.frame_len)?)
    }

    /// Frame `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing; use [`Frames::get`] when the
    /// index is not known to be in range.
    pub fn frame(&self, i: usize) -> &'a [u8] {
        let start = i * self.frame_len;
        &self.bytes[start..start + self.frame_len]
    }

    /// All frames back to back.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The frames in order.
    pub fn iter(&self) -> std::slice::ChunksExact<'a, u8> {
        self.bytes.chunks_exact(self.frame_len)
    }
}

/// Why a prompt could not be loaded. All are local faults: the file named
/// in the message must be fixed or replaced.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The file does not exist.
    #[error("prompt {name:?}: {}: file not found", path.display())]
    Missing { name: String, path: PathBuf },
    /// The file could not be read (permissions, I/O error, truncated data).
    #[error("prompt {name:?}: {}: cannot read: {source}", path.display())]
    Io {
        name: String,
        path: PathBuf,
        source: io::Error,
    },
    /// The file is not a RIFF/WAVE file, or its header is malformed.
    #[error("prompt {name:?}: {}: not a valid WAV file ({reason})", path.display())]
    NotWav {
        name: String,
        path: PathBuf,
        reason: &'static str,
    },
    /// A WAV encoding other than 8/16/24/32-bit integer or 32-bit float PCM.
    #[error(
        "prompt {name:?}: {}: unsupported WAV encoding ({encoding}); \
         use 8/16/24/32-bit integer or 32-bit float PCM",
        path.display()
    )]
    Unsupported {
        name: String,
        path: PathBuf,
        encoding: WavEncoding,
    },
    /// The file holds no audio.
    #[error("prompt {name:?}: {}: no audio samples", path.display())]
    Empty { name: String, path: PathBuf },
    /// The file is longer than [`MAX_PROMPT_DURATION`].
    #[error(
        "prompt {name:?}: {}: {seconds} s is longer than the {} s limit",
        path.display(),
        MAX_PROMPT_DURATION.as_secs()
    )]
    TooLong {
        name: String,
        path: PathBuf,
        seconds: u64,
    },
    /// Two prompts were given the same name.
    #[error("prompt {name:?} is listed twice")]
    DuplicateName { name: String },
    /// More prompts than a [`PromptId`] can number (65 536).
    #[error("{count} prompts given; at most 65536 are supported")]
    TooMany { count: usize },
}

/// The encoding of a WAV file that the library refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavEncoding {
    /// A format tag other than PCM or IEEE float (G.711, ADPCM, MP3, …).
    Compressed,
    /// Integer PCM of this many valid bits per sample (only 8/16/24/32 read).
    Int { bits: u16 },
    /// Float PCM of this many bits per sample (only 32 read).
    Float { bits: u16 },
}

impl fmt::Display for WavEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WavEncoding::Compressed => {
                f.write_str("a compressed or unknown format tag, e.g. G.711 or ADPCM")
            }
            WavEncoding::Int { bits } => write!(f, "{bits}-bit integer"),
            WavEncoding::Float { bits } => write!(f, "{bits}-bit float"),
        }
    }
}

/// Every prompt, as 8 kHz PCM and pre-encoded G.711, loaded once and shared
/// (behind an `Arc` or a `&'static`) by every call.
#[derive(Debug)]
pub struct PromptLibrary {
    prompts: Vec<Prompt>,
    by_name: HashMap<Box<str>, PromptId>,
    /// Packet times prepared with [`PromptLibrary::prepare`], sorted.
    ptimes: Vec<Ptime>,
}

impl PromptLibrary {
    /// Loads `dir/<name>.wav` for every name. Fails on the first file that is
    /// missing or unreadable, naming it.
    pub fn load(dir: &Path, names: &[&str]) -> Result<PromptLibrary, PromptError> {
        let files: Vec<(&str, PathBuf)> = names
            .iter()
            .map(|&name| (name, dir.join(format!("{name}.wav"))))
            .collect();
        PromptLibrary::load_files(&files)
    }

    /// Loads each `(name, path)`. Fails on the first file that is missing or
    /// unreadable, naming it.
    pub fn load_files<N, P>(files: &[(N, P)]) -> Result<PromptLibrary, PromptError>
    where
        N: AsRef<str>,
        P: AsRef<Path>,
    {
        if files.len() > usize::from(u16::MAX) + 1 {
            return Err(PromptError::TooMany { count: files.len() });
        }
        let mut prompts = Vec::with_capacity(files.len());
        let mut by_name = HashMap::with_capacity(files.len());
        for (index, (name, path)) in files.iter().enumerate() {
            let (name, path) = (name.as_ref(), path.as_ref());
            let id = PromptId(u16::try_from(index).expect("count checked against u16 above"));
            if by_name.insert(Box::from(name), id).is_some() {
                return Err(PromptError::DuplicateName { name: name.into() });
            }
            let pcm = read_wav_8k(name, path)?;
            prompts.push(Prompt {
                name: name.into(),
                pcm: pcm.into_boxed_slice(),
                encoded: [None, None],
            });
        }
        Ok(PromptLibrary {
            prompts,
            by_name,
            ptimes: Vec::new(),
        })
    }

    /// Pre-encodes every prompt in each law, padded for each packet time.
    /// May be called again to add laws or packet times; it re-encodes only
    /// when needed. Call it at start-up, before any call plays.
    pub fn prepare(&mut self, laws: &[Law], ptimes: &[Ptime]) {
        self.ptimes.extend_from_slice(ptimes);
        self.ptimes.sort_unstable();
        self.ptimes.dedup();
        let Some(&longest) = self.ptimes.last() else {
            return;
        };
        for prompt in &mut self.prompts {
            // Long enough for whole frames of every prepared packet time.
            let padded = self
                .ptimes
                .iter()
                .map(|p| prompt.pcm.len().div_ceil(p.samples()) * p.samples())
                .max()
                .unwrap_or(longest.samples());
            for law in [Law::Ulaw, Law::Alaw] {
                let slot = &mut prompt.encoded[law_index(law)];
                // Laws prepared earlier are re-padded for new packet times too.
                let wanted = laws.contains(&law) || slot.is_some();
                if !wanted || slot.as_ref().is_some_and(|b| b.len() >= padded) {
                    continue;
                }
                let mut bytes = Vec::with_capacity(padded);
                law.encode_into(&prompt.pcm, &mut bytes);
                bytes.resize(padded, law.silence());
                *slot = Some(Arc::from(bytes));
            }
        }
    }

    /// The id of the prompt called `name`.
    pub fn id(&self, name: &str) -> Option<PromptId> {
        self.by_name.get(name).copied()
    }

    /// The name of a prompt (empty for an id from another library).
    pub fn name(&self, id: PromptId) -> &str {
        self.prompts.get(id.index()).map_or("", |p| &p.name)
    }

    /// The prompt as 8 kHz linear PCM (empty for an id from another library).
    pub fn pcm(&self, id: PromptId) -> &[i16] {
        self.prompts.get(id.index()).map_or(&[], |p| &p.pcm)
    }

    /// The prompt's length, before padding to whole frames.
    pub fn duration(&self, id: PromptId) -> Duration {
        let samples = self.pcm(id).len() as u64;
        Duration::from_nanos(samples * 1_000_000_000 / u64::from(SAMPLE_RATE))
    }

    /// The prompt's frames in `law` at `ptime`, or `None` if that pair was not
    /// prepared (or the id is from another library). Allocation-free: meant
    /// for the packet path.
    pub fn frames(&self, id: PromptId, law: Law, ptime: Ptime) -> Option<Frames<'_>> {
        if !self.ptimes.contains(&ptime) {
            return None;
        }
        let prompt = self.prompts.get(id.index())?;
        let encoded = prompt.encoded[law_index(law)].as_deref()?;
        let frame_len = ptime.samples();
        let frames = prompt.pcm.len().div_ceil(frame_len);
        Some(Frames {
            bytes: encoded.get(..frames * frame_len)?,
            frame_len,
        })
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// Whether the library holds no prompt.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Every prompt id with its name, in load order.
    pub fn iter(&self) -> impl Iterator<Item = (PromptId, &str)> {
        self.prompts.iter().enumerate().map(|(i, p)| {
            let id = PromptId(u16::try_from(i).expect("at most 65536 prompts, checked at load"));
            (id, &*p.name)
        })
    }
}

/// Largest frame: [`Ptime::MAX_MS`] at 8 samples per ms.
const MAX_FRAME_BYTES: usize = Ptime::MAX_MS as usize * 8;
static ULAW_SILENCE: [u8; MAX_FRAME_BYTES] = [Law::Ulaw.silence(); MAX_FRAME_BYTES];
static ALAW_SILENCE: [u8; MAX_FRAME_BYTES] = [Law::Alaw.silence(); MAX_FRAME_BYTES];

/// Sinc zero crossings on each side of the interpolation kernel. With a
/// Blackman window the transition band is about 5.5·fc/32 wide (≈ 640 Hz at a
/// 3.7 kHz cutoff), with ≈ 74 dB of stopband rejection.
const KERNEL_ZEROS: f64 = 32.0;

/// Cutoff as a fraction of the lower of the two Nyquist frequencies: leaves
/// room for the transition band below Nyquist, and keeps the telephone band
/// (to 3.4 kHz) when downsampling to 8 kHz.
const CUTOFF: f64 = 0.925;

/// Kernel table entries per source sample (linear interpolation between
/// entries; the error is below -100 dB).
const KERNEL_OVERSAMPLING: usize = 512;

#[derive(Debug)]
struct Prompt {
    name: Box<str>,
    pcm: Box<[i16]>,
    /// Encoded samples padded with silence, indexed by [`law_index`].
    encoded: [Option<Arc<[u8]>>; 2],
}

fn law_index(law: Law) -> usize {
    match law {
        Law::Ulaw => 0,
        Law::Alaw => 1,
    }
}

/// Reads a WAV file, downmixes it to mono and resamples it to 8 kHz i16.
fn read_wav_8k(name: &str, path: &Path) -> Result<Vec<i16>, PromptError> {
    let wav_error = |e: hound::Error, encoding: WavEncoding| match e {
        hound::Error::IoError(source) if source.kind() == io::ErrorKind::NotFound => {
            PromptError::Missing {
                name: name.into(),
                path: path.into(),
            }
        }
        hound::Error::IoError(source) => PromptError::Io {
            name: name.into(),
            path: path.into(),
            source,
        },
        hound::Error::FormatError(reason) => PromptError::NotWav {
            name: name.into(),
            path: path.into(),
            reason,
        },
        hound::Error::Unsupported
        | hound::Error::TooWide
        | hound::Error::InvalidSampleFormat
        | hound::Error::UnfinishedSample => PromptError::Unsupported {
            name: name.into(),
            path: path.into(),
            encoding,
        },
    };

    let mut reader =
        hound::WavReader::open(path).map_err(|e| wav_error(e, WavEncoding::Compressed))?;
    let spec = reader.spec();
    let encoding = match spec.sample_format {
        hound::SampleFormat::Int => WavEncoding::Int {
            bits: spec.bits_per_sample,
        },
        hound::SampleFormat::Float => WavEncoding::Float {
            bits: spec.bits_per_sample,
        },
    };
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(PromptError::NotWav {
            name: name.into(),
            path: path.into(),
            reason: "zero channels or zero sample rate",
        });
    }
    let frames = u64::from(reader.duration());
    if frames == 0 {
        return Err(PromptError::Empty {
            name: name.into(),
            path: path.into(),
        });
    }
    let seconds = frames / u64::from(spec.sample_rate);
    if seconds > MAX_PROMPT_DURATION.as_secs() {
        return Err(PromptError::TooLong {
            name: name.into(),
            path: path.into(),
            seconds,
        });
    }

    // Read as f64 in [-1, 1), averaging the channels of each frame.
    let channels = usize::from(spec.channels);
    let mut mono = Vec::with_capacity(usize::try_from(frames).unwrap_or(0));
    let mut acc = 0.0f64;
    let mut push = |i: usize, x: f64| {
        acc += x;
        if (i + 1).is_multiple_of(channels) {
            mono.push(acc / channels as f64);
            acc = 0.0;
        }
    };
    match encoding {
        WavEncoding::Float { bits: 32 } => {
            for (i, s) in reader.samples::<f32>().enumerate() {
                let s = s.map_err(|e| wav_error(e, encoding))?;
                // NaN and infinities would poison the filters: treat as silence/clip.
                let x = if s.is_finite() {
                    f64::from(s).clamp(-1.0, 1.0)
                } else {
                    0.0
                };
                push(i, x);
            }
        }
        WavEncoding::Int {
            bits: bits @ (8 | 16 | 24 | 32),
        } => {
            let scale = 1.0 / f64::from(1u32 << (bits - 1));
            for (i, s) in reader.samples::<i32>().enumerate() {
                let s = s.map_err(|e| wav_error(e, encoding))?;
                push(i, f64::from(s) * scale);
            }
        }
        WavEncoding::Int { .. } | WavEncoding::Float { .. } | WavEncoding::Compressed => {
            return Err(PromptError::Unsupported {
                name: name.into(),
                path: path.into(),
                encoding,
            });
        }
    }
    // A trailing partial frame (fewer samples than channels) is dropped.

    let resampled = resample_to_8k(mono, spec.sample_rate);
    Ok(resampled
        .into_iter()
        .map(|x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// Resamples mono audio at `rate` Hz to 8 kHz. The output has
/// `round(len · 8000 / rate)` samples and is time-aligned with the input:
/// output sample `j` is the band-limited input at time `j / 8000` s.
fn resample_to_8k(input: Vec<f64>, rate: u32) -> Vec<f64> {
    if rate == SAMPLE_RATE {
        return input;
    }
    let ratio = f64::from(rate) / f64::from(SAMPLE_RATE);
    let out_len = (input.len() as f64 / ratio).round() as usize;
    let mut interpolator = BandLimited::new(f64::from(rate));
    // Prime the history so that the interpolation point sits on source sample
    // 0 when the Converter yields its first frame (no start-up lag to trim).
    let mut source = input.into_iter();
    for _ in 0..=interpolator.half {
        interpolator.next_source_frame(source.next().unwrap_or(0.0));
    }
    // After the input ends, the source yields silence, which flushes the tail.
    signal::from_iter(source)
        .from_hz_to_hz(interpolator, f64::from(rate), f64::from(SAMPLE_RATE))
        .take(out_len)
        .collect()
}

/// A windowed-sinc interpolator for dasp's `Converter` whose cutoff follows
/// the conversion ratio (so it is also the anti-alias filter).
///
/// `history` holds the last `2·half` source samples, oldest first; the point
/// being interpolated lies between `history[half - 1]` and `history[half]`.
struct BandLimited {
    history: ring_buffer::Fixed<Vec<f64>>,
    half: usize,
    /// The kernel at `t = k / KERNEL_OVERSAMPLING` source samples, `t ∈ [0, half]`.
    kernel: Vec<f64>,
}

impl BandLimited {
    fn new(source_rate: f64) -> BandLimited {
        // Cutoff in cycles per source sample.
        let fc = CUTOFF * source_rate.min(f64::from(SAMPLE_RATE)) / 2.0 / source_rate;
        let half = (KERNEL_ZEROS / (2.0 * fc)).ceil() as usize;
        let pi = std::f64::consts::PI;
        let kernel = (0..=half * KERNEL_OVERSAMPLING + 1)
            .map(|k| {
                let t = k as f64 / KERNEL_OVERSAMPLING as f64;
                let u = t / half as f64;
                if u >= 1.0 {
                    return 0.0;
                }
                let x = 2.0 * fc * t;
                let sinc = if x == 0.0 {
                    1.0
                } else {
                    (pi * x).sin() / (pi * x)
                };
                let blackman = 0.42 + 0.5 * (pi * u).cos() + 0.08 * (2.0 * pi * u).cos();
                2.0 * fc * sinc * blackman
            })
            .collect();
        BandLimited {
            history: ring_buffer::Fixed::from(vec![0.0; 2 * half]),
            half,
            kernel,
        }
    }

    /// The kernel at distance `t ≥ 0` source samples.
    fn at(&self, t: f64) -> f64 {
        let pos = t * KERNEL_OVERSAMPLING as f64;
        let k = pos as usize;
        match (self.kernel.get(k), self.kernel.get(k + 1)) {
            (Some(a), Some(b)) => a + (b - a) * (pos - k as f64),
            _ => 0.0,
        }
    }
}

impl Interpolator for BandLimited {
    type Frame = f64;

    fn interpolate(&self, x: f64) -> f64 {
        let (older, newer) = self.history.slices();
        let left = self.half as f64 - 1.0 + x;
        older
            .iter()
            .chain(newer)
            .enumerate()
            .map(|(i, s)| s * self.at((left - i as f64).abs()))
            .sum()
    }

    fn next_source_frame(&mut self, frame: f64) {
        self.history.push(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "callbackd-prompt-{}-{}-{tag}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn path(&self, file: &str) -> PathBuf {
            self.0.join(file)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes `frames` frames of `f(t, channel)` (t in seconds, value in [-1, 1]).
    fn write_wav(path: &Path, spec: hound::WavSpec, frames: usize, f: impl Fn(f64, u16) -> f64) {
        let mut w = hound::WavWriter::create(path, spec).expect("create wav");
        for i in 0..frames {
            let t = i as f64 / f64::from(spec.sample_rate);
            for c in 0..spec.channels {
                let x = f(t, c);
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(x as f32),
                    (hound::SampleFormat::Int, 8) => w.write_sample((x * 127.0).round() as i8),
                    (hound::SampleFormat::Int, 16) => w.write_sample((x * 32767.0).round() as i16),
                    (hound::SampleFormat::Int, bits) => {
                        let full = f64::from((1u32 << (bits - 1)) - 1);
                        w.write_sample((x * full).round() as i32)
                    }
                }
                .expect("write sample");
            }
        }
        w.finalize().expect("finalize wav");
    }

    fn spec(rate: u32, channels: u16, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    fn sine(freq: f64, amp: f64) -> impl Fn(f64, u16) -> f64 {
        move |t, _| amp * (2.0 * std::f64::consts::PI * freq * t).sin()
    }

    /// Estimated frequency from rising zero crossings over the middle half
    /// (away from the resampler's edge effects).
    fn frequency(pcm: &[i16]) -> f64 {
        let mid = &pcm[pcm.len() / 4..pcm.len() * 3 / 4];
        let rising = mid.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        rising as f64 * f64::from(SAMPLE_RATE) / mid.len() as f64
    }

    fn peak(pcm: &[i16]) -> f64 {
        let mid = &pcm[pcm.len() / 4..pcm.len() * 3 / 4];
        mid.iter().map(|&s| f64::from(s).abs()).fold(0.0, f64::max) / 32768.0
    }

    /// RMS difference over the middle half between `pcm` and the ideal
    /// 8 kHz rendering of `amp·sin(2π·freq·t)`: catches a wrong phase, a
    /// time-reversed interpolation or ringing that pitch and level miss.
    fn error_vs_sine(pcm: &[i16], freq: f64, amp: f64) -> f64 {
        let (from, to) = (pcm.len() / 4, pcm.len() * 3 / 4);
        let sum: f64 = (from..to)
            .map(|j| {
                let t = j as f64 / f64::from(SAMPLE_RATE);
                let ideal = amp * (2.0 * std::f64::consts::PI * freq * t).sin();
                (f64::from(pcm[j]) / 32768.0 - ideal).powi(2)
            })
            .sum();
        (sum / (to - from) as f64).sqrt()
    }

    fn rms(pcm: &[i16]) -> f64 {
        let mid = &pcm[pcm.len() / 4..pcm.len() * 3 / 4];
        let sum: f64 = mid.iter().map(|&s| (f64::from(s) / 32768.0).powi(2)).sum();
        (sum / mid.len() as f64).sqrt()
    }

    fn ms(ms: u16) -> Ptime {
        Ptime::from_ms(ms).expect("valid ptime")
    }

    /// One 20 ms frame, the tolerance on durations.
    const FRAME: usize = 160;

    fn load_one(path: &Path) -> Result<PromptLibrary, PromptError> {
        PromptLibrary::load_files(&[("p", path)])
    }

    #[test]
    fn loads_16k_stereo_24bit_at_8k_keeping_duration_and_pitch() {
        let dir = TempDir::new("s24");
        let path = dir.path("a.wav");
        write_wav(&path, spec(16_000, 2, 24, false), 16_000, sine(1000.0, 0.5));
        let lib = load_one(&path).expect("load");
        let id = lib.id("p").expect("id");
        let pcm = lib.pcm(id);
        assert!(pcm.len().abs_diff(8000) <= FRAME, "len {}", pcm.len());
        assert!(lib.duration(id).abs_diff(Duration::from_secs(1)) <= Duration::from_millis(20));
        let f = frequency(pcm);
        assert!((f - 1000.0).abs() < 10.0, "frequency {f}");
        let r = rms(pcm);
        assert!((r - 0.5 / 2f64.sqrt()).abs() < 0.01, "rms {r}");
        let e = error_vs_sine(pcm, 1000.0, 0.5);
        assert!(e < 1e-3, "error against the ideal sine {e}");
    }

    #[test]
    fn loads_44k1_mono_float_at_8k_keeping_duration_and_pitch() {
        let dir = TempDir::new("f32");
        let path = dir.path("a.wav");
        write_wav(&path, spec(44_100, 1, 32, true), 22_050, sine(1000.0, 0.7));
        let lib = load_one(&path).expect("load");
        let id = lib.id("p").expect("id");
        let pcm = lib.pcm(id);
        assert!(pcm.len().abs_diff(4000) <= FRAME, "len {}", pcm.len());
        let f = frequency(pcm);
        assert!((f - 1000.0).abs() < 10.0, "frequency {f}");
        let r = rms(pcm);
        assert!((r - 0.7 / 2f64.sqrt()).abs() < 0.01, "rms {r}");
        let e = error_vs_sine(pcm, 1000.0, 0.7);
        assert!(e < 1e-3, "error against the ideal sine {e}");
    }

    #[test]
    fn loads_8k_8bit_without_resampling() {
        let dir = TempDir::new("u8");
        let path = dir.path("a.wav");
        write_wav(&path, spec(8000, 1, 8, false), 4000, sine(1000.0, 0.8));
        let lib = load_one(&path).expect("load");
        let pcm = lib.pcm(lib.id("p").expect("id"));
        assert_eq!(pcm.len(), 4000);
        let f = frequency(pcm);
        assert!((f - 1000.0).abs() < 10.0, "frequency {f}");
        // 8-bit code 0.8·127 = 102 → 102/128 of full scale.
        let p = peak(pcm);
        assert!((p - 102.0 / 128.0).abs() < 0.01, "peak {p}");
    }

    #[test]
    fn upsamples_odd_rate_keeping_duration_and_pitch() {
        let dir = TempDir::new("up");
        let path = dir.path("a.wav");
        write_wav(&path, spec(6_000, 1, 16, false), 3_000, sine(1000.0, 0.5));
        let lib = load_one(&path).expect("load");
        let pcm = lib.pcm(lib.id("p").expect("id"));
        assert!(pcm.len().abs_diff(4000) <= FRAME, "len {}", pcm.len());
        let f = frequency(pcm);
        assert!((f - 1000.0).abs() < 10.0, "frequency {f}");
        let r = rms(pcm);
        assert!((r - 0.5 / 2f64.sqrt()).abs() < 0.01, "rms {r}");
        let e = error_vs_sine(pcm, 1000.0, 0.5);
        assert!(e < 1e-3, "error against the ideal sine {e}");
    }

    #[test]
    fn downmixes_by_averaging_channels() {
        let dir = TempDir::new("mix");
        let path = dir.path("a.wav");
        // Left carries the tone, right is silent: the mono mix is half as loud.
        let tone = sine(1000.0, 0.8);
        write_wav(&path, spec(8000, 2, 16, false), 4000, move |t, c| {
            if c == 0 { tone(t, c) } else { 0.0 }
        });
        let lib = load_one(&path).expect("load");
        let p = peak(lib.pcm(lib.id("p").expect("id")));
        assert!((p - 0.4).abs() < 0.01, "peak {p}");
    }

    #[test]
    fn rejects_content_above_4khz_instead_of_aliasing_it() {
        // 6 kHz at 16 kHz would fold to 2 kHz without the anti-alias filter.
        let dir = TempDir::new("alias");
        let path = dir.path("a.wav");
        write_wav(&path, spec(16_000, 1, 16, false), 16_000, sine(6000.0, 0.9));
        let lib = load_one(&path).expect("load");
        let r = rms(lib.pcm(lib.id("p").expect("id")));
        // 0.9 peak is 0.64 RMS; demand more than 60 dB of rejection.
        assert!(r < 0.64e-3, "alias rms {r}");
    }

    #[test]
    fn resampling_keeps_a_click_in_place() {
        // A single full-scale click at 0.25 s must stay at 0.25 s (sample 2000).
        let dir = TempDir::new("click");
        let path = dir.path("a.wav");
        let rate = 48_000;
        write_wav(&path, spec(rate, 1, 16, false), 24_000, |t, _| {
            if (t * 48_000.0).round() as usize == 12_000 {
                1.0
            } else {
                0.0
            }
        });
        let lib = load_one(&path).expect("load");
        let pcm = lib.pcm(lib.id("p").expect("id"));
        let (at, _) = pcm
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.unsigned_abs())
            .expect("non-empty");
        assert_eq!(at, 2000, "click moved");
    }

    #[test]
    fn frames_are_8_times_ptime_bytes_and_padded_with_silence() {
        let dir = TempDir::new("frames");
        let path = dir.path("a.wav");
        // 1000 samples: not a multiple of any of the frame sizes below.
        write_wav(&path, spec(8000, 1, 16, false), 1000, sine(440.0, 0.5));
        let mut lib = load_one(&path).expect("load");
        let ptimes = [ms(10), ms(20), ms(30), ms(40)];
        lib.prepare(&[Law::Ulaw, Law::Alaw], &ptimes);
        let id = lib.id("p").expect("id");
        let pcm = lib.pcm(id).to_vec();
        for law in [Law::Ulaw, Law::Alaw] {
            for ptime in ptimes {
                let frames = lib.frames(id, law, ptime).expect("prepared");
                let size = 8 * usize::from(ptime.ms());
                assert_eq!(frames.frame_len(), size);
                assert_eq!(frames.len(), 1000usize.div_ceil(size));
                assert!(frames.iter().all(|f| f.len() == size));
                assert_eq!(frames.get(frames.len()), None);
                let bytes = frames.as_bytes();
                assert_eq!(bytes.len(), frames.len() * size);
                let expected: Vec<u8> = pcm.iter().map(|&s| law.encode(s)).collect();
                assert_eq!(&bytes[..1000], &expected[..], "{law:?} {ptime:?}");
                assert!(
                    bytes[1000..].iter().all(|&b| b == law.silence()),
                    "{law:?} {ptime:?} padding"
                );
                assert_eq!(frames.frame(1), &bytes[size..2 * size]);
            }
        }
    }

    #[test]
    fn frames_are_shared_not_copied() {
        let dir = TempDir::new("share");
        let path = dir.path("a.wav");
        write_wav(&path, spec(8000, 1, 16, false), 800, sine(440.0, 0.5));
        let mut lib = load_one(&path).expect("load");
        lib.prepare(&[Law::Ulaw], &[ms(20), ms(30)]);
        let id = lib.id("p").expect("id");
        let a = lib.frames(id, Law::Ulaw, ms(20)).expect("prepared");
        let b = lib.frames(id, Law::Ulaw, ms(20)).expect("prepared");
        let c = lib.frames(id, Law::Ulaw, ms(30)).expect("prepared");
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
        assert_eq!(a.as_bytes().as_ptr(), c.as_bytes().as_ptr());
    }

    #[test]
    fn frames_absent_for_unprepared_law_or_ptime() {
        let dir = TempDir::new("unprep");
        let path = dir.path("a.wav");
        write_wav(&path, spec(8000, 1, 16, false), 800, sine(440.0, 0.5));
        let mut lib = load_one(&path).expect("load");
        let id = lib.id("p").expect("id");
        assert!(lib.frames(id, Law::Ulaw, ms(20)).is_none());
        lib.prepare(&[Law::Ulaw], &[ms(20)]);
        assert!(lib.frames(id, Law::Ulaw, ms(20)).is_some());
        assert!(lib.frames(id, Law::Alaw, ms(20)).is_none());
        assert!(lib.frames(id, Law::Ulaw, ms(30)).is_none());
        // Adding a longer ptime later re-pads: 800 samples → 4 frames of 240.
        lib.prepare(&[Law::Ulaw], &[ms(30)]);
        let f = lib.frames(id, Law::Ulaw, ms(30)).expect("prepared");
        assert_eq!(f.len(), 4);
        assert!(f.frame(3)[80..].iter().all(|&b| b == Law::Ulaw.silence()));
    }

    #[test]
    fn law_prepared_earlier_is_repadded_for_a_later_ptime() {
        let dir = TempDir::new("repad");
        let path = dir.path("a.wav");
        write_wav(&path, spec(8000, 1, 16, false), 800, sine(440.0, 0.5));
        let mut lib = load_one(&path).expect("load");
        let id = lib.id("p").expect("id");
        lib.prepare(&[Law::Ulaw], &[ms(20)]);
        lib.prepare(&[Law::Alaw], &[ms(30)]);
        // 800 samples: 5 frames of 160, or 4 frames of 240 (the last padded).
        for law in [Law::Ulaw, Law::Alaw] {
            assert_eq!(lib.frames(id, law, ms(20)).map(|f| f.len()), Some(5));
            let f = lib.frames(id, law, ms(30)).expect("prepared");
            assert_eq!(f.len(), 4);
            assert!(
                f.frame(3)[80..].iter().all(|&b| b == law.silence()),
                "{law:?}"
            );
        }
    }

    #[test]
    fn rejects_missing_file_naming_it() {
        let dir = TempDir::new("missing");
        let err = PromptLibrary::load(&dir.0, &["welcome"]).expect_err("missing");
        assert!(matches!(err, PromptError::Missing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("welcome.wav"), "{msg}");
        assert!(msg.contains("not found"), "{msg}");
    }

    #[test]
    fn rejects_file_that_is_not_a_wav() {
        let dir = TempDir::new("notwav");
        let path = dir.path("a.wav");
        std::fs::write(&path, b"ID3\x03\x00 this is an mp3, honest").expect("write");
        let err = load_one(&path).expect_err("not a wav");
        assert!(matches!(err, PromptError::NotWav { .. }), "{err:?}");
        assert!(err.to_string().contains("a.wav"), "{err}");
    }

    #[test]
    fn rejects_truncated_wav() {
        let dir = TempDir::new("trunc");
        let path = dir.path("a.wav");
        write_wav(&path, spec(8000, 1, 16, false), 800, sine(440.0, 0.5));
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        let err = load_one(&path).expect_err("truncated");
        assert!(matches!(err, PromptError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("a.wav"), "{err}");
    }

    #[test]
    fn rejects_empty_wav() {
        let dir = TempDir::new("empty");
        let path = dir.path("a.wav");
        write_wav(&path, spec(8000, 1, 16, false), 0, sine(440.0, 0.5));
        let err = load_one(&path).expect_err("empty");
        assert!(matches!(err, PromptError::Empty { .. }), "{err:?}");
        assert!(err.to_string().contains("a.wav"), "{err}");
    }

    #[test]
    fn rejects_g711_wav_as_unsupported() {
        // A well-formed header with format tag 7: G.711 µ-law, common for
        // telephony prompts, but not PCM.
        let dir = TempDir::new("ulaw");
        let path = dir.path("a.wav");
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(4u32 + 8 + 16 + 8 + 4).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&7u16.to_le_bytes()); // format tag: µ-law
        b.extend_from_slice(&1u16.to_le_bytes()); // channels
        b.extend_from_slice(&8000u32.to_le_bytes()); // rate
        b.extend_from_slice(&8000u32.to_le_bytes()); // byte rate
        b.extend_from_slice(&1u16.to_le_bytes()); // block align
        b.extend_from_slice(&8u16.to_le_bytes()); // bits
        b.extend_from_slice(b"data");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        std::fs::write(&path, &b).expect("write");
        let err = load_one(&path).expect_err("µ-law wav");
        assert!(
            matches!(
                err,
                PromptError::Unsupported {
                    encoding: WavEncoding::Compressed,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_duplicate_names() {
        let dir = TempDir::new("dup");
        let path = dir.path("a.wav");
        write_wav(&path, spec(8000, 1, 16, false), 80, sine(440.0, 0.5));
        let err = PromptLibrary::load_files(&[("x", &path), ("x", &path)]).expect_err("dup");
        assert!(matches!(err, PromptError::DuplicateName { .. }), "{err:?}");
    }

    #[test]
    fn ids_follow_load_order_and_unknown_names_have_none() {
        let dir = TempDir::new("ids");
        for name in ["one", "two"] {
            write_wav(
                &dir.path(&format!("{name}.wav")),
                spec(8000, 1, 16, false),
                80,
                sine(440.0, 0.1),
            );
        }
        let lib = PromptLibrary::load(&dir.0, &["one", "two"]).expect("load");
        assert_eq!(lib.id("one").map(PromptId::index), Some(0));
        assert_eq!(lib.id("two").map(PromptId::index), Some(1));
        assert_eq!(lib.id("three"), None);
        assert_eq!(lib.name(lib.id("two").expect("id")), "two");
        assert_eq!(lib.len(), 2);
    }

    #[test]
    fn ptime_rejects_zero_and_oversized() {
        assert_eq!(Ptime::from_ms(0), None);
        assert_eq!(Ptime::from_ms(Ptime::MAX_MS + 1), None);
        assert_eq!(Ptime::from_ms(30).map(Ptime::samples), Some(240));
        assert_eq!(silence_frame(Law::Alaw, ms(Ptime::MAX_MS)).len(), 1440);
        assert!(silence_frame(Law::Ulaw, ms(20)).iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn standard_prompts_in_repository_all_load_at_8k() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let mut lib = PromptLibrary::load(&dir, &STANDARD_PROMPTS).expect("load prompts/");
        lib.prepare(&[Law::Ulaw, Law::Alaw], &[Ptime::DEFAULT]);
        assert_eq!(lib.len(), STANDARD_PROMPTS.len());
        let hold = lib.id("hold_music").expect("hold music");
        let secs = lib.duration(hold).as_secs_f64();
        assert!((20.0..=30.0).contains(&secs), "hold music {secs} s");
        let ring = lib.id("ringback").expect("ringback");
        assert_eq!(lib.duration(ring), Duration::from_secs(6));
        for (id, name) in lib.iter() {
            assert!(!lib.pcm(id).is_empty(), "{name} is empty");
        }
    }
}
