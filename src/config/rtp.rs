//! `[rtp]`, `[media]`, `[prompts]` and `[call]`: media addresses and ports,
//! codecs and packetization, the prompt files, and the call limits the port
//! range bounds.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Fault, Invalid, PROMPT_NAMES, fail, first_duplicate, in_range};

/// `[rtp]`: media addresses and the port range.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtpConfig {
    /// Local IP the RTP/RTCP sockets bind to.
    pub bind_ip: IpAddr,
    /// IP put in the SDP c= line; `None` = `bind_ip`.
    pub advertised_ip: Option<IpAddr>,
    /// First port of the range (even).
    pub port_min: u16,
    /// Last port of the range (inclusive).
    pub port_max: u16,
    /// Hang up after this many seconds without incoming RTP.
    pub rtp_timeout_s: u64,
}

impl RtpConfig {
    /// The IP for the SDP c= line: `advertised_ip`, else `bind_ip`.
    pub fn advertised_ip(&self) -> IpAddr {
        self.advertised_ip.unwrap_or(self.bind_ip)
    }

    /// The configured ports, `port_min..=port_max`.
    pub fn ports(&self) -> RangeInclusive<u16> {
        self.port_min..=self.port_max
    }

    /// How many (even RTP, odd RTCP) port pairs fit into the range, i.e. how
    /// many media streams can be open at once. Zero for an invalid range.
    pub fn port_pairs(&self) -> u16 {
        let first = self.port_min.saturating_add(self.port_min % 2);
        if self.port_max <= first {
            return 0;
        }
        (self.port_max - first).div_ceil(2)
    }

    /// The RTP inactivity timeout as a duration.
    pub fn rtp_timeout(&self) -> Duration {
        Duration::from_secs(self.rtp_timeout_s)
    }

    /// The `[rtp]` value rules, in file order.
    pub(super) fn check(&self) -> Result<(), Fault> {
        match self.advertised_ip {
            None if self.bind_ip.is_unspecified() => {
                return fail(
                    "rtp.advertised_ip",
                    Invalid::WildcardNeedsAdvertised {
                        bound_field: "rtp.bind_ip",
                        ip: self.bind_ip,
                    },
                );
            }
            Some(ip) if ip.is_unspecified() => {
                return fail("rtp.advertised_ip", Invalid::Unspecified { ip });
            }
            None | Some(_) => {}
        }
        in_range("rtp.port_min", u64::from(self.port_min), 1024..=65_535)?;
        in_range("rtp.port_max", u64::from(self.port_max), 1024..=65_535)?;
        if !self.port_min.is_multiple_of(2) {
            // RFC 3550 §11: RTP on an even port, RTCP on the next (odd) one.
            return fail(
                "rtp.port_min",
                Invalid::OddPort {
                    value: self.port_min,
                },
            );
        }
        if self.port_min > self.port_max {
            return fail(
                "rtp.port_min",
                Invalid::exceeds(self.port_min, "rtp.port_max", self.port_max),
            );
        }
        if self.port_min == self.port_max {
            return fail(
                "rtp.port_max",
                Invalid::SinglePort {
                    port: self.port_max,
                },
            );
        }
        in_range("rtp.rtp_timeout_s", self.rtp_timeout_s, 1..=3600)?;
        Ok(())
    }
}

impl Default for RtpConfig {
    fn default() -> RtpConfig {
        RtpConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertised_ip: None,
            port_min: 20_000,
            port_max: 20_999,
            rtp_timeout_s: 60,
        }
    }
}

/// `[media]`: codecs and packetization.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Codecs in order of preference.
    pub codecs: Vec<Codec>,
    /// Packetization time of the audio we send, milliseconds.
    pub ptime_ms: u32,
}

impl MediaConfig {
    /// The packetization time as a duration.
    pub fn ptime(&self) -> Duration {
        Duration::from_millis(self.ptime_ms.into())
    }

    /// The `[media]` value rules.
    pub(super) fn check(&self) -> Result<(), Fault> {
        if self.codecs.is_empty() {
            return fail("media.codecs", Invalid::Empty);
        }
        if let Some(dup) = first_duplicate(&self.codecs) {
            return fail("media.codecs", Invalid::duplicate(dup.encoding_name()));
        }
        in_range("media.ptime_ms", u64::from(self.ptime_ms), 10..=60)?;
        if !self.ptime_ms.is_multiple_of(10) {
            return fail(
                "media.ptime_ms",
                Invalid::NotMultiple {
                    value: self.ptime_ms.into(),
                    of: 10,
                },
            );
        }
        Ok(())
    }
}

impl Default for MediaConfig {
    fn default() -> MediaConfig {
        MediaConfig {
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            ptime_ms: 20,
        }
    }
}

/// An audio codec callbackd can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0 (RFC 3551 §6).
    #[serde(rename = "PCMU")]
    Pcmu,
    /// G.711 A-law, static payload type 8 (RFC 3551 §6).
    #[serde(rename = "PCMA")]
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551 §6, Table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The SDP encoding name (`a=rtpmap:<pt> <name>/8000`).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

/// `[prompts]`: where the prompt WAV files are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptsConfig {
    /// Prompt directory; relative to the configuration file's directory.
    pub dir: PathBuf,
    /// Per-prompt file overrides, `name -> file` relative to `dir`.
    pub files: BTreeMap<String, PathBuf>,
}

impl PromptsConfig {
    /// Where the file for prompt `name` is: `base_dir/dir/<override or
    /// name.wav>` (an absolute `dir` or override replaces what precedes it).
    pub fn file_path(&self, base_dir: &Path, name: &str) -> PathBuf {
        let dir = base_dir.join(&self.dir);
        match self.files.get(name) {
            Some(file) => dir.join(file),
            None => dir.join(format!("{name}.wav")),
        }
    }

    /// The `[prompts]` value rules (that the files exist is
    /// [`Config::validate_prompts`](super::Config::validate_prompts)).
    pub(super) fn check(&self) -> Result<(), Fault> {
        if self.dir.as_os_str().is_empty() {
            return fail("prompts.dir", Invalid::EmptyPath);
        }
        for (name, file) in &self.files {
            let field = format!("prompts.files.{name}");
            if !PROMPT_NAMES.contains(&name.as_str()) {
                return fail(&field, Invalid::UnknownPrompt { name: name.clone() });
            }
            if file.as_os_str().is_empty() {
                return fail(&field, Invalid::EmptyPath);
            }
        }
        Ok(())
    }
}

impl Default for PromptsConfig {
    fn default() -> PromptsConfig {
        PromptsConfig {
            dir: PathBuf::from("prompts"),
            files: BTreeMap::new(),
        }
    }
}

/// `[call]`: call limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallConfig {
    /// On SIGTERM, how long calls in progress may go on (new ones get 503)
    /// before they are hung up, seconds; 0 hangs up at once. A second
    /// SIGTERM (or Ctrl-C) ends the wait.
    pub drain_s: u64,
    /// Longest call, seconds; the engine sends BYE when it is reached.
    pub max_duration_s: u64,
    /// Most concurrent calls; INVITEs above it are answered 503.
    pub max_calls: u32,
}

/// The longest drain: a day.
const MAX_DRAIN_S: u64 = 86_400;

impl CallConfig {
    /// The drain time as a duration.
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_s)
    }

    /// The longest call as a duration.
    pub fn max_duration(&self) -> Duration {
        Duration::from_secs(self.max_duration_s)
    }

    /// The `[call]` value rules; `rtp` bounds how many calls fit beside
    /// the `legs` outbound callback legs (`2 × callbacks.max_lines`: an
    /// agent leg and a customer leg per line, each with its own port pair).
    pub(super) fn check(&self, rtp: &RtpConfig, legs: u32) -> Result<(), Fault> {
        if self.drain_s > MAX_DRAIN_S {
            return fail(
                "call.drain_s",
                Invalid::OutOfRange {
                    value: self.drain_s,
                    min: 0,
                    max: MAX_DRAIN_S,
                },
            );
        }
        if self.max_duration_s == 0 {
            return fail("call.max_duration_s", Invalid::Zero);
        }
        if self.max_calls == 0 {
            return fail("call.max_calls", Invalid::Zero);
        }
        let pairs = rtp.port_pairs();
        if u64::from(self.max_calls) + u64::from(legs) > u64::from(pairs) {
            return fail(
                "call.max_calls",
                Invalid::NotEnoughPorts {
                    calls: self.max_calls,
                    legs,
                    pairs,
                },
            );
        }
        Ok(())
    }
}

impl Default for CallConfig {
    fn default() -> CallConfig {
        CallConfig {
            drain_s: 120,
            max_duration_s: 14_400,
            max_calls: 200,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::*;

    #[test]
    fn rejects_inverted_port_range() {
        let e = error("[rtp]\nport_min = 30000\nport_max = 20000\n");
        assert_eq!(
            e,
            "config.toml: rtp.port_min: 30000 is greater than rtp.port_max 20000"
        );
    }

    #[test]
    fn rejects_single_port_range() {
        let e = error("[rtp]\nport_min = 30000\nport_max = 30000\n");
        assert!(
            e.starts_with("config.toml: rtp.port_max: equals rtp.port_min 30000"),
            "{e}"
        );
    }

    #[test]
    fn rejects_odd_port_min() {
        let e = error("[rtp]\nport_min = 20001\n");
        assert!(
            e.starts_with("config.toml: rtp.port_min: 20001 is odd"),
            "{e}"
        );
    }

    #[test]
    fn rejects_privileged_rtp_port() {
        let e = error("[rtp]\nport_min = 1000\nport_max = 2000\n");
        assert_eq!(e, "config.toml: rtp.port_min: 1000 is outside 1024..=65535");
    }

    #[test]
    fn rejects_missing_prompt_file() {
        let dir = TempDir::with_prompts(&["welcome", "goodbye"]);
        let c = parse("").expect("defaults");
        let e = c
            .validate_prompts(&dir.0)
            .expect_err("two missing")
            .to_string();
        let expected = dir.0.join("prompts").join("welcome.wav");
        assert_eq!(
            e,
            format!(
                "config.toml: prompts: missing prompt file {} (and 1 more)",
                expected.display()
            )
        );
    }

    #[test]
    fn rejects_missing_prompt_dir() {
        let dir = TempDir::new();
        let e = Config::default()
            .validate(&dir.0)
            .expect_err("no prompts")
            .to_string();
        assert!(
            e.starts_with("<built-in defaults>: prompts: missing prompt file"),
            "{e}"
        );
        assert!(
            e.ends_with(&format!("(and {} more)", PROMPT_NAMES.len() - 1)),
            "{e}"
        );
    }

    #[test]
    fn prompt_override_replaces_default_file() {
        let dir = TempDir::with_prompts(&["welcome"]);
        std::fs::write(dir.0.join("prompts").join("hi.wav"), b"RIFF").expect("write");
        let c = parse("[prompts.files]\nwelcome = \"hi.wav\"\n").expect("override");
        c.validate_prompts(&dir.0)
            .expect("override satisfies welcome");
        let c = parse("[prompts.files]\nwelcome = \"nope.wav\"\n").expect("override");
        let e = c
            .validate_prompts(&dir.0)
            .expect_err("override missing")
            .to_string();
        assert!(
            e.contains("prompts: missing prompt file") && e.ends_with("nope.wav"),
            "{e}"
        );
    }

    #[test]
    fn rejects_unknown_prompt_override() {
        let e = error("[prompts.files]\nwelcom = \"w.wav\"\n");
        assert_eq!(
            e,
            "config.toml: prompts.files.welcom: unknown prompt name \"welcom\" (see config::PROMPT_NAMES)"
        );
    }

    #[test]
    fn rejects_empty_prompt_dir() {
        let e = error("[prompts]\ndir = \"\"\n");
        assert_eq!(e, "config.toml: prompts.dir: must not be empty");
    }

    #[test]
    fn rejects_duplicate_codec() {
        let e = error("[media]\ncodecs = [\"PCMA\", \"PCMU\", \"PCMA\"]\n");
        assert_eq!(e, "config.toml: media.codecs: PCMA is listed twice");
    }

    #[test]
    fn rejects_empty_codec_list() {
        let e = error("[media]\ncodecs = []\n");
        assert_eq!(e, "config.toml: media.codecs: must list at least one entry");
    }

    #[test]
    fn rejects_unknown_codec() {
        let e = error("[media]\ncodecs = [\"G729\"]\n");
        assert!(
            e.starts_with("config.toml:2:11: in [media]: unknown variant `G729`"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_ptime() {
        let e = error("[media]\nptime_ms = 25\n");
        assert_eq!(e, "config.toml: media.ptime_ms: 25 is not a multiple of 10");
        let e = error("[media]\nptime_ms = 70\n");
        assert_eq!(e, "config.toml: media.ptime_ms: 70 is outside 10..=60");
        let e = error("[media]\nptime_ms = 0\n");
        assert_eq!(e, "config.toml: media.ptime_ms: 0 is outside 10..=60");
    }

    #[test]
    fn rejects_wildcard_rtp_bind_without_advertised_ip() {
        let e = error("[rtp]\nbind_ip = \"::\"\n");
        assert_eq!(
            e,
            "config.toml: rtp.advertised_ip: must be set when rtp.bind_ip is the wildcard address ::"
        );
        let e = error("[rtp]\nadvertised_ip = \"0.0.0.0\"\n");
        assert_eq!(
            e,
            "config.toml: rtp.advertised_ip: 0.0.0.0 cannot be advertised to peers"
        );
    }

    #[test]
    fn rejects_zero_call_limits() {
        let e = error("[call]\ndrain_s = 86401\n");
        assert_eq!(e, "config.toml: call.drain_s: 86401 is outside 0..=86400");
        let e = error("[call]\nmax_duration_s = 0\n");
        assert_eq!(e, "config.toml: call.max_duration_s: must be at least 1");
        let e = error("[call]\nmax_calls = 0\n");
        assert_eq!(e, "config.toml: call.max_calls: must be at least 1");
    }

    #[test]
    fn rejects_max_calls_beyond_port_pairs() {
        // 5 pairs; one callback line takes two of them.
        let e = error(
            "[rtp]\nport_min = 20000\nport_max = 20009\n[call]\nmax_calls = 4\n\
             [callbacks]\nmax_lines = 1\n",
        );
        assert_eq!(
            e,
            "config.toml: call.max_calls: 4 calls + 2 callback legs need more RTP port pairs than the 5 in rtp.port_min..=rtp.port_max"
        );
        let fits = "[rtp]\nport_min = 20000\nport_max = 20009\n[call]\nmax_calls = 3\n\
                    [callbacks]\nmax_lines = 1\n";
        let c = Config::from_toml_str(fits, "config.toml").expect("3 calls + 2 legs in 5 pairs");
        assert_eq!(c.call.max_calls, 3);
    }

    #[test]
    fn port_pairs_need_the_odd_rtcp_port() {
        let rtp = |port_min, port_max| RtpConfig {
            port_min,
            port_max,
            ..RtpConfig::default()
        };
        assert_eq!(rtp(20_000, 20_001).port_pairs(), 1);
        assert_eq!(
            rtp(20_000, 20_002).port_pairs(),
            1,
            "20002 has no RTCP partner"
        );
        assert_eq!(rtp(20_000, 20_003).port_pairs(), 2);
        assert_eq!(rtp(20_000, 20_000).port_pairs(), 0);
        assert_eq!(rtp(30_000, 20_000).port_pairs(), 0);
        assert_eq!(rtp(65_534, 65_535).port_pairs(), 1);
    }

    #[test]
    fn prompt_names_match_prompts_md() {
        assert_eq!(PROMPT_NAMES.len(), 98);
        assert_eq!(first_duplicate(&PROMPT_NAMES), None);
        for n in 0..=60 {
            assert!(
                PROMPT_NAMES.contains(&format!("number_{n}").as_str()),
                "number_{n}"
            );
        }
        for d in 0..=9 {
            assert!(
                PROMPT_NAMES.contains(&format!("digit_{d}").as_str()),
                "digit_{d}"
            );
        }
        assert_eq!(PROMPT_NAMES.first(), Some(&"welcome"));
        assert_eq!(PROMPT_NAMES.last(), Some(&"goodbye"));
        for name in [
            "ecbt_more_than",
            "digit_star",
            "digit_pound",
            "international_prefix",
            "hold_music",
            "ringback",
        ] {
            assert!(PROMPT_NAMES.contains(&name), "{name}");
        }
    }
}
