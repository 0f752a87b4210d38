//! TelephoneEvent::parse on arbitrary payloads, and a DtmfReceiver fed an
//! arbitrary packet sequence; nothing may panic, and write/parse round-trips.

use std::time::{Duration, Instant};

use callbackd::media::dtmf::{DtmfReceiver, TelephoneEvent};
use callbackd::media::rtp::Ssrc;

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    if let Ok(ev) = TelephoneEvent::parse(data) {
        let again = TelephoneEvent::parse(&ev.write()).expect("4 bytes parse");
        assert_eq!(again, ev);
    }

    // Records of 9 bytes: SSRC selector (2 bits: one of four SSRCs, so
    // switches happen), marker (bit 7), a small timestamp step (so keys
    // collide and repeat), a clock step, and the event block plus one
    // trailing byte (extra bytes must be tolerated).
    let t0 = Instant::now();
    let mut now = t0;
    let mut ts: u32 = 0xffff_0000; // cross the wrap early
    let mut rx = DtmfReceiver::new();
    let mut digits = 0u64;
    for rec in data.chunks_exact(9) {
        let ssrc = Ssrc(0x0e05_384e ^ u32::from(rec[0] & 0x03));
        let marker = rec[0] & 0x80 != 0;
        let step = i16::from_be_bytes([rec[1], rec[2]]);
        ts = ts.wrapping_add_signed(i32::from(step) * 8);
        now += Duration::from_millis(u64::from(rec[3]));
        let Ok(ev) = TelephoneEvent::parse(&rec[4..9]) else {
            continue;
        };
        if rx.handle(now, ssrc, ts, marker, &ev).is_some() {
            digits += 1;
        }
    }
    assert_eq!(rx.stats().digits, digits);
}
