//! A NAT lab made of network namespaces the test creates (never the
//! host's own interfaces, routes or tables; TESTING.md):
//!
//! ```text
//!  agent ns                 nat ns                          server ns
//!  10.200.N.2 ──veth── 10.200.N.1 | 10.201.N.2 ──veth── 10.201.N.1
//!  (the phone)            masquerade out of its public side   (callbackd, carrier)
//! ```
//!
//! The server namespace has no route to 10.200.N.0/24: anything the engine
//! sends to the agent's private address fails there and never leaves. The
//! masquerade maps UDP to source ports 20000–20999, so the public flow
//! differs from the private Contact in address and port. Everything (the
//! namespaces and with them the veths and the nft table) is removed on
//! drop, and processes still inside are killed first.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The three namespaces; removed on drop.
pub struct NatLab {
    n: u8,
    created: Vec<String>,
}

impl NatLab {
    /// Builds the lab, the NAT forgetting an idle UDP mapping after
    /// `udp_timeout_s` (Linux's default is 30 s, 120 s for a flow that has
    /// seen traffic both ways for a while); `Err` says which command failed
    /// (e.g. not root).
    pub fn create(udp_timeout_s: u32) -> Result<NatLab, String> {
        let n = u8::try_from(std::process::id() % 200 + 20).expect("below 256");
        let mut lab = NatLab {
            n,
            created: Vec::new(),
        };
        for ns in [lab.agent_ns(), lab.nat_ns(), lab.server_ns()] {
            // A namespace left by a killed run of the same pid number.
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
            run(&["ip", "netns", "add", &ns])?;
            lab.created.push(ns);
        }
        let (agent, nat, server) = (lab.agent_ns(), lab.nat_ns(), lab.server_ns());
        let (a, ai, s, so) = (
            format!("cb{n}a"),
            format!("cb{n}ai"),
            format!("cb{n}s"),
            format!("cb{n}so"),
        );
        let private = format!("10.200.{n}");
        let public = format!("10.201.{n}");
        let steps: Vec<Vec<String>> = vec![
            cmd(&format!(
                "ip link add {a} netns {agent} type veth peer name {ai} netns {nat}"
            )),
            cmd(&format!(
                "ip link add {s} netns {server} type veth peer name {so} netns {nat}"
            )),
            cmd(&format!("ip -n {agent} addr add {private}.2/24 dev {a}")),
            cmd(&format!("ip -n {agent} link set {a} up")),
            cmd(&format!("ip -n {agent} link set lo up")),
            cmd(&format!("ip -n {agent} route add default via {private}.1")),
            cmd(&format!("ip -n {nat} addr add {private}.1/24 dev {ai}")),
            cmd(&format!("ip -n {nat} addr add {public}.2/24 dev {so}")),
            cmd(&format!("ip -n {nat} link set {ai} up")),
            cmd(&format!("ip -n {nat} link set {so} up")),
            cmd(&format!("ip -n {nat} link set lo up")),
            cmd(&format!(
                "ip netns exec {nat} sysctl -qw net.ipv4.ip_forward=1"
            )),
            cmd(&format!(
                "ip netns exec {nat} sysctl -qw net.netfilter.nf_conntrack_udp_timeout={udp_timeout_s}"
            )),
            cmd(&format!(
                "ip netns exec {nat} sysctl -qw net.netfilter.nf_conntrack_udp_timeout_stream={udp_timeout_s}"
            )),
            cmd(&format!("ip -n {server} addr add {public}.1/24 dev {s}")),
            cmd(&format!("ip -n {server} link set {s} up")),
            cmd(&format!("ip -n {server} link set lo up")),
        ];
        for step in &steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            run(&args)?;
        }
        let rules = format!(
            "table ip callbackd_nat {{\n\
             \x20 chain postrouting {{\n\
             \x20   type nat hook postrouting priority srcnat;\n\
             \x20   oifname \"{so}\" meta l4proto udp masquerade to :20000-20999\n\
             \x20   oifname \"{so}\" masquerade\n\
             \x20 }}\n\
             }}\n"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &nat, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin is piped")
                    .write_all(rules.as_bytes())?;
                child.wait_with_output()
            })
            .map_err(|e| format!("nft: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nft -f (masquerade rule): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(lab)
    }

    /// The phone's namespace.
    pub fn agent_ns(&self) -> String {
        format!("cbt-{}-agent", self.n)
    }

    /// The NAT router's namespace.
    pub fn nat_ns(&self) -> String {
        format!("cbt-{}-nat", self.n)
    }

    /// The engine's (and carrier's) namespace.
    pub fn server_ns(&self) -> String {
        format!("cbt-{}-server", self.n)
    }

    /// The phone's private address.
    pub fn agent_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.n, 2)
    }

    /// The NAT's public address (what the engine sees).
    pub fn public_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.n, 2)
    }

    /// The engine's address.
    pub fn server_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.n, 1)
    }

    /// The server namespace's veth (capture there).
    pub fn server_iface(&self) -> String {
        format!("cb{}s", self.n)
    }

    /// The agent namespace's veth.
    pub fn agent_iface(&self) -> String {
        format!("cb{}a", self.n)
    }

    /// `ip netns exec <ns>`: a prefix for a command run inside `ns`.
    pub fn exec_in(ns: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), ns.into()]
    }

    /// Waits until a program inside `ns` listens on UDP `port`.
    pub fn wait_udp_bound(ns: &str, port: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "cat", "/proc/net/udp"])
                .stderr(Stdio::null())
                .output()
                .expect("ip can be spawned");
            let text = String::from_utf8_lossy(&out.stdout);
            let bound = text.lines().skip(1).any(|line| {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|local| local.rsplit(':').next())
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                    == Some(port)
            });
            if bound {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on UDP port {port} in {ns} after {within:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            // Processes of this test still inside (a panicking test's).
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill")
                        .args(["-KILL", pid])
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn cmd(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
