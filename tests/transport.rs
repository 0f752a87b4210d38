//! The SIP transport over real loopback sockets (127.0.0.1 only, every wait
//! bounded by a timeout).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

use callbackd::engine::transport::{FailedStage, Inbound, Target, Transport, TransportKind};

const WAIT: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(30);
const MAX: usize = 4096;

const OPTIONS: &[u8] = b"OPTIONS sip:cb@127.0.0.1 SIP/2.0\r\n\
    Via: SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bK-1\r\n\
    Call-ID: opt@test\r\n\
    CSeq: 1 OPTIONS\r\n\
    Content-Length: 0\r\n\r\n";

const MESSAGE: &[u8] = b"MESSAGE sip:cb@127.0.0.1 SIP/2.0\r\n\
    Via: SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bK-2\r\n\
    Call-ID: msg@test\r\n\
    CSeq: 2 MESSAGE\r\n\
    Content-Type: text/plain\r\n\
    l: 14\r\n\r\n\
    hello\r\n\r\nthere";

const OK: &[u8] = b"SIP/2.0 200 OK\r\n\
    Via: SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bK-1\r\n\
    Call-ID: opt@test\r\n\
    CSeq: 1 OPTIONS\r\n\
    Content-Length: 0\r\n\r\n";

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn bind_udp(max: usize) -> (Transport, mpsc::Receiver<Inbound>) {
    Transport::bind(Some(localhost()), None, max, IDLE)
        .await
        .expect("bind UDP on loopback")
}

async fn bind_tcp(max: usize, idle: Duration) -> (Transport, mpsc::Receiver<Inbound>) {
    Transport::bind(None, Some(localhost()), max, idle)
        .await
        .expect("bind TCP on loopback")
}

async fn recv(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
    timeout(WAIT, rx.recv())
        .await
        .expect("an inbound message in time")
        .expect("inbound queue open")
}

async fn connect(transport: &Transport) -> TcpStream {
    let addr = transport.local_tcp_addr().expect("TCP bound");
    timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

async fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .expect("read");
    buf
}

/// Reads until EOF or reset; panics if the connection stays open.
async fn expect_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn wait_for_connections(transport: &Transport, count: usize) {
    timeout(WAIT, async {
        while transport.connection_count() != count {
            // Poll interval: the transport does not notify the count.
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "connection count stayed {} instead of {count}",
            transport.connection_count()
        )
    });
}

#[tokio::test]
async fn udp_datagram_arrives_with_its_source() {
    let (transport, mut rx) = bind_udp(MAX).await;
    let local = transport.local_udp_addr().expect("UDP bound");
    assert_ne!(local.port(), 0, "actual port reported");
    let peer = UdpSocket::bind(localhost()).await.expect("peer socket");
    peer.send_to(OPTIONS, local).await.expect("send");

    let inbound = recv(&mut rx).await;
    assert_eq!(&inbound.data[..], OPTIONS);
    assert_eq!(inbound.source.remote, peer.local_addr().expect("peer addr"));
    assert_eq!(inbound.source.local, local);
    assert_eq!(inbound.source.transport, TransportKind::Udp);
}

#[tokio::test]
async fn udp_send_leaves_from_the_listening_port() {
    let (transport, _rx) = bind_udp(MAX).await;
    let peer = UdpSocket::bind(localhost()).await.expect("peer socket");
    let peer_addr = peer.local_addr().expect("peer addr");
    transport
        .send(Target::Udp(peer_addr), Bytes::from_static(OK))
        .expect("send");

    let mut buf = [0u8; 2048];
    let (len, from) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .expect("datagram in time")
        .expect("recv");
    assert_eq!(&buf[..len], OK);
    assert_eq!(Some(from), transport.local_udp_addr());
}

#[tokio::test]
async fn udp_crlf_keepalive_and_oversize_datagrams_are_dropped() {
    let (transport, mut rx) = bind_udp(256).await;
    let local = transport.local_udp_addr().expect("UDP bound");
    let peer = UdpSocket::bind(localhost()).await.expect("peer socket");
    peer.send_to(b"\r\n\r\n", local).await.expect("send");
    peer.send_to(&[b'x'; 257], local).await.expect("send");
    peer.send_to(OPTIONS, local).await.expect("send");

    let inbound = recv(&mut rx).await;
    assert_eq!(
        &inbound.data[..],
        OPTIONS,
        "keep-alive and oversize skipped"
    );
}

#[tokio::test]
async fn udp_send_to_closed_port_does_not_end_the_receive_loop() {
    let (transport, mut rx) = bind_udp(MAX).await;
    let local = transport.local_udp_addr().expect("UDP bound");
    let closed = {
        let socket = UdpSocket::bind(localhost()).await.expect("probe socket");
        socket.local_addr().expect("probe addr")
    };
    // Each datagram draws an ICMP port unreachable from the loopback stack,
    // reported on the socket before the next one is sent (loopback delivers
    // at once); spaced so each error is read on its own rather than merged
    // into one pending error (the sender's pacing, not a wait).
    for _ in 0..5 {
        let _ = transport.send(Target::Udp(closed), Bytes::from_static(OPTIONS));
        sleep(Duration::from_millis(20)).await;
    }

    let peer = UdpSocket::bind(localhost()).await.expect("peer socket");
    peer.send_to(MESSAGE, local).await.expect("send");
    let inbound = recv(&mut rx).await;
    assert_eq!(&inbound.data[..], MESSAGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pipelined_messages_in_one_write() {
    let (transport, mut rx) = bind_tcp(MAX, IDLE).await;
    let mut client = connect(&transport).await;
    client
        .write_all(&[OPTIONS, MESSAGE].concat())
        .await
        .expect("write");

    let first = recv(&mut rx).await;
    let second = recv(&mut rx).await;
    assert_eq!(&first.data[..], OPTIONS);
    assert_eq!(&second.data[..], MESSAGE);
    assert_eq!(first.source, second.source);
    assert_eq!(
        first.source.remote,
        client.local_addr().expect("client addr")
    );
    assert_eq!(Some(first.source.local), transport.local_tcp_addr());
    assert!(matches!(first.source.transport, TransportKind::Tcp(_)));
}

#[tokio::test]
async fn tcp_message_split_across_three_delayed_writes() {
    let (transport, mut rx) = bind_tcp(MAX, IDLE).await;
    let mut client = connect(&transport).await;
    let (a, rest) = MESSAGE.split_at(10);
    let (b, c) = rest.split_at(rest.len() - 7); // the cut falls inside the body
    for part in [a, b, c] {
        client.write_all(part).await.expect("write");
        client.flush().await.expect("flush");
        // The client's pacing: each part its own segment, read on its own.
        sleep(Duration::from_millis(30)).await;
    }
    let inbound = recv(&mut rx).await;
    assert_eq!(&inbound.data[..], MESSAGE);
    assert!(rx.try_recv().is_err(), "exactly one message");
}

#[tokio::test]
async fn tcp_double_crlf_ping_gets_a_crlf_pong() {
    let (transport, mut rx) = bind_tcp(MAX, IDLE).await;
    let mut client = connect(&transport).await;
    client.write_all(b"\r\n\r\n").await.expect("write ping");
    assert_eq!(read_exactly(&mut client, 2).await, b"\r\n");
    // The connection still carries messages after the keep-alive.
    client.write_all(OPTIONS).await.expect("write");
    assert_eq!(&recv(&mut rx).await.data[..], OPTIONS);
}

#[tokio::test]
async fn tcp_oversize_message_closes_connection_but_not_the_listener() {
    let (transport, mut rx) = bind_tcp(512, IDLE).await;
    let mut client = connect(&transport).await;
    client
        .write_all(b"MESSAGE sip:cb@127.0.0.1 SIP/2.0\r\nContent-Length: 100000\r\n\r\n")
        .await
        .expect("write");
    expect_closed(&mut client).await;
    wait_for_connections(&transport, 0).await;

    let mut second = connect(&transport).await;
    second.write_all(OPTIONS).await.expect("write");
    assert_eq!(&recv(&mut rx).await.data[..], OPTIONS);
}

#[tokio::test]
async fn tcp_message_without_content_length_closes_connection() {
    let (transport, mut rx) = bind_tcp(MAX, IDLE).await;
    let mut client = connect(&transport).await;
    client
        .write_all(b"OPTIONS sip:cb@127.0.0.1 SIP/2.0\r\nCall-ID: x\r\n\r\n")
        .await
        .expect("write");
    expect_closed(&mut client).await;
    wait_for_connections(&transport, 0).await;
    assert!(rx.try_recv().is_err(), "nothing delivered");
}

#[tokio::test]
async fn tcp_response_goes_back_on_the_request_connection() {
    let (transport, mut rx) = bind_tcp(MAX, IDLE).await;
    let mut client = connect(&transport).await;
    client.write_all(OPTIONS).await.expect("write");
    let request = recv(&mut rx).await;
    let TransportKind::Tcp(conn) = request.source.transport else {
        panic!("arrived over TCP");
    };

    transport
        .send(
            Target::Tcp {
                conn: Some(conn),
                remote: request.source.remote,
            },
            Bytes::from_static(OK),
        )
        .expect("send");
    assert_eq!(read_exactly(&mut client, OK.len()).await, OK);
    assert_eq!(transport.connection_count(), 1, "no new connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_send_to_new_remote_connects_and_reads_its_replies() {
    let (transport, mut rx) = bind_tcp(MAX, IDLE).await;
    let peer = TcpListener::bind(localhost()).await.expect("peer listener");
    let peer_addr = peer.local_addr().expect("peer addr");
    let target = Target::Tcp {
        conn: None,
        remote: peer_addr,
    };

    transport
        .send(target, Bytes::from_static(OPTIONS))
        .expect("send");
    let (mut accepted, _) = timeout(WAIT, peer.accept())
        .await
        .expect("connection in time")
        .expect("accept");
    assert_eq!(read_exactly(&mut accepted, OPTIONS.len()).await, OPTIONS);

    accepted.write_all(OK).await.expect("write reply");
    let reply = recv(&mut rx).await;
    assert_eq!(&reply.data[..], OK);
    assert_eq!(reply.source.remote, peer_addr);
    let TransportKind::Tcp(conn) = reply.source.transport else {
        panic!("arrived over TCP");
    };

    // An in-dialog request to the same remote reuses the connection.
    transport
        .send(target, Bytes::from_static(MESSAGE))
        .expect("send");
    assert_eq!(read_exactly(&mut accepted, MESSAGE.len()).await, MESSAGE);
    assert_eq!(transport.connection_count(), 1);
    assert!(
        timeout(Duration::from_millis(200), peer.accept())
            .await
            .is_err(),
        "no second connection"
    );

    // Naming the connection explicitly works too.
    transport
        .send(
            Target::Tcp {
                conn: Some(conn),
                remote: peer_addr,
            },
            Bytes::from_static(OPTIONS),
        )
        .expect("send");
    assert_eq!(read_exactly(&mut accepted, OPTIONS.len()).await, OPTIONS);
}

#[tokio::test]
async fn tcp_send_on_closed_connection_opens_a_new_one() {
    let (transport, mut rx) = bind_tcp(MAX, IDLE).await;
    let peer = TcpListener::bind(localhost()).await.expect("peer listener");
    let peer_addr = peer.local_addr().expect("peer addr");
    let target = Target::Tcp {
        conn: None,
        remote: peer_addr,
    };
    transport
        .send(target, Bytes::from_static(OPTIONS))
        .expect("send");
    let (mut first, _) = timeout(WAIT, peer.accept())
        .await
        .expect("in time")
        .expect("accept");
    first.write_all(OK).await.expect("write");
    let TransportKind::Tcp(old) = recv(&mut rx).await.source.transport else {
        panic!("arrived over TCP");
    };
    drop(first);
    wait_for_connections(&transport, 0).await;

    transport
        .send(
            Target::Tcp {
                conn: Some(old),
                remote: peer_addr,
            },
            Bytes::from_static(MESSAGE),
        )
        .expect("send");
    let (mut second, _) = timeout(WAIT, peer.accept())
        .await
        .expect("in time")
        .expect("accept");
    assert_eq!(read_exactly(&mut second, MESSAGE.len()).await, MESSAGE);
}

#[tokio::test]
async fn tcp_idle_connection_is_closed_and_forgotten() {
    let (transport, _rx) = bind_tcp(MAX, Duration::from_millis(200)).await;
    let mut client = connect(&transport).await;
    wait_for_connections(&transport, 1).await;
    expect_closed(&mut client).await;
    wait_for_connections(&transport, 0).await;
}

#[tokio::test]
async fn tcp_held_connection_is_not_closed_as_idle_until_released() {
    let (transport, mut rx) = bind_tcp(MAX, Duration::from_millis(200)).await;
    let mut held = connect(&transport).await;
    held.write_all(OPTIONS).await.expect("write");
    let TransportKind::Tcp(conn) = recv(&mut rx).await.source.transport else {
        panic!("arrived over TCP");
    };
    transport.hold_connection(conn, true);
    // A connection opened later, not held, is closed as idle…
    let mut other = connect(&transport).await;
    wait_for_connections(&transport, 2).await;
    expect_closed(&mut other).await;
    // … while the held one, idle for longer, stays.
    wait_for_connections(&transport, 1).await;
    held.write_all(OPTIONS).await.expect("still open");
    assert_eq!(
        recv(&mut rx).await.source.transport,
        TransportKind::Tcp(conn)
    );
    // Released, it is closed as idle like any other.
    transport.hold_connection(conn, false);
    expect_closed(&mut held).await;
    wait_for_connections(&transport, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_and_ends_the_inbound_queue() {
    let (transport, mut rx) = Transport::bind(Some(localhost()), Some(localhost()), MAX, IDLE)
        .await
        .expect("bind");
    let mut client = connect(&transport).await;
    wait_for_connections(&transport, 1).await;

    transport.shutdown();
    expect_closed(&mut client).await;
    assert_eq!(transport.connection_count(), 0);
    let end = timeout(WAIT, rx.recv()).await.expect("queue ends in time");
    assert!(end.is_none());
    assert!(
        transport
            .send(
                Target::Tcp {
                    conn: None,
                    remote: localhost()
                },
                Bytes::from_static(OPTIONS)
            )
            .is_err()
    );
}

/// RFC 3261 §17.1.4: a TCP connection the peer refuses is not a silent
/// loss: `send` queued the message, the connect fails, and the failure
/// comes out of the failure queue with the connection and address, for
/// the core to fail the transactions that used it.
#[tokio::test]
async fn a_refused_tcp_connection_is_reported_as_a_send_failure() {
    let (transport, _rx) = bind_tcp(MAX, IDLE).await;
    let mut failures = transport.take_failures().expect("the failure queue");
    assert!(transport.take_failures().is_none(), "handed out once");
    let refused = TcpListener::bind(localhost())
        .await
        .and_then(|l| l.local_addr())
        .expect("a free port");
    transport
        .send(
            Target::Tcp {
                conn: None,
                remote: refused,
            },
            Bytes::from_static(OPTIONS),
        )
        .expect("queued for a new connection");
    let failure = timeout(WAIT, failures.recv())
        .await
        .expect("a failure in time")
        .expect("failure queue open");
    assert!(
        matches!(failure.target, Target::Tcp { conn: Some(_), remote } if remote == refused),
        "{failure:?}"
    );
    assert_eq!(failure.stage, FailedStage::Connect);
    assert_eq!(failure.error.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(transport.send_failures(), 1);
    wait_for_connections(&transport, 0).await;
}

/// RFC 5626 §4.4.1: a connection we open carries a CRLF ping (`\r\n\r\n`)
/// every 80–100 % of the ping interval, again and again while the peer
/// answers with its pong; the pings are not SIP messages.
#[tokio::test]
async fn connections_we_open_carry_crlf_pings() {
    let (transport, _rx) = bind_tcp(MAX, IDLE).await;
    transport.set_ping_interval(Duration::from_millis(100));
    let peer = TcpListener::bind(localhost()).await.expect("peer listener");
    let remote = peer.local_addr().expect("peer address");
    transport
        .send(
            Target::Tcp { conn: None, remote },
            Bytes::from_static(OPTIONS),
        )
        .expect("queued");
    let (mut stream, _) = timeout(WAIT, peer.accept())
        .await
        .expect("connected in time")
        .expect("accept");
    assert_eq!(read_exactly(&mut stream, OPTIONS.len()).await, OPTIONS);
    for _ in 0..2 {
        assert_eq!(read_exactly(&mut stream, 4).await, b"\r\n\r\n");
        stream.write_all(b"\r\n").await.expect("pong");
    }
    assert_eq!(transport.connection_count(), 1);
    assert_eq!(transport.send_failures(), 0);
}
