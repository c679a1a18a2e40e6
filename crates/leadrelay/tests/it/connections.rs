//! What a connection may cost the server: clients that open sockets and
//! send nothing (or half a request head) are closed after the header-read
//! timeout and never starve real leads of file descriptors; the connection
//! cap holds; a body that trickles in forever gets 408.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::binary::{FORM, Server, http_client, write_config};
use crate::support::{TestApp, TestDb, lead, webhook_config};

/// Opens up to `n` connections to `addr` (for at most 30 s); every other
/// one sends half a request head and stops. Connections the server never
/// accepts are kept too (they wait in its listen queue).
async fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    let started = std::time::Instant::now();
    for i in 0..n {
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
        else {
            continue;
        };
        if i % 2 == 1 {
            let _ = s
                .write_all(b"POST /v1/forms/contact HTTP/1.1\r\nHost: leads\r\nContent-Type: application/json\r\n")
                .await;
        }
        out.push(s);
    }
    out
}

/// Whether the server closed this connection (EOF or reset) within `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, read_to_end).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_idle_connections_neither_stop_ingest_nor_stay_open() {
    // This process holds the 2,000 client ends.
    rlimit::increase_nofile_limit(u64::MAX).expect("raise the test's open-file limit");
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let config = write_config(
        dir.path(),
        &db,
        &format!("header_read_timeout = \"2s\"\n{FORM}"),
    );
    // Started like a systemd service without LimitNOFILE: soft limit 1,024.
    let server = Server::start_with_open_file_limit(&config, dir.path(), 1024).await;
    let addr = server.base.trim_start_matches("http://").to_string();

    let mut idle = idle_connections(&addr, 2_000).await;
    assert!(
        idle.len() >= 1_900,
        "only {} connections opened",
        idle.len()
    );

    // A real lead is answered while the idle connections are held.
    let client = http_client();
    let resp = client
        .post(format!("{}/v1/forms/contact", server.base))
        .json(&lead("real@idle.io"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the lead is answered while 2,000 connections idle");
    assert_eq!(resp.status(), 202);

    // And every idle connection is closed after the header-read timeout.
    let mut open = 0;
    for s in &mut idle {
        if !closed_within(s, Duration::from_secs(30)).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "idle connections still open after the timeout");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = TestApp::spawn(&webhook_config(
        "http://127.0.0.1:9/hook",
        "[server]\nmax_connections = 8\nheader_read_timeout = \"60s\"",
    ))
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let held = idle_connections(&addr, 8).await;
    assert_eq!(held.len(), 8);
    // Give the server time to accept all eight (it answers none of them).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let send = || {
        app.client
            .post(app.url("/v1/forms/contact"))
            .json(&lead("capped@idle.io"))
            .timeout(Duration::from_secs(2))
            .send()
    };
    // At the cap, a ninth connection is not served…
    assert!(send().await.is_err(), "served beyond max_connections");
    // …until a slot frees.
    drop(held);
    let resp = crate::support::eventually(
        "a request after the cap frees",
        Duration::from_secs(30),
        || async { send().await.ok() },
    )
    .await;
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn a_body_that_trickles_forever_gets_408() {
    let app = TestApp::spawn(&webhook_config(
        "http://127.0.0.1:9/hook",
        "[server]\nbody_read_timeout = \"1s\"",
    ))
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /v1/forms/contact HTTP/1.1\r\nHost: leads\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{",
    )
    .await
    .unwrap();
    // One byte every 200 ms, far slower than the body needs.
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        loop {
            if wr.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    trickle.abort();
    assert!(read.is_ok(), "no answer to a trickling body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
    // Nothing was stored.
    assert!(
        app.store
            .list_events(&Default::default(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
