//! A single HTTP/1.1 keep-alive connection (no pool), reconnecting on failure.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where to send requests: `http://host:port[/prefix]`.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port` to connect to.
    pub authority: String,
    /// Path prefix without a trailing `/` (e.g. `/api/v1`), usually empty.
    pub prefix: String,
    pub api_key: Option<String>,
}

impl Target {
    pub fn parse(url: &str, api_key: &str) -> Result<Self> {
        let uri: http::Uri = url.trim_end_matches('/').parse().with_context(|| format!("bad url {url}"))?;
        match uri.scheme_str() {
            Some("http") | None => {}
            Some(s) => bail!("only http:// is supported (got {s}://)"),
        }
        let host = uri.host().ok_or_else(|| anyhow!("url {url} has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
        Ok(Target {
            authority: format!("{host}:{port}"),
            prefix: uri.path().trim_end_matches('/').to_string(),
            api_key: if api_key.is_empty() { None } else { Some(api_key.to_string()) },
        })
    }

    /// Headers sent with every request.
    pub fn base_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(&self.authority).expect("host header"));
        h.insert(header::USER_AGENT, HeaderValue::from_static("sextant-loadgen/0.1"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(k) = &self.api_key {
            h.insert("x-api-key", HeaderValue::from_str(k).expect("api key header"));
        }
        h
    }
}

pub struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
    pub connects: u64,
}

impl Conn {
    pub fn new(target: Target) -> Self {
        Conn { target, sender: None, connects: 0 }
    }

    pub async fn connect(&mut self) -> Result<()> {
        let tcp = TcpStream::connect(&self.target.authority).await.with_context(|| format!("connect {}", self.target.authority))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        self.connects += 1;
        Ok(())
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Drops the current connection; the next request reconnects.
    pub fn reset(&mut self) {
        self.sender = None;
    }

    /// Sends one request and reads the whole response. `path` is appended to the url prefix.
    pub async fn request(&mut self, method: Method, path: &str, mut headers: HeaderMap, body: Bytes) -> Result<(StatusCode, Bytes)> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().unwrap();
        if sender.ready().await.is_err() {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().unwrap();
        if method != Method::GET || !body.is_empty() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = format!("{}{}", self.target.prefix, path).parse()?;
        *req.headers_mut() = headers;
        let res = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = res.status();
        let body = match res.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        Ok((status, body))
    }

    /// `request` with a JSON body and a timeout.
    pub async fn post_json(&mut self, path: &str, body: &serde_json::Value, timeout: Duration) -> Result<(StatusCode, Bytes)> {
        let mut h = self.target.base_headers();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = Bytes::from(serde_json::to_vec(body)?);
        match tokio::time::timeout(timeout, self.request(Method::POST, path, h, body)).await {
            Ok(r) => r,
            Err(_) => {
                self.reset();
                bail!("POST {path} timed out after {timeout:?}")
            }
        }
    }

    pub async fn get(&mut self, path: &str, timeout: Duration) -> Result<(StatusCode, Bytes)> {
        let h = self.target.base_headers();
        match tokio::time::timeout(timeout, self.request(Method::GET, path, h, Bytes::new())).await {
            Ok(r) => r,
            Err(_) => {
                self.reset();
                bail!("GET {path} timed out after {timeout:?}")
            }
        }
    }
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
