//! InbandDetector fed arbitrary audio in arbitrary chunks and arrival times;
//! nothing may panic, and every digit it counts is handed out exactly once.

use std::time::{Duration, Instant};

use callbackd::media::g711::Law;
use callbackd::media::inband::InbandDetector;

/// The property: panics when `data` breaks it.
pub fn check(data: &[u8]) {
    // Byte 0: bit 0 picks the law, bit 1 linear (i16 LE) instead of G.711.
    // Then records: chunk length n, clock step in ms (large steps are holes
    // in the audio), and n codes or n samples.
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let law = if mode & 1 == 0 { Law::Ulaw } else { Law::Alaw };
    let linear = mode & 2 != 0;
    let t0 = Instant::now();
    let mut now = t0;
    let mut det = InbandDetector::new();
    let mut samples = Vec::new();
    let mut handed_out = 0u64;
    while let [n, dt, tail @ ..] = rest {
        let n = usize::from(*n);
        now += Duration::from_millis(u64::from(*dt));
        let bytes = if linear { 2 * n } else { n };
        let chunk = &tail[..bytes.min(tail.len())];
        rest = &tail[chunk.len()..];
        let got = if linear {
            samples.clear();
            samples.extend(
                chunk
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            );
            det.push(now, &samples)
        } else {
            det.push_g711(now, law, chunk)
        };
        handed_out += u64::from(got.is_some());
        while det.poll_digit().is_some() {
            handed_out += 1;
        }
    }
    let stats = det.stats();
    assert_eq!(stats.digits, handed_out + stats.overflow);
}
