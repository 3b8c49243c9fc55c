//! Slow and greedy clients at the gateway's listener (`up` mode): a
//! request head trickled in a line at a time (answered 408), a connection
//! that never sends anything, a keep-alive connection left idle: each is
//! closed once `gateway.request_head_timeout` has passed, while other
//! clients are served; one address cannot open more than
//! `gateway.max_connections_per_client` connections; a request body that
//! stalls is answered 408.
//!
//! The clients pace themselves with sleeps (that is what slow clients do);
//! nothing here waits for the server with one.

mod harness;

use std::time::Duration;

use harness::{get, spawn_up_with};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
const PER_CLIENT: usize = 20;

/// Reads until the server closes the connection; what it sent before.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a request head one header line every 100 ms for up to 30 s (far
/// beyond the timeout); how many lines went out before the server closed.
async fn trickle(addr: std::net::SocketAddr) -> usize {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut buf = [0u8; 256];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    writer.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("request line");
    for line in 0..300 {
        if closed.is_finished() || writer.write_all(format!("X-Slow-{line}: 1\r\n").as_bytes()).await.is_err() {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    300
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_greedy_clients_are_cut_off_while_others_are_served() {
    let app = spawn_up_with(|c| {
        c.gateway.request_head_timeout = HEAD_TIMEOUT;
        c.gateway.max_connections_per_client = PER_CLIENT;
    })
    .await;
    let addr = app.http;

    // Ten clients trickling their heads, one saying nothing at all.
    let trickling: Vec<_> = (0..10).map(|_| tokio::spawn(trickle(addr))).collect();
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    // Meanwhile a normal client is answered.
    for _ in 0..5 {
        let reply = get(&app.url("/healthz"), None).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    for client in trickling {
        let lines = client.await.expect("joined");
        assert!(lines < 300, "a trickled head was still read after {lines} lines");
    }
    assert!(until_closed(&mut silent).await.is_empty(), "a silent connection is closed, unanswered");

    // A head left unfinished is answered 408 problem+json, then closed.
    let mut unfinished = TcpStream::connect(addr).await.expect("connect");
    unfinished.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("half a head");
    let answer = String::from_utf8_lossy(&until_closed(&mut unfinished).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("request-timeout"), "{answer}");

    // A keep-alive connection: answered, then closed when left idle.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
    let answered = until_closed(&mut idle).await;
    assert!(answered.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answered));
    let answered = String::from_utf8_lossy(&answered);
    assert_eq!(answered.matches("HTTP/1.1 ").count(), 1, "no 408 for an idle connection: {answered}");

    // One address: PER_CLIENT connections, then the next is closed at once
    // while the first ones still work.
    let mut held = Vec::new();
    for _ in 0..PER_CLIENT {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let mut one_more = TcpStream::connect(addr).await.expect("the TCP handshake itself completes");
    assert!(until_closed(&mut one_more).await.is_empty(), "closed without an answer");
    let first = &mut held[0];
    first.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("request");
    let answer = until_closed(first).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "a held connection still works: {}", String::from_utf8_lossy(&answer));
    drop(held);
    app.stop_all().await;
}

/// Sends `head` and half of a body, then nothing: what the server answered
/// before closing.
async fn stall_body(addr: std::net::SocketAddr, head: &str, half: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(half).await.expect("half a body");
    String::from_utf8_lossy(&until_closed(&mut stream).await).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stalls_is_answered_408_and_creates_nothing() {
    let app = spawn_up_with(|c| c.gateway.request_body_timeout = Duration::from_secs(1)).await;
    let token = harness::token_for(app.data_dir.path(), "shop", Some("acme"), None, "orders:read orders:write");

    // A JSON order: 200 bytes announced, 20 sent.
    let answer = stall_body(
        app.http,
        &format!(
            "POST /partner/v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nIdempotency-Key: stall-1\r\nContent-Length: 200\r\n\r\n"
        ),
        br#"{"customer": {"ext"#,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("request-timeout"), "{answer}");

    // An order file sent chunked, broken off after its first rows.
    let answer = stall_body(
        app.http,
        &format!(
            "POST /partner/v1/order-batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        {
            let rows = "external_ref,sku,quantity\nPO-1,WIDGET-1,1\nPO-";
            format!("{:x}\r\n{rows}\r\n", rows.len())
        }
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Nothing of either was kept.
    let orders = get(&app.url("/partner/v1/orders"), Some(&token)).await;
    assert_eq!(orders.status, 200, "{}", orders.text);
    assert_eq!(orders.body["orders"].as_array().map(Vec::len), Some(0), "{}", orders.text);
    app.stop_all().await;
}
