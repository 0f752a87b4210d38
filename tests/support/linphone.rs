//! linphone-cli 5.1 (Debian's `linphone-daemon`) driven over its unix
//! socket: a real softphone beside sipp and baresip. Headless: it finds no
//! sound card and streams from/to its void filters, which still sends RTP
//! (and RFC 4733 events).
//!
//! Traps (TESTING.md): it needs `use_ipv6=0`, an `[rtp] bind_address` and a
//! `[storage] uri`; it crashes on `call-stats`, at the end of an in-call WAV
//! and on `config-get` of a missing key — none of which is used here.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{Ports, TestDir};

/// How DTMF keys leave the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtmf {
    /// RFC 4733 telephone-events in the RTP stream (`use_rfc2833=1`).
    Rfc4733,
    /// SIP INFO `application/dtmf-relay` (`use_info=1`).
    Info,
}

/// One `linphone-daemon` with its own HOME, rc file, log and socket under
/// `<dir>/<name>/`; SIP on `ports.sipp_sip` (UDP only), audio RTP on
/// `ports.sipp_media`. Killed on drop.
pub struct Linphone {
    child: Option<Child>,
    socket: PathBuf,
    stream: Option<UnixStream>,
    log_path: PathBuf,
    out_path: PathBuf,
    name: String,
}

impl Linphone {
    /// Starts the daemon; `auto_answer` answers incoming calls by itself.
    pub fn start(
        dir: &TestDir,
        name: &str,
        ports: &Ports,
        ip: IpAddr,
        dtmf: Dtmf,
        auto_answer: bool,
    ) -> Linphone {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let home = dir.join(name);
        fs::create_dir_all(&home).expect("test dir is writable");
        let (rfc2833, info) = match dtmf {
            Dtmf::Rfc4733 => (1, 0),
            Dtmf::Info => (0, 1),
        };
        let rc = format!(
            "[sip]\n\
             sip_port={sip}\n\
             sip_tcp_port=0\n\
             sip_tls_port=0\n\
             use_ipv6=0\n\
             bind_address={ip}\n\
             use_rfc2833={rfc2833}\n\
             use_info={info}\n\
             contact=sip:{name}@{ip}\n\
             [rtp]\n\
             audio_rtp_port={audio}\n\
             video_rtp_port={video}\n\
             text_rtp_port={text}\n\
             bind_address={ip}\n\
             [video]\n\
             enabled=0\n\
             [storage]\n\
             uri={db}\n\
             [misc]\n\
             history_max_size=0\n",
            sip = ports.sipp_sip,
            audio = ports.sipp_media,
            video = ports.sipp_media + 10,
            text = ports.sipp_media + 20,
            db = home.join("linphone.db").display(),
        );
        let rc_path = home.join("linphonerc");
        fs::write(&rc_path, rc).expect("test dir is writable");
        // The daemon creates its socket as /tmp/<pipe>.
        let pipe = format!(
            "callbackd-linphone-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let socket = PathBuf::from("/tmp").join(&pipe);
        let _ = fs::remove_file(&socket);
        let log_path = home.join("linphone.log");
        let out_path = home.join("daemon.out");
        let out = File::create(&out_path).expect("test dir is writable");
        let err = out.try_clone().expect("file handle can be cloned");
        let mut cmd = Command::new("linphone-daemon");
        cmd.arg("--config")
            .arg(&rc_path)
            .arg("--pipe")
            .arg(&pipe)
            .arg("--log")
            .arg(&log_path)
            .arg("--disable-stats-events");
        if auto_answer {
            cmd.arg("--auto-answer");
        }
        let child = cmd
            .env("HOME", &home)
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("linphone-daemon can be spawned");
        let mut phone = Linphone {
            child: Some(child),
            socket,
            stream: None,
            log_path,
            out_path,
            name: name.to_owned(),
        };
        phone.connect();
        phone
    }

    fn connect(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(stream) = UnixStream::connect(&self.socket) {
                stream
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("socket timeout");
                self.stream = Some(stream);
                return;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            assert!(
                !exited && Instant::now() < deadline,
                "linphone-daemon {} did not open {} (exited: {exited}):\n{}",
                self.name,
                self.socket.display(),
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one command and returns the daemon's answer (`Status: Ok…` or
    /// `Status: Error…`); panics when none comes within 5 s.
    pub fn command(&mut self, line: &str) -> String {
        let stream = self.stream.as_mut().expect("connected");
        stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("linphone {}: cannot send {line:?}: {e}", self.name));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => panic!(
                    "linphone {} closed its socket after {line:?} (crashed?)",
                    self.name
                ),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // One answer is one write: once it has come, a quiet
                // socket means it is complete.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if got.starts_with(b"Status:") {
                        return String::from_utf8_lossy(&got).into_owned();
                    }
                }
                Err(e) => panic!(
                    "linphone {}: reading the answer to {line:?}: {e}",
                    self.name
                ),
            }
            assert!(
                Instant::now() < deadline,
                "linphone {}: no answer to {line:?} within 5 s: {:?}",
                self.name,
                String::from_utf8_lossy(&got)
            );
        }
    }

    /// Sends a command that must succeed.
    pub fn ok(&mut self, line: &str) -> String {
        let answer = self.command(line);
        assert!(
            answer.starts_with("Status: Ok"),
            "linphone {}: {line:?} answered {answer:?}",
            self.name
        );
        answer
    }

    /// `call-status`: e.g. `LinphoneCallStreamsRunning`, or `None` when
    /// there is no call.
    pub fn call_state(&mut self) -> Option<String> {
        let answer = self.command("call-status");
        answer
            .lines()
            .find_map(|l| l.strip_prefix("State: "))
            .map(str::to_owned)
    }

    /// Waits until `call-status` reports `state`; panics after `within`.
    pub fn wait_call_state(&mut self, state: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let now = self.call_state();
            if now.as_deref() == Some(state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "linphone {}: call state {now:?}, not {state} after {within:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the phone has no call any more; panics after `within`.
    pub fn wait_no_call(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let now = self.call_state();
            if now.is_none() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "linphone {}: call still in state {now:?} after {within:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Keys `digits` one by one (`dtmf <d>`), `gap` after each.
    pub fn keys(&mut self, digits: &str, gap: Duration) {
        for d in digits.chars() {
            self.ok(&format!("dtmf {d}"));
            thread::sleep(gap);
        }
    }

    /// REGISTERs `sip:<user>@<registrar>` with digest `password` and waits
    /// until `register-status` says `LinphoneRegistrationOk`.
    pub fn register(&mut self, user: &str, registrar: SocketAddr, password: &str) {
        let answer = self.ok(&format!(
            "register sip:{user}@{registrar} sip:{registrar} {password}"
        ));
        let id = answer
            .lines()
            .find_map(|l| l.strip_prefix("Id: "))
            .unwrap_or_else(|| panic!("no registration id in {answer:?}"))
            .trim()
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.command(&format!("register-status {id}"));
            if status.contains("LinphoneRegistrationOk") {
                return;
            }
            assert!(
                Instant::now() < deadline && !status.contains("LinphoneRegistrationFailed"),
                "linphone {} did not register with {registrar}: {status:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's output and the head of its log, for failure messages.
    pub fn output(&self) -> String {
        let out = fs::read_to_string(&self.out_path).unwrap_or_default();
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!("{out}\n--- log tail ---\n{tail}")
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.as_mut() {
            let _ = stream.write_all(b"quit\n");
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_file(&self.socket);
    }
}
