//! A DNS server on 127.0.0.1 (UDP) for the tests that resolve names: the
//! trunk's termination (SRV, A) and next hops named by host. It answers
//! from a fixed zone, REFUSED to everything while down, NXDOMAIN for names
//! outside the zone, and counts the questions per name.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// What [`FakeDns`] answers for a name.
pub enum Zone {
    /// SRV records `(priority, weight, port, target)`.
    Srv(Vec<(u16, u16, u16, &'static str)>),
    /// An A record (AAAA: no records).
    A(Ipv4Addr),
}

impl Zone {
    /// A 127.0.0.1.
    pub const LOOPBACK: Zone = Zone::A(Ipv4Addr::LOCALHOST);
}

/// The server; stops when dropped.
pub struct FakeDns {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Questions answered `Refused` (while down).
    refused: Arc<AtomicUsize>,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

/// Records' time to live, seconds.
const TTL: u32 = 60;

impl FakeDns {
    /// Serves `zone` (names with their trailing dot), down until
    /// [`FakeDns::set_up`]; every answer waits `delay` (a slow name server;
    /// the questions are answered one after another).
    pub fn start(zone: Vec<(&'static str, Zone)>, delay: Duration) -> FakeDns {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the DNS socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("DNS address");
        let up = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let (up2, asked2, stop2) = (up.clone(), asked.clone(), stop.clone());
        let refused2 = refused.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((len, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.metadata.authoritative = true;
                reply.queries = query.queries.clone();
                if let Some(edns) = &query.edns {
                    reply.edns = Some(edns.clone());
                }
                for q in &query.queries {
                    let name = q.name().to_ascii();
                    asked2
                        .lock()
                        .expect("asked lock")
                        .push(format!("{:?} {name}", q.query_type()));
                    if !up2.load(Ordering::Relaxed) {
                        reply.metadata.response_code = ResponseCode::Refused;
                        refused2.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    let Some((_, answer)) =
                        zone.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name))
                    else {
                        reply.metadata.response_code = ResponseCode::NXDomain;
                        continue;
                    };
                    let owner = q.name().clone();
                    match (answer, q.query_type()) {
                        (Zone::Srv(records), RecordType::SRV) => {
                            for &(priority, weight, port, target) in records {
                                let target = Name::from_ascii(target).expect("SRV target name");
                                reply.answers.push(Record::from_rdata(
                                    owner.clone(),
                                    TTL,
                                    RData::SRV(SRV::new(priority, weight, port, target)),
                                ));
                            }
                        }
                        (Zone::A(ip), RecordType::A) => {
                            reply
                                .answers
                                .push(Record::from_rdata(owner, TTL, RData::A(A(*ip))));
                        }
                        // The name exists; no records of that type.
                        _ => {}
                    }
                }
                if !delay.is_zero() {
                    // The slow name server this test asked for.
                    std::thread::sleep(delay);
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = sock.send_to(&bytes, from);
                }
            }
        });
        FakeDns {
            addr,
            up,
            refused,
            asked,
            stop,
        }
    }

    /// Answers from the zone (`true`) or refuses everything.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// How many questions were refused.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// Every question so far, `"KIND name"`, in order.
    pub fn questions(&self) -> Vec<String> {
        self.asked.lock().expect("asked lock").clone()
    }

    /// How many questions of `kind` (`"SRV"`, `"A"`, `"AAAA"`) named `name`.
    pub fn asked(&self, kind: &str, name: &str) -> usize {
        let question = format!("{kind} {name}");
        self.asked
            .lock()
            .expect("asked lock")
            .iter()
            .filter(|n| n.eq_ignore_ascii_case(&question))
            .count()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
