//! Paced prompt playback for one call, sans-IO.
//!
//! The media thread keeps one pacing clock for all calls and, once per packet
//! time, asks each call's [`Player`] for its next frame. The player owns only
//! a play list and a cursor; the audio itself is borrowed from the shared
//! [`PromptLibrary`], so [`Player::next_frame`] copies and allocates nothing.
//!
//! ```text
//!            play / enqueue                 next_frame (per ptime tick)
//!   Idle ───────────────────────▶ Playing ─────────────────────────────┐
//!    ▲  ◀── list runs out (Idle event) ──┘  ◀── frame, maybe Finished ─┘
//!    └────────────── stop() (barge-in) ◀────────┘
//! ```
//!
//! What the caller sends:
//! - `Some(frame)`: one RTP packet with `frame.payload` (G.711, so the RTP
//!   timestamp advances by `payload.len()` samples) and the marker bit set to
//!   `frame.marker`.
//! - `None`: the player is idle and **nothing is sent** (no comfort noise).
//!   The RTP timestamp still advances by one packet time per tick, so the next
//!   talk spurt carries the right timestamp (RFC 3550 §5.1), and its first
//!   packet has the marker bit set.
//!
//! [`Item::Silence`] is *sent* as silence-coded packets: the stream stays
//! continuous, so the packet after it is not the start of a talk spurt and
//! carries no marker (RFC 3551 §4.1: the marker marks the first packet after
//! a period in which no packets were sent).

use std::collections::VecDeque;
use std::time::Duration;

use crate::media::g711::Law;
use crate::media::prompt::{PromptId, PromptLibrary, Ptime, silence_frame};

/// One entry of a play list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// Play a prompt once, then go on with the next item.
    Prompt(PromptId),
    /// Play a prompt over and over until stopped or replaced (hold music,
    /// ringback). Items queued after it never play.
    Loop(PromptId),
    /// Send silence for this long (rounded up to whole packets).
    Silence(Duration),
}

/// One packet's worth of audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The G.711 payload, borrowed from the shared library or a static
    /// silence buffer.
    pub payload: &'a [u8],
    /// Set the RTP marker bit: first packet of a talk spurt (RFC 3550 §5.1,
    /// RFC 3551 §4.1), i.e. the first packet after the player was idle.
    pub marker: bool,
}

/// What the player reports to the call logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayerEvent {
    /// A [`Item::Prompt`] has handed out its last frame.
    Finished(PromptId),
    /// The play list ran out: the frame just returned (if any) was the last
    /// one and the next `next_frame` returns `None`. Not emitted by
    /// [`Player::stop`], whose caller already knows.
    Idle,
    /// A prompt was skipped because the library has no frames for this
    /// player's law and packet time (not prepared at start-up) or does not
    /// know the id. A local configuration fault.
    NotPrepared(PromptId),
}

/// Playback state of one call.
#[derive(Debug)]
pub struct Player {
    items: VecDeque<Item>,
    events: VecDeque<PlayerEvent>,
    /// Frames of `items.front()` already handed out.
    position: u32,
    law: Law,
    ptime: Ptime,
    /// The previous tick returned a frame (the stream is in a talk spurt).
    sending: bool,
}

impl Player {
    /// An idle player sending `law` frames of `ptime`.
    pub fn new(law: Law, ptime: Ptime) -> Player {
        Player {
            items: VecDeque::new(),
            // Room for the most one tick can emit (Finished + Idle, or
            // NotPrepared + Finished + Idle), so that a caller who drains
            // after every tick never makes `next_frame` allocate.
            events: VecDeque::with_capacity(4),
            position: 0,
            law,
            ptime,
            sending: false,
        }
    }

    /// The law this player encodes in.
    pub fn law(&self) -> Law {
        self.law
    }

    /// The packet time of this player's frames.
    pub fn ptime(&self) -> Ptime {
        self.ptime
    }

    /// Replaces the play list; whatever was playing stops at once (no
    /// `Finished` for it) and `items` start on the next tick.
    pub fn play(&mut self, items: impl IntoIterator<Item = Item>) {
        self.items.clear();
        self.items.extend(items);
        self.position = 0;
    }

    /// Appends an item after everything already queued.
    pub fn enqueue(&mut self, item: Item) {
        self.items.push_back(item);
    }

    /// Barge-in: drops the playing item and everything queued. The next
    /// `next_frame` returns `None`. Pending events stay to be polled.
    pub fn stop(&mut self) {
        self.items.clear();
        self.position = 0;
    }

    /// Whether nothing is queued: `next_frame` will return `None`.
    pub fn is_idle(&self) -> bool {
        self.items.is_empty()
    }

    /// The frame to send on this tick, or `None` when idle (send nothing).
    /// Call once per packet time from the shared pacing clock, then drain
    /// [`Player::poll_event`]. Allocation-free while events are drained.
    pub fn next_frame<'a>(&mut self, lib: &'a PromptLibrary) -> Option<Frame<'a>> {
        let payload = self.advance(lib);
        let marker = payload.is_some() && !self.sending;
        self.sending = payload.is_some();
        payload.map(|payload| Frame { payload, marker })
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<PlayerEvent> {
        self.events.pop_front()
    }

    /// Takes one frame from the head of the play list, retiring items as they
    /// complete. Each pass of the loop either returns or pops an item, so it
    /// ends.
    fn advance<'a>(&mut self, lib: &'a PromptLibrary) -> Option<&'a [u8]> {
        loop {
            let item = *self.items.front()?;
            match item {
                Item::Prompt(id) | Item::Loop(id) => {
                    let Some(frames) = lib.frames(id, self.law, self.ptime) else {
                        self.events.push_back(PlayerEvent::NotPrepared(id));
                        self.retire();
                        continue;
                    };
                    let looping = matches!(item, Item::Loop(_));
                    if looping && self.position as usize >= frames.len() {
                        self.position = 0;
                    }
                    let Some(payload) = frames.get(self.position as usize) else {
                        // Only reachable if the item's length changed under us
                        // (a re-prepared library); treat the prompt as done.
                        self.events.push_back(PlayerEvent::Finished(id));
                        self.retire();
                        continue;
                    };
                    self.position += 1;
                    if !looping && self.position as usize == frames.len() {
                        self.events.push_back(PlayerEvent::Finished(id));
                        self.retire();
                    }
                    return Some(payload);
                }
                Item::Silence(duration) => {
                    let total = silence_frames(duration, self.ptime);
                    if self.position >= total {
                        self.retire();
                        continue;
                    }
                    self.position += 1;
                    if self.position == total {
                        self.retire();
                    }
                    return Some(silence_frame(self.law, self.ptime));
                }
            }
        }
    }

    /// Drops the head item; reports `Idle` if that empties the list.
    fn retire(&mut self) {
        self.items.pop_front();
        self.position = 0;
        if self.items.is_empty() {
            self.events.push_back(PlayerEvent::Idle);
        }
    }
}

/// Packets needed to cover `duration`, rounded up; saturates for absurd
/// durations (a `u32` of 1 ms packets is 49 days).
fn silence_frames(duration: Duration, ptime: Ptime) -> u32 {
    let frames = duration.as_nanos().div_ceil(ptime.duration().as_nanos());
    u32::try_from(frames).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A library of short 8 kHz test prompts: `(name, samples)`, every sample
    /// a distinct non-silent level so frames can be told apart.
    struct Fixture {
        lib: PromptLibrary,
        dir: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(prompts: &[(&str, usize, i16)]) -> Fixture {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "callbackd-player-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut files = Vec::new();
        for &(name, samples, level) in prompts {
            let path = dir.join(format!("{name}.wav"));
            let mut w = hound::WavWriter::create(&path, spec).expect("create");
            for _ in 0..samples {
                w.write_sample(level).expect("write");
            }
            w.finalize().expect("finalize");
            files.push((name, path));
        }
        let mut lib = PromptLibrary::load_files(&files).expect("load");
        lib.prepare(&[Law::Ulaw, Law::Alaw], &[ms(20), ms(30)]);
        Fixture { lib, dir }
    }

    fn ms(ms: u16) -> Ptime {
        Ptime::from_ms(ms).expect("valid ptime")
    }

    fn drain(p: &mut Player) -> Vec<PlayerEvent> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    #[test]
    fn prompt_then_loop_gives_prompt_frames_then_loop_frames_forever() {
        // "intro" is exactly 3 frames of 20 ms; "hold" 2 frames.
        let f = fixture(&[("intro", 480, 1000), ("hold", 320, -2000)]);
        let (intro, hold) = (
            f.lib.id("intro").expect("id"),
            f.lib.id("hold").expect("id"),
        );
        let intro_code = Law::Ulaw.encode(1000);
        let hold_frames = f.lib.frames(hold, Law::Ulaw, ms(20)).expect("prepared");
        let mut p = Player::new(Law::Ulaw, ms(20));
        p.play([Item::Prompt(intro), Item::Loop(hold)]);
        for i in 0..3 {
            let frame = p.next_frame(&f.lib).expect("intro frame");
            assert!(frame.payload.iter().all(|&b| b == intro_code), "frame {i}");
        }
        for i in 0..1000 {
            let frame = p.next_frame(&f.lib).expect("loop never ends");
            assert_eq!(frame.payload, hold_frames.frame(i % 2), "loop frame {i}");
            // Borrowed from the shared buffer, not copied.
            assert_eq!(frame.payload.as_ptr(), hold_frames.frame(i % 2).as_ptr());
        }
        assert!(!p.is_idle());
    }

    #[test]
    fn marker_only_on_first_frame_of_a_talk_spurt() {
        let f = fixture(&[("intro", 480, 1000), ("hold", 320, -2000)]);
        let (intro, hold) = (
            f.lib.id("intro").expect("id"),
            f.lib.id("hold").expect("id"),
        );
        let mut p = Player::new(Law::Alaw, ms(20));
        p.play([
            Item::Prompt(intro),
            Item::Silence(Duration::from_millis(40)),
            Item::Loop(hold),
        ]);
        let markers: Vec<bool> = (0..20)
            .map(|_| p.next_frame(&f.lib).expect("frame").marker)
            .collect();
        assert!(markers[0]);
        assert!(markers[1..].iter().all(|&m| !m), "{markers:?}");
        // After an idle gap, the next spurt is marked again.
        p.stop();
        assert_eq!(p.next_frame(&f.lib), None);
        p.play([Item::Prompt(intro)]);
        assert!(p.next_frame(&f.lib).expect("frame").marker);
        assert!(!p.next_frame(&f.lib).expect("frame").marker);
    }

    #[test]
    fn stop_mid_prompt_gives_none_at_once() {
        let f = fixture(&[("intro", 480, 1000)]);
        let intro = f.lib.id("intro").expect("id");
        let mut p = Player::new(Law::Ulaw, ms(20));
        p.play([Item::Prompt(intro), Item::Prompt(intro)]);
        assert!(p.next_frame(&f.lib).is_some());
        p.stop();
        assert!(p.is_idle());
        assert_eq!(p.next_frame(&f.lib), None);
        assert_eq!(
            drain(&mut p),
            [],
            "a stopped prompt does not report Finished"
        );
    }

    #[test]
    fn ptime_30_gives_240_byte_frames() {
        let f = fixture(&[("intro", 480, 1000)]);
        let intro = f.lib.id("intro").expect("id");
        let mut p = Player::new(Law::Ulaw, ms(30));
        p.play([
            Item::Prompt(intro),
            Item::Silence(Duration::from_millis(30)),
        ]);
        let sizes: Vec<usize> = std::iter::from_fn(|| p.next_frame(&f.lib))
            .map(|fr| fr.payload.len())
            .collect();
        // 480 samples = 2 frames of 240, then one silence frame.
        assert_eq!(sizes, [240, 240, 240]);
    }

    #[test]
    fn events_report_each_prompt_then_idle_in_order() {
        let f = fixture(&[("a", 160, 1000), ("b", 320, 2000)]);
        let (a, b) = (f.lib.id("a").expect("id"), f.lib.id("b").expect("id"));
        let mut p = Player::new(Law::Ulaw, ms(20));
        p.play([Item::Prompt(a), Item::Prompt(b)]);

        assert!(p.next_frame(&f.lib).is_some()); // a's only frame
        assert_eq!(drain(&mut p), [PlayerEvent::Finished(a)]);
        assert!(p.next_frame(&f.lib).is_some()); // b 1/2
        assert_eq!(drain(&mut p), []);
        assert!(p.next_frame(&f.lib).is_some()); // b 2/2
        assert_eq!(drain(&mut p), [PlayerEvent::Finished(b), PlayerEvent::Idle]);
        assert!(p.is_idle());
        assert_eq!(p.next_frame(&f.lib), None);
        assert_eq!(drain(&mut p), [], "Idle is reported once");
    }

    #[test]
    fn welcome_then_hold_music_enqueued_on_finished_plays_seamlessly() {
        let f = fixture(&[("welcome", 320, 1000), ("hold", 160, 3000)]);
        let (welcome, hold) = (
            f.lib.id("welcome").expect("id"),
            f.lib.id("hold").expect("id"),
        );
        let mut p = Player::new(Law::Ulaw, ms(20));
        p.play([Item::Prompt(welcome)]);
        let mut sent = Vec::new();
        for _ in 0..6 {
            let frame = p.next_frame(&f.lib);
            sent.push(frame.map(|fr| (fr.payload[0], fr.marker)));
            while let Some(ev) = p.poll_event() {
                if ev == PlayerEvent::Finished(welcome) {
                    p.enqueue(Item::Loop(hold));
                }
            }
        }
        let (w, h) = (Law::Ulaw.encode(1000), Law::Ulaw.encode(3000));
        assert_eq!(
            sent,
            [
                Some((w, true)),
                Some((w, false)),
                Some((h, false)),
                Some((h, false)),
                Some((h, false)),
                Some((h, false))
            ]
        );
    }

    #[test]
    fn silence_item_sends_silence_frames_rounded_up() {
        let f = fixture(&[("a", 160, 1000)]);
        let mut p = Player::new(Law::Alaw, ms(20));
        p.play([
            Item::Silence(Duration::from_millis(50)),
            Item::Silence(Duration::ZERO),
        ]);
        let frames: Vec<Frame<'_>> = std::iter::from_fn(|| p.next_frame(&f.lib)).collect();
        assert_eq!(frames.len(), 3, "50 ms is three 20 ms packets");
        assert!(frames.iter().all(|fr| fr.payload.len() == 160));
        assert!(
            frames
                .iter()
                .flat_map(|fr| fr.payload)
                .all(|&b| b == Law::Alaw.silence())
        );
        assert_eq!(drain(&mut p), [PlayerEvent::Idle]);
    }

    #[test]
    fn play_replaces_the_list_and_restarts_position() {
        let f = fixture(&[("a", 480, 1000), ("b", 160, 2000)]);
        let (a, b) = (f.lib.id("a").expect("id"), f.lib.id("b").expect("id"));
        let mut p = Player::new(Law::Ulaw, ms(20));
        p.play([Item::Prompt(a)]);
        assert!(p.next_frame(&f.lib).is_some());
        p.play([Item::Prompt(b)]);
        let frame = p.next_frame(&f.lib).expect("b");
        assert_eq!(frame.payload[0], Law::Ulaw.encode(2000));
        assert!(!frame.marker, "no gap, no new talk spurt");
        assert_eq!(drain(&mut p), [PlayerEvent::Finished(b), PlayerEvent::Idle]);
    }

    #[test]
    fn unprepared_ptime_skips_prompt_with_event() {
        let f = fixture(&[("a", 160, 1000)]);
        let a = f.lib.id("a").expect("id");
        let mut p = Player::new(Law::Ulaw, ms(40)); // only 20 and 30 prepared
        p.play([Item::Prompt(a), Item::Silence(Duration::from_millis(40))]);
        let frame = p.next_frame(&f.lib).expect("falls through to the silence");
        assert_eq!(frame.payload.len(), 320);
        assert_eq!(
            drain(&mut p),
            [PlayerEvent::NotPrepared(a), PlayerEvent::Idle]
        );
    }

    #[test]
    fn player_is_small() {
        // Two VecDeque headers plus a few scalars: one per call, many calls.
        assert!(
            std::mem::size_of::<Player>() <= 80,
            "{}",
            std::mem::size_of::<Player>()
        );
    }
}
