//! A bridged call as a stereo WAV: agent left, customer right, 8 kHz 16-bit
//! linear PCM (hound).
//!
//! Two halves, so the media thread never waits on a disk:
//!
//! - On the media thread, per channel, a [`Placement`] puts each received
//!   packet on the recording's timeline (samples since the recording
//!   started), and [`chunks`] decodes its G.711 payload into fixed-size
//!   [`Chunk`]s — plain values that go through a bounded channel without
//!   allocating (the caller drops and counts when the channel is full).
//! - On the recorder's own thread, a [`StereoWriter`] takes chunks from both
//!   channels in any interleaving, keeps [`StereoWriter::LAG`] of audio to let
//!   the slower channel catch up, fills what no packet covered with silence,
//!   and writes interleaved frames through any `Write + Seek` (a file in the
//!   engine, a `Cursor` in tests).
//!
//! Timeline: a packet goes where the previous one of its channel ended, so
//! audio is contiguous under network jitter; when that drifts more than
//! [`Placement::TOLERANCE`] from the packet's arrival time (a pause in the
//! sender's stream: silence suppression, hold, loss, a new source), it goes
//! at its arrival time instead, and the gap stays silent. The two channels
//! are thus aligned to within the tolerance.

// std
use std::collections::VecDeque;
use std::io::{Seek, Write};
use std::time::{Duration, Instant};

// external
use thiserror::Error;

// crate
use crate::media::g711::Law;
use crate::media::prompt::SAMPLE_RATE;

/// Samples in one [`Chunk`]: 60 ms, three 20 ms packets or two 30 ms ones.
pub const CHUNK_SAMPLES: usize = 480;

/// A side of the stereo file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The agent (first channel of each frame).
    Left,
    /// The customer (second channel of each frame).
    Right,
}

/// Up to [`CHUNK_SAMPLES`] decoded samples of one channel at a position of
/// the recording's timeline. A plain value: moving it through a channel
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Which channel.
    pub channel: Channel,
    /// Timeline position of the first sample (samples since the start).
    pub position: u64,
    /// Samples used in `samples`.
    pub len: u16,
    /// Linear PCM.
    pub samples: [i16; CHUNK_SAMPLES],
}

impl Chunk {
    /// The samples in use.
    pub fn samples(&self) -> &[i16] {
        &self.samples[..usize::from(self.len).min(CHUNK_SAMPLES)]
    }
}

/// Why a recording could not be written (local faults: disk, permissions).
#[derive(Debug, Error)]
pub enum RecorderError {
    /// Creating or writing the WAV file failed.
    #[error("cannot write the recording: {0}")]
    Wav(#[from] hound::Error),
}

/// Places one channel's packets on the recording's timeline (see the module
/// documentation). Lives on the media thread.
#[derive(Debug, Clone)]
pub struct Placement {
    start: Instant,
    cursor: Option<u64>,
}

impl Placement {
    /// How far the contiguous position may drift from the arrival time
    /// before the packet is placed at its arrival time (200 ms).
    pub const TOLERANCE: u64 = SAMPLE_RATE as u64 / 5;

    /// A timeline starting at `start` (the recording's first instant).
    pub fn new(start: Instant) -> Placement {
        Placement {
            start,
            cursor: None,
        }
    }

    /// The position of a packet of `len` samples that arrived at `now`.
    pub fn place(&mut self, now: Instant, len: usize) -> u64 {
        let arrival = samples_in(now.saturating_duration_since(self.start));
        let position = match self.cursor {
            Some(cursor) if cursor.abs_diff(arrival) <= Self::TOLERANCE => cursor,
            _ => arrival,
        };
        self.cursor = Some(position + len as u64);
        position
    }
}

/// Decodes a G.711 `payload` placed at `position` into chunks of `channel`.
pub fn chunks(
    channel: Channel,
    position: u64,
    law: Law,
    payload: &[u8],
) -> impl Iterator<Item = Chunk> + '_ {
    payload
        .chunks(CHUNK_SAMPLES)
        .enumerate()
        .map(move |(i, codes)| {
            let mut chunk = Chunk {
                channel,
                position: position + (i * CHUNK_SAMPLES) as u64,
                len: codes.len() as u16,
                samples: [0; CHUNK_SAMPLES],
            };
            for (s, &c) in chunk.samples.iter_mut().zip(codes) {
                *s = law.decode(c);
            }
            chunk
        })
}

/// Turns chunks of both channels into a stereo WAV. Lives on the recorder
/// thread; see the module documentation.
pub struct StereoWriter<W: Write + Seek> {
    wav: hound::WavWriter<W>,
    /// Frames from `written` on, per channel; shorter means silence.
    left: VecDeque<i16>,
    right: VecDeque<i16>,
    /// Frames written to the file so far.
    written: u64,
    /// Samples that arrived for a part of the timeline already written.
    late: u64,
}

impl<W: Write + Seek> StereoWriter<W> {
    /// Audio held back for the other channel to catch up (500 ms): a chunk
    /// later than this behind the newest one is dropped (counted in
    /// [`StereoWriter::late_samples`]).
    pub const LAG: u64 = SAMPLE_RATE as u64 / 2;

    /// Starts a WAV (2 channels, 8 kHz, 16-bit integer) on `writer`.
    pub fn new(writer: W) -> Result<Self, RecorderError> {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Ok(StereoWriter {
            wav: hound::WavWriter::new(writer, spec)?,
            left: VecDeque::with_capacity(2 * Self::LAG as usize),
            right: VecDeque::with_capacity(2 * Self::LAG as usize),
            written: 0,
            late: 0,
        })
    }

    /// Places a chunk; writes what is older than [`StereoWriter::LAG`]
    /// behind it.
    pub fn push(&mut self, chunk: &Chunk) -> Result<(), RecorderError> {
        let samples = chunk.samples();
        let end = chunk.position + samples.len() as u64;
        // Keep memory bounded by LAG whatever the gap: write out (silence
        // included) up to LAG before this chunk's end first.
        self.write_until(end.saturating_sub(Self::LAG))?;
        let skip = self.written.saturating_sub(chunk.position);
        self.late += skip.min(samples.len() as u64);
        let Some(samples) = samples.get(skip as usize..) else {
            return Ok(());
        };
        let offset = (chunk.position + skip - self.written) as usize;
        let buf = match chunk.channel {
            Channel::Left => &mut self.left,
            Channel::Right => &mut self.right,
        };
        if buf.len() < offset + samples.len() {
            buf.resize(offset + samples.len(), 0);
        }
        for (i, &s) in samples.iter().enumerate() {
            buf[offset + i] = s;
        }
        Ok(())
    }

    /// Writes everything held and finishes the file (header lengths).
    /// Returns the number of stereo frames written.
    pub fn finish(mut self) -> Result<u64, RecorderError> {
        let end = self.written + self.left.len().max(self.right.len()) as u64;
        self.write_until(end)?;
        self.wav.finalize()?;
        Ok(self.written)
    }

    /// Samples dropped because they came after their time was written.
    pub fn late_samples(&self) -> u64 {
        self.late
    }

    /// Frames written so far.
    #[cfg(test)]
    pub(crate) fn frames_written(&self) -> u64 {
        self.written
    }

    /// Writes frames up to timeline position `until` (exclusive); silence
    /// where a channel has nothing.
    fn write_until(&mut self, until: u64) -> Result<(), RecorderError> {
        while self.written < until {
            let l = self.left.pop_front().unwrap_or(0);
            let r = self.right.pop_front().unwrap_or(0);
            self.wav.write_sample(l)?;
            self.wav.write_sample(r)?;
            self.written += 1;
        }
        Ok(())
    }
}

/// Samples at 8 kHz in `d`.
fn samples_in(d: Duration) -> u64 {
    (d.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn chunk(channel: Channel, position: u64, value: i16, len: usize) -> Chunk {
        let mut c = Chunk {
            channel,
            position,
            len: len as u16,
            samples: [0; CHUNK_SAMPLES],
        };
        c.samples[..len].fill(value);
        c
    }

    fn read_back(bytes: Vec<u8>) -> (hound::WavSpec, Vec<(i16, i16)>) {
        let mut reader = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        let spec = reader.spec();
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        let frames = samples.chunks_exact(2).map(|f| (f[0], f[1])).collect();
        (spec, frames)
    }

    #[test]
    fn writes_both_channels_aligned_with_silence_between() {
        let mut out = Cursor::new(Vec::new());
        let mut w = StereoWriter::new(&mut out).unwrap();
        w.push(&chunk(Channel::Left, 0, 100, 160)).unwrap();
        w.push(&chunk(Channel::Right, 80, -200, 160)).unwrap();
        w.push(&chunk(Channel::Left, 160, 101, 160)).unwrap();
        assert_eq!(w.finish().unwrap(), 320);
        let (spec, frames) = read_back(out.into_inner());
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8000, 16)
        );
        assert_eq!(frames.len(), 320);
        assert_eq!(frames[0], (100, 0));
        assert_eq!(frames[79], (100, 0));
        assert_eq!(frames[80], (100, -200));
        assert_eq!(frames[200], (101, -200));
        assert_eq!(frames[240], (101, 0));
    }

    #[test]
    fn long_gap_is_silence_and_memory_stays_bounded() {
        let mut out = Cursor::new(Vec::new());
        let mut w = StereoWriter::new(&mut out).unwrap();
        w.push(&chunk(Channel::Left, 0, 7, 160)).unwrap();
        // One minute later.
        w.push(&chunk(Channel::Right, 480_000, 9, 160)).unwrap();
        assert!(w.left.len() + w.right.len() <= 2 * StereoWriter::<Cursor<Vec<u8>>>::LAG as usize);
        assert_eq!(w.frames_written(), 480_160 - 4000);
        let frames = w.finish().unwrap();
        assert_eq!(frames, 480_160);
        let (_, f) = read_back(out.into_inner());
        assert_eq!(f[159], (7, 0));
        assert_eq!(f[160], (0, 0));
        assert_eq!(f[480_000], (0, 9));
    }

    #[test]
    fn rejects_samples_older_than_what_was_written() {
        let mut out = Cursor::new(Vec::new());
        let mut w = StereoWriter::new(&mut out).unwrap();
        w.push(&chunk(Channel::Left, 10_000, 1, 160)).unwrap();
        // Written up to 10_160 - 4000 = 6160: a chunk at 6100 is half late.
        w.push(&chunk(Channel::Right, 6_100, 2, 160)).unwrap();
        assert_eq!(w.late_samples(), 60);
        w.finish().unwrap();
        let (_, f) = read_back(out.into_inner());
        assert_eq!(f[6_159], (0, 0));
        assert_eq!(f[6_160], (0, 2));
        assert_eq!(f[10_000], (1, 0));
    }

    #[test]
    fn placement_is_contiguous_under_jitter_and_follows_pauses() {
        let t0 = Instant::now();
        let mut p = Placement::new(t0);
        assert_eq!(p.place(t0, 160), 0);
        // 15 ms late, then 5 ms early: still back to back.
        assert_eq!(p.place(t0 + Duration::from_millis(35), 160), 160);
        assert_eq!(p.place(t0 + Duration::from_millis(35), 160), 320);
        // A 2 s pause: placed at its arrival.
        assert_eq!(p.place(t0 + Duration::from_secs(2), 160), 16_000);
        assert_eq!(p.place(t0 + Duration::from_millis(2020), 160), 16_160);
    }

    #[test]
    fn chunks_decode_and_split_long_payloads() {
        let payload = vec![0x00u8; 1000];
        let cs: Vec<_> = chunks(Channel::Right, 8, Law::Ulaw, &payload).collect();
        assert_eq!(cs.len(), 3);
        assert_eq!(
            cs.iter().map(|c| (c.position, c.len)).collect::<Vec<_>>(),
            [(8, 480), (488, 480), (968, 40)]
        );
        assert!(cs.iter().all(|c| c.channel == Channel::Right));
        assert!(cs[2].samples().iter().all(|&s| s == Law::Ulaw.decode(0)));
        assert_eq!(cs[2].samples().len(), 40);
    }
}
