//! Clients that attack the front door (issue 15): slow request bodies, responses nobody
//! reads, too many connections from one address, downloads of large files by clients that
//! do not read, bodies of the wrong media type, garbled identity headers, methods a path
//! does not have, and images whose headers claim absurd sizes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;
use support::{HANG_GUARD, Server, Store, client, eventually, png};

const ME: &str = "uid_0badc0de";

/// The server's gauge of open HTTP connections, read over a fresh connection (which counts
/// itself).
fn open_connections(server: &Server) -> i64 {
    let text = client()
        .get(server.url("/metrics"))
        .header("connection", "close")
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("openchat_http_connections_open "))
        .or_else(|| {
            text.lines()
                .find_map(|line| line.strip_prefix("http_connections_open "))
        })
        .unwrap_or_else(|| panic!("no connection gauge in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn healthz_answers(server: &Server) -> bool {
    client()
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .is_ok_and(|r| r.status() == StatusCode::OK)
}

/// A TCP connection from a chosen loopback source address, with a small receive buffer when
/// asked (so an unread response stays on the server's side).
fn connect_from(source: &str, to: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(to).await.unwrap();
        stream.into_std().unwrap()
    })
}

/// Reads what the server sent until it closes (bounded by the hang guard).
fn read_to_close(mut stream: TcpStream) -> String {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

fn upload_image(server: &Server, bytes: Vec<u8>) -> (StatusCode, Value) {
    let form = Form::new().text("body", "a picture").part(
        "files",
        Part::bytes(bytes)
            .file_name("big.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let response = client()
        .post(server.url("/v1/channels/ch_general/messages"))
        .header("X-OpenChat-User-UID", ME)
        .multipart(form)
        .send()
        .unwrap();
    let status = response.status();
    (status, response.json().unwrap())
}

/// A PNG header of small dimensions padded to `len` bytes.
fn big_png(len: usize) -> Vec<u8> {
    let mut bytes = png(64, 48);
    bytes.resize(len, 0x5a);
    bytes
}

fn server_rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[test]
fn slow_bodies_and_unread_responses_are_cut_off_while_healthz_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[
            ("OPENCHAT_HTTP_BODY_IDLE_SECONDS", "1"),
            ("OPENCHAT_HTTP_WRITE_STALL_SECONDS", "2"),
            ("OPENCHAT_RATE_LIMIT_PER_MINUTE", "100000"),
        ],
    );
    // Something large to download slowly.
    let (status, created) = upload_image(&server, big_png(12 << 20));
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let url = created["message"]["attachments"][0]["url"].as_str().unwrap();
    let path = url
        .split_once("/v1/")
        .map(|(_, rest)| format!("/v1/{rest}"))
        .unwrap();
    let baseline = open_connections(&server);

    let head = "POST /v1/channels/ch_general/messages HTTP/1.1\r\nHost: x\r\n\
                X-OpenChat-User-UID: uid_0badc0de\r\nContent-Type: application/json\r\n\
                Content-Length: 100000\r\n\r\n{";
    // Stalled bodies: one byte, then nothing (the gap bound).
    let stalled: Vec<TcpStream> = (0..150)
        .map(|_| {
            let mut s = connect_from("127.0.0.1", server.addr, None);
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    // Trickled bodies: a byte every 300 ms keeps every gap short but the rate far too low.
    let mut trickled: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = connect_from("127.0.0.1", server.addr, None);
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    // Readers that never read a 12 MiB response.
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let unread: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect_from("127.0.0.1", server.addr, Some(4096));
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    assert!(healthz_answers(&server), "/healthz must answer during the attack");

    // Keep trickling until the server gives up on them.
    let trickle_until = Instant::now() + HANG_GUARD;
    let mut trickled_answers = Vec::new();
    while !trickled.is_empty() && Instant::now() < trickle_until {
        std::thread::sleep(Duration::from_millis(300));
        trickled.retain_mut(|s| {
            if s.write_all(b" ").is_ok() {
                return true;
            }
            trickled_answers.push(s.try_clone().unwrap());
            false
        });
        // A refused write may come only after the answer: also look for the answer itself.
        trickled.retain_mut(|s| {
            s.set_nonblocking(true).unwrap();
            let mut peek = [0u8; 16];
            let answered = matches!(s.peek(&mut peek), Ok(n) if n > 0);
            s.set_nonblocking(false).unwrap();
            if answered {
                trickled_answers.push(s.try_clone().unwrap());
            }
            !answered
        });
    }
    assert!(trickled.is_empty(), "trickled bodies were never cut off");
    for answer in trickled_answers {
        let text = read_to_close(answer);
        assert!(text.starts_with("HTTP/1.1 408"), "a trickled body: {text:?}");
        assert!(text.contains("request_timeout"), "{text}");
    }
    for stream in stalled {
        let text = read_to_close(stream);
        assert!(text.starts_with("HTTP/1.1 408"), "a stalled body: {text:?}");
        assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    }
    // The unread downloads are closed by the server, not by us.
    eventually("unread responses are closed", || {
        open_connections(&server) <= baseline
    });
    for stream in unread {
        // Whatever had been sent, then the close: never the whole 12 MiB.
        let text = read_to_close(stream);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{}",
            &text[..text.len().min(80)]
        );
        assert!(text.len() < 12 << 20, "the whole body arrived: {}", text.len());
    }
    assert!(healthz_answers(&server));
}

#[test]
fn one_address_may_hold_only_its_share_of_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[("OPENCHAT_HTTP_CONNECTIONS_PER_IP_MAX", "5")],
    );
    let held: Vec<TcpStream> = (0..5)
        .map(|_| connect_from("127.0.0.1", server.addr, None))
        .collect();
    eventually("five connections are open", || {
        // Counted from another address, which has its own share.
        let stream = connect_from("127.0.0.2", server.addr, None);
        let mut stream = stream;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let text = read_to_close(stream);
        text.lines()
            .find_map(|l| l.strip_prefix("openchat_http_connections_open "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .is_some_and(|n| n >= 6)
    });
    // The sixth from the same address is answered 429 and closed at once.
    let sixth = connect_from("127.0.0.1", server.addr, None);
    let text = read_to_close(sixth);
    assert!(text.starts_with("HTTP/1.1 429"), "{text:?}");
    assert!(text.contains("too_many_connections"), "{text}");
    // Another address is served meanwhile.
    let mut other = connect_from("127.0.0.2", server.addr, None);
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(read_to_close(other).starts_with("HTTP/1.1 200"));
    // A closed connection gives its slot back.
    drop(held);
    eventually("a slot is free again", || {
        let mut again = connect_from("127.0.0.1", server.addr, None);
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        read_to_close(again).starts_with("HTTP/1.1 200")
    });
}

#[test]
fn large_downloads_stream_so_clients_that_do_not_read_cost_little_memory() {
    const BLOB_BYTES: usize = 40 << 20;
    const CLIENTS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[("OPENCHAT_RATE_LIMIT_PER_MINUTE", "100000")],
    );
    let blob = big_png(BLOB_BYTES);
    let (status, created) = upload_image(&server, blob.clone());
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let url = created["message"]["attachments"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = url
        .split_once("/v1/")
        .map(|(_, rest)| format!("/v1/{rest}"))
        .unwrap();

    // A whole read is byte-identical, with the length announced up front.
    let response = client().get(&url).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"].to_str().unwrap(),
        BLOB_BYTES.to_string()
    );
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    assert!(
        response.bytes().unwrap() == blob,
        "the download differs from the upload"
    );
    // A range is the slice it names.
    let response = client()
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()["content-range"].to_str().unwrap(),
        format!("bytes 1000-1999/{BLOB_BYTES}")
    );
    assert!(response.bytes().unwrap() == blob[1000..2000]);
    let response = client()
        .get(&url)
        .header("range", format!("bytes={BLOB_BYTES}-"))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let before = server_rss_kib(&server);
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let idle: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut s = connect_from("127.0.0.1", server.addr, Some(4096));
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    // Every request has been answered as far as the client lets it...
    eventually("every download started", || {
        idle.iter().all(|s| {
            s.set_nonblocking(true).unwrap();
            let mut peek = [0u8; 12];
            let started = matches!(s.peek(&mut peek), Ok(12) if &peek == b"HTTP/1.1 200");
            s.set_nonblocking(false).unwrap();
            started
        })
    });
    // ...and had time to fill whatever the server would buffer.
    std::thread::sleep(Duration::from_secs(2));
    let after = server_rss_kib(&server);
    let growth = after.saturating_sub(before);
    // A response may hold a chunk, hyper's write buffer and its bookkeeping: 1 MiB each is
    // generous; reading the file whole would be 40 MiB each.
    let allowed = CLIENTS * 1024 + 16 * 1024;
    assert!(
        growth <= allowed,
        "server RSS grew by {growth} KiB for {CLIENTS} unread downloads (allowed {allowed} KiB)"
    );
    drop(idle);
}

fn post_raw(server: &Server, path: &str, content_type: Option<&str>, body: &'static [u8]) -> (u16, Value) {
    let mut request = client()
        .post(server.url(path))
        .header("X-OpenChat-User-UID", ME)
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn bodies_must_be_of_the_media_type_the_route_takes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[]);
    let messages = "/v1/channels/ch_general/messages";
    let json_body: &[u8] = br#"{"body":"hello"}"#;
    for refused in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data"),
        Some("application/jsonx"),
        None,
    ] {
        let (status, body) = post_raw(&server, messages, refused, json_body);
        assert_eq!(status, 415, "{refused:?}: {body}");
        assert_eq!(body["code"], "unsupported_media_type", "{refused:?}");
    }
    for accepted in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
    ] {
        let (status, body) = post_raw(&server, messages, Some(accepted), json_body);
        assert_eq!(status, 201, "{accepted}: {body}");
    }
    // An avatar is a form, never JSON.
    let (status, body) = post_raw(&server, "/v1/profile/avatar", Some("application/json"), b"{}");
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    // Requests without a body are not refused: an empty read ack, a DELETE.
    let response = client()
        .put(server.url("/v1/channels/ch_general/read-ack"))
        .header("X-OpenChat-User-UID", ME)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, created) = post_raw(&server, messages, Some("application/json"), json_body);
    let id = created["message"]["id"].as_str().unwrap();
    let response = client()
        .delete(server.url(&format!("{messages}/{id}")))
        .header("X-OpenChat-User-UID", ME)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[test]
fn identity_headers_that_are_not_text_are_refused_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    for env in ["development", "production"] {
        let server = Server::start(
            dir.path(),
            &Store::Sqlite,
            &[
                ("OPENCHAT_ENV", env),
                ("OPENCHAT_JOIN_TICKET_SECRET", "a-test-secret-of-enough-bytes"),
            ],
        );
        for (name, display) in [
            ("x-openchat-user-uid", "X-OpenChat-User-UID"),
            ("x-openchat-device-id", "X-OpenChat-Device-ID"),
            ("authorization", "Authorization"),
        ] {
            for path in ["/v1/profile/me", "/v1/channels/ch_general/messages"] {
                let value = reqwest::header::HeaderValue::from_bytes(b"uid_\xe9t\xe9").unwrap();
                let response = client().get(server.url(path)).header(name, value).send().unwrap();
                assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{env} {name} {path}");
                let body: Value = response.json().unwrap();
                assert_eq!(body["code"], "invalid_identity_header");
                assert!(body["message"].as_str().unwrap().contains(display), "{body}");
            }
        }
        drop(server);
    }
}

#[test]
fn a_method_the_path_lacks_is_405_with_allow() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[]);
    for (method, path, allow) in [
        (reqwest::Method::POST, "/healthz", "GET, HEAD, OPTIONS"),
        (
            reqwest::Method::PATCH,
            "/v1/profile/me",
            "GET, PUT, HEAD, OPTIONS",
        ),
        (
            reqwest::Method::PUT,
            "/v1/channels/ch_general/messages",
            "GET, POST, HEAD, OPTIONS",
        ),
    ] {
        let response = client().request(method.clone(), server.url(path)).send().unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
    }
}

#[test]
fn attachments_beyond_the_pixel_limits_are_refused_and_the_limits_advertised() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[]);
    let caps: Value = client()
        .get(server.url("/v1/client/capabilities"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let limits = &caps["limits"];
    let width = limits["max_attachment_width"].as_u64().unwrap();
    let height = limits["max_attachment_height"].as_u64().unwrap();
    let pixels = limits["max_attachment_pixels"].as_u64().unwrap();
    assert!(width * height >= pixels && pixels > 0);
    let cases = [
        (png(100_000, 100_000), "max_attachment_width"),
        (png(i32::MAX as u32, i32::MAX as u32), "max_attachment_width"),
        (png(1, height as u32 + 1), "max_attachment_height"),
        (
            png(width as u32, (pixels / width + 1) as u32),
            "max_attachment_pixels",
        ),
    ];
    for (image, limit) in cases {
        let (status, body) = upload_image(&server, image);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["code"], "attachment_invalid_image");
        assert!(body["message"].as_str().unwrap().contains(limit), "{body}");
    }
    let (status, _) = upload_image(&server, png(width as u32, (pixels / width) as u32));
    assert_eq!(status, StatusCode::CREATED);
    // Nothing of the refused uploads stayed behind: one blob, the accepted one.
    let blobs = walk_files(&dir.path().join("blobs"));
    assert_eq!(blobs, 1, "refused images left files");
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| if path.is_dir() { walk_files(&path) } else { 1 })
        .sum()
}
