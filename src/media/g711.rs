//! G.711 µ-law (PCMU, RTP payload type 0) and A-law (PCMA, payload type 8).
//!
//! ITU-T G.711 companding between 16-bit linear PCM and 8-bit codes. Decoding
//! is a table lookup (the tables are built at compile time); encoding is the
//! segment search of the reference algorithm, which is a handful of integer
//! operations per sample.

/// The two G.711 laws. Their RTP static payload types are 0 and 8 (RFC 3551).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law, PCMU, payload type 0 (North America, Japan).
    Ulaw,
    /// A-law, PCMA, payload type 8 (rest of the world).
    Alaw,
}

impl Law {
    /// The static RTP payload type of this law (RFC 3551 §6).
    pub const fn payload_type(self) -> u8 {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        }
    }

    /// The encoding name used in SDP `a=rtpmap` lines.
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Law::Ulaw => "PCMU",
            Law::Alaw => "PCMA",
        }
    }

    /// The code of digital silence (linear 0) in this law.
    pub const fn silence(self) -> u8 {
        match self {
            Law::Ulaw => 0xFF,
            Law::Alaw => 0xD5,
        }
    }

    /// Encodes one linear sample.
    #[inline]
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Ulaw => linear_to_ulaw(sample),
            Law::Alaw => linear_to_alaw(sample),
        }
    }

    /// Decodes one code to a linear sample.
    #[inline]
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Law::Ulaw => ULAW_TO_LINEAR[code as usize],
            Law::Alaw => ALAW_TO_LINEAR[code as usize],
        }
    }

    /// Encodes `samples` into `out` (cleared first).
    pub fn encode_into(self, samples: &[i16], out: &mut Vec<u8>) {
        out.clear();
        out.extend(samples.iter().map(|&s| self.encode(s)));
    }

    /// Converts a code of this law into the code of `other` for the same
    /// sound, through a 256-entry table (PCMU⇄PCMA transcoding).
    #[inline]
    pub fn transcode(self, other: Law, code: u8) -> u8 {
        match (self, other) {
            (Law::Ulaw, Law::Alaw) => ULAW_TO_ALAW[code as usize],
            (Law::Alaw, Law::Ulaw) => ALAW_TO_ULAW[code as usize],
            (Law::Ulaw, Law::Ulaw) | (Law::Alaw, Law::Alaw) => code,
        }
    }
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// Encodes a 16-bit linear sample as µ-law.
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    if pcm > ULAW_CLIP {
        pcm = ULAW_CLIP;
    }
    pcm += ULAW_BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while pcm & mask == 0 && exponent > 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Decodes a µ-law code to a 16-bit linear sample.
pub const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Upper bounds of the eight A-law segments, on the 13-bit magnitude.
const ALAW_SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// Encodes a 16-bit linear sample as A-law (even bits inverted, as sent).
pub const fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = (sample as i32) >> 3;
    let mask = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let mut segment = 0;
    while segment < 8 && pcm > ALAW_SEGMENT_END[segment] {
        segment += 1;
    }
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let mut code = (segment as i32) << 4;
    code |= if segment < 2 {
        (pcm >> 1) & 0x0F
    } else {
        (pcm >> segment) & 0x0F
    };
    (code as u8) ^ mask
}

/// Decodes an A-law code to a 16-bit linear sample.
pub const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let segment = ((a & 0x70) >> 4) as i32;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= segment - 1;
        }
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

const fn build_decode_table(law: Law) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = match law {
            Law::Ulaw => ulaw_to_linear(i as u8),
            Law::Alaw => alaw_to_linear(i as u8),
        };
        i += 1;
    }
    table
}

const fn build_transcode_table(from: Law) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = match from {
            Law::Ulaw => linear_to_alaw(ulaw_to_linear(i as u8)),
            Law::Alaw => linear_to_ulaw(alaw_to_linear(i as u8)),
        };
        i += 1;
    }
    table
}

static ULAW_TO_LINEAR: [i16; 256] = build_decode_table(Law::Ulaw);
static ALAW_TO_LINEAR: [i16; 256] = build_decode_table(Law::Alaw);
static ULAW_TO_ALAW: [u8; 256] = build_transcode_table(Law::Ulaw);
static ALAW_TO_ULAW: [u8; 256] = build_transcode_table(Law::Alaw);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_every_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            let linear = ulaw_to_linear(code);
            let back = linear_to_ulaw(linear);
            // 0x7F is µ-law's "negative zero": it decodes to 0, which encodes
            // as 0xFF (positive zero). Every other code is its own image.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(
                back, expected,
                "code {code:#04x} -> {linear} -> {back:#04x}"
            );
        }
    }

    #[test]
    fn alaw_every_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            let linear = alaw_to_linear(code);
            assert_eq!(linear_to_alaw(linear), code, "code {code:#04x} -> {linear}");
        }
    }

    #[test]
    fn reference_values_match_g711() {
        // Extremes and zeros of both laws (ITU-T G.711 tables 1a/2a).
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn decoding_is_monotonic_in_magnitude() {
        // Within each sign half, larger code magnitude means larger amplitude.
        for law in [Law::Ulaw, Law::Alaw] {
            let mut values: Vec<i16> = (0..=255u8).map(|c| law.decode(c)).collect();
            values.sort_unstable();
            values.dedup();
            // µ-law has two zeros, so 255 distinct values; A-law has 256.
            let expected = if law == Law::Ulaw { 255 } else { 256 };
            assert_eq!(values.len(), expected, "{law:?}");
        }
    }

    #[test]
    fn encode_error_stays_within_the_segment_step() {
        for law in [Law::Ulaw, Law::Alaw] {
            for sample in (i16::MIN..=i16::MAX).step_by(7) {
                let back = law.decode(law.encode(sample)) as i32;
                let error = (back - sample as i32).abs();
                // Largest step of either law is 1024 (A-law seg 7) / 1024
                // (µ-law seg 7); clipping at the ends adds at most ~650.
                assert!(error <= 1024, "{law:?} {sample} -> {back}");
            }
        }
    }

    #[test]
    fn transcoding_tables_agree_with_decode_then_encode() {
        for code in 0..=255u8 {
            assert_eq!(
                Law::Ulaw.transcode(Law::Alaw, code),
                linear_to_alaw(ulaw_to_linear(code))
            );
            assert_eq!(
                Law::Alaw.transcode(Law::Ulaw, code),
                linear_to_ulaw(alaw_to_linear(code))
            );
            assert_eq!(Law::Ulaw.transcode(Law::Ulaw, code), code);
        }
    }
}
