//! With `OPENCHAT_TLS_CERT`/`OPENCHAT_TLS_KEY`, openchatd serves HTTPS on the same address.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{Server, Store};

#[test]
fn healthz_is_reachable_over_https_with_the_certificate_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &Store::Sqlite,
        &[
            ("OPENCHAT_TLS_CERT", cert_path.to_str().unwrap()),
            ("OPENCHAT_TLS_KEY", key_path.to_str().unwrap()),
        ],
    );
    assert!(
        server
            .log
            .iter()
            .any(|line| line.contains("\"scheme\":\"https\"")),
        "{:?}",
        server.log
    );

    let trusted = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let https = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(trusted)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", server.addr.port());
    let response = https.get(&url).send().unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.text().unwrap(), r#"{"status":"ok"}"#);

    // Public URLs default to https when TLS is on.
    let caps: serde_json::Value = https
        .get(format!(
            "https://localhost:{}/v1/client/capabilities",
            server.addr.port()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(caps["server_id"], "srv_harbor");
    let public = format!("\"public_base_url\":\"https://localhost:{}\"", server.addr.port());
    assert!(
        server
            .log
            .iter()
            .any(|line| line.contains("\"listening\"") && line.contains(&public)),
        "{:?}",
        server.log
    );

    // A client that does not trust the certificate is refused.
    let untrusting = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    assert!(untrusting.get(&url).send().is_err());

    // Plain HTTP on the TLS port is not served.
    let plain = support::client()
        .get(format!("http://{}/healthz", server.addr))
        .send();
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}
