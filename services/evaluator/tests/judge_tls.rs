//! The judge over `https://`: a mock chat-completions endpoint behind TLS (a test CA and a
//! certificate for 127.0.0.1 under `tests/fixtures`, valid for 100 years) is trusted through
//! `judge.ca_cert_file`, and refused without it.

use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use sextant_evaluator::scorers::{parse_evaluator, JudgeSettings, ScoreErrorKind, ScoreInput};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A mock judge over TLS answering every request with a score of 0.9.
async fn tls_judge() -> String {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(fixture("test-judge.cert.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("test-judge.key.pem")).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}/v1", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body =
                        json!({"choices": [{"message": {"role": "assistant", "content": "{\"score\": 0.9, \"reasoning\": \"over TLS\"}"}}],
                                      "usage": {"prompt_tokens": 10, "completion_tokens": 5}})
                        .to_string();
                    let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                    return;
                }
            });
        }
    });
    url
}

fn input() -> ScoreInput {
    ScoreInput { inputs: json!({"q": "2+2"}), outputs: json!({"a": "4"}), reference: None }
}

#[tokio::test]
async fn an_https_judge_is_trusted_through_the_configured_ca() {
    let url = tls_judge().await;
    let settings = JudgeSettings {
        base_url: url,
        model: "mock".into(),
        ca_cert_file: Some(fixture("test-ca.cert.pem")),
        max_retries: 0,
        ..Default::default()
    };
    settings.validate().unwrap();
    let judge = parse_evaluator(&json!({"type": "llm_judge", "key": "tls", "prompt": "{outputs}"}), &settings).unwrap();
    let out = judge.score(&input()).await.unwrap();
    assert_eq!(out.score, 0.9);
    assert!(out.comment.contains("over TLS"), "{}", out.comment);
}

#[tokio::test]
async fn an_https_judge_with_an_unknown_certificate_is_an_endpoint_error() {
    let url = tls_judge().await;
    let settings = JudgeSettings { base_url: url, model: "mock".into(), max_retries: 0, ..Default::default() };
    let judge = parse_evaluator(&json!({"type": "llm_judge", "key": "tls", "prompt": "{outputs}"}), &settings).unwrap();
    let err = judge.score(&input()).await.unwrap_err();
    assert_eq!(err.kind, ScoreErrorKind::Endpoint, "{err}");
}
