//! A deliberately tiny plain-HTTP client for loopback servers (etcd health, OpenBao).
//!
//! It speaks HTTP/1.0 with `Connection: close`, so responses are never chunked and end when the
//! server closes the connection. Not for TLS, redirects or anything beyond 127.0.0.1 tests.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Error, Result};

/// A response: status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

impl Response {
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.body)?)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one request to `addr` (`host:port`) and reads the whole response (10 s timeout).
pub async fn request(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Response> {
    let url = format!("http://{addr}{path}");
    let fail = |message: String| Error::Http {
        url: url.clone(),
        message,
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail(format!("connect: {e}")))?;
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method != "GET" {
            req.push_str("Content-Type: application/json\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| fail(format!("write: {e}")))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| fail(format!("read: {e}")))?;
        parse(&raw).ok_or_else(|| fail("malformed response".into()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| fail("timed out".into()))?
}

/// GET with an optional OpenBao/Vault token.
pub async fn get(addr: &str, path: &str, token: Option<&str>) -> Result<Response> {
    let headers: Vec<(&str, &str)> = token.map(|t| ("X-Vault-Token", t)).into_iter().collect();
    request("GET", addr, path, &headers, None).await
}

/// POST a JSON body with an optional OpenBao/Vault token.
pub async fn post(
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Result<Response> {
    let headers: Vec<(&str, &str)> = token.map(|t| ("X-Vault-Token", t)).into_iter().collect();
    request("POST", addr, path, &headers, Some(&body.to_string())).await
}

fn parse(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    Some(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response() {
        let r = parse(b"HTTP/1.0 204 No Content\r\nA: b\r\n\r\n{}").unwrap();
        assert_eq!(r.status, 204);
        assert_eq!(r.body, "{}");
        assert!(parse(b"garbage").is_none());
    }
}
