//! Connections that hold the server's resources without finishing a request:
//! slow heads, idle keep-alives, too many at once, oversized heads.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, ServerProcess, TestDatabase};
use crate::{on_both_backends, one_at_a_time};

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n";

async fn start(backend: Backend, env: &[(&str, &str)]) -> (TestDatabase, ServerProcess) {
    let db = TestDatabase::create(backend).await;
    let server = ServerProcess::start(&db.url, env).await;
    (db, server)
}

async fn connect(server: &ServerProcess) -> TcpStream {
    TcpStream::connect(server.socket_address())
        .await
        .expect("the server accepts a connection")
}

/// Reads one response head and its body; `None` when the server closes the
/// connection first.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Some(text);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => received.extend_from_slice(&chunk[..read]),
        }
    }
}

/// How long until the server closes `stream`, waiting at most `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn healthz_answers(server: &ServerProcess) {
    let response = reqwest::get(format!("{}/healthz", server.address))
        .await
        .expect("/healthz answers");
    assert_eq!(response.status(), 200);
}

async fn a_client_that_sends_its_head_slowly_is_disconnected(backend: Backend) {
    let _turn = one_at_a_time().await;
    let (_db, server) = start(backend, &[("HEADER_READ_TIMEOUT", "1s")]).await;
    let mut stream = connect(&server).await;
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("a request line");
    // One byte of a header every 100 ms, never finishing the head.
    let mut closed_after = None;
    for byte in b"x-slow: ".iter().cycle().take(60) {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        if let Some(after) = closed_within(&mut stream, Duration::from_millis(100)).await {
            closed_after = Some(started.elapsed().max(after));
            break;
        }
    }
    let closed_after = closed_after.expect("the server closed the slow connection");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "closed after {closed_after:?}, with HEADER_READ_TIMEOUT=1s"
    );
    healthz_answers(&server).await;
}

async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(backend: Backend) {
    let _turn = one_at_a_time().await;
    let (_db, server) = start(
        backend,
        &[("IDLE_TIMEOUT", "2s"), ("HEADER_READ_TIMEOUT", "1s")],
    )
    .await;
    let mut stream = connect(&server).await;
    stream.write_all(HEALTHZ).await.expect("a request");
    assert!(
        read_response(&mut stream)
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    );
    // Idle for longer than the head timeout but less than the idle one: kept.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(HEALTHZ).await.expect("a second request");
    assert!(
        read_response(&mut stream)
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "the connection stays open between requests for less than IDLE_TIMEOUT"
    );
    let closed = closed_within(&mut stream, Duration::from_secs(6)).await;
    let closed = closed.expect("the idle connection is closed");
    assert!(
        closed >= Duration::from_millis(1800) && closed < Duration::from_secs(5),
        "closed after {closed:?} idle, with IDLE_TIMEOUT=2s"
    );
}

async fn connections_over_the_cap_wait_until_one_closes(backend: Backend) {
    let _turn = one_at_a_time().await;
    let (_db, server) = start(backend, &[("MAX_CONNECTIONS", "2")]).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&server).await;
        stream.write_all(HEALTHZ).await.expect("a request");
        assert!(read_response(&mut stream).await.is_some());
        open.push(stream);
    }
    let mut third = connect(&server).await;
    third.write_all(HEALTHZ).await.expect("a request");
    let waited = tokio::time::timeout(Duration::from_millis(500), read_response(&mut third)).await;
    assert!(
        waited.is_err(),
        "a third connection is not served while two are open"
    );
    drop(open.pop());
    let served = tokio::time::timeout(Duration::from_secs(3), read_response(&mut third)).await;
    assert!(
        served
            .ok()
            .flatten()
            .is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "the third connection is served once one closes"
    );
    assert!(
        server
            .logged("every connection slot is in use (MAX_CONNECTIONS): new connections wait")
            .is_some(),
        "a full house is logged"
    );
}

/// Sends a GET with `headers` and checks the refusal: its status, a JSON
/// error body of the usual shape and an `x-request-id`.
async fn refused_head(
    server: &ServerProcess,
    path: &str,
    headers: &[(String, String)],
    status: u16,
) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", server.address));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("the server answers");
    assert_eq!(
        response.status().as_u16(),
        status,
        "{path} with {} headers",
        headers.len()
    );
    assert!(
        response.headers().contains_key("x-request-id"),
        "an x-request-id on {status}"
    );
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("KiB")),
        "{body}"
    );
}

async fn oversized_heads_are_refused_with_a_json_error_and_a_request_id(backend: Backend) {
    let _turn = one_at_a_time().await;
    let (_db, server) = start(backend, &[]).await;
    let many: Vec<(String, String)> = (0..101).map(|n| (format!("x-h{n}"), "v".into())).collect();
    refused_head(&server, "/graphql", &many, 431).await;
    let large = vec![("x-large".to_owned(), "v".repeat(17 * 1024))];
    refused_head(&server, "/graphql", &large, 431).await;
    let long_query = format!("/graphql?query={}", "a".repeat(33 * 1024));
    refused_head(&server, &long_query, &[], 414).await;

    // Past what the HTTP library reads of a head at all: it answers 431 itself.
    let mut stream = connect(&server).await;
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nx-huge: {}\r\n\r\n",
        "v".repeat(100 * 1024)
    );
    let _ = stream.write_all(huge.as_bytes()).await;
    assert!(
        read_response(&mut stream)
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 431"))
    );
    healthz_answers(&server).await;
}

async fn unfinished_heads_from_many_clients_hold_bounded_memory(backend: Backend) {
    let _turn = one_at_a_time().await;
    let (_db, server) = start(backend, &[("HEADER_READ_TIMEOUT", "2s")]).await;
    let before = server.memory_kib("VmRSS");
    let mut streams = Vec::new();
    for _ in 0..200 {
        let mut stream = connect(&server).await;
        // 400 KB of headers that never end: refused once past the head limit.
        let head = format!("GET /healthz HTTP/1.1\r\nx-a: {}", "v".repeat(400 * 1024));
        let _ = stream.write_all(head.as_bytes()).await;
        streams.push(stream);
    }
    healthz_answers(&server).await;
    let grown = server.memory_kib("VmRSS").saturating_sub(before);
    assert!(grown < 40 * 1024, "200 unfinished heads took {grown} KiB");
    drop(streams);
    healthz_answers(&server).await;
}

on_both_backends!(
    a_client_that_sends_its_head_slowly_is_disconnected,
    an_idle_keep_alive_connection_is_closed_after_the_idle_timeout,
    connections_over_the_cap_wait_until_one_closes,
    oversized_heads_are_refused_with_a_json_error_and_a_request_id,
    unfinished_heads_from_many_clients_hold_bounded_memory,
);
