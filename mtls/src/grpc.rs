//! A minimal unary gRPC client over HTTP/2 (`h2`), enough for istiod's CA service.
//!
//! One call is one HTTP/2 stream: a `POST` of `<service>/<method>` with
//! `content-type: application/grpc` and `te: trailers`, a body of one length-prefixed message
//! (1 byte "compressed" flag, 4 bytes big-endian length, the protobuf bytes), and an answer of
//! one such message followed by trailers carrying `grpc-status` and `grpc-message`. A server
//! that fails before answering sends only headers ("Trailers-Only"), with the status in them.
//! Compression is never used (no `grpc-encoding` is offered, so the server sends none).
//!
//! See <https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Error, Result};

/// The largest answer accepted (a certificate chain is a few KiB).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// The name of a gRPC status code, for error messages.
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "?",
    }
}

/// Frames one message: compressed flag 0, big-endian length, bytes.
pub fn frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.put_slice(&body);
    out.freeze()
}

/// Extracts the single message of a unary answer.
pub fn unframe(data: &[u8]) -> Result<&[u8]> {
    let [flag, a, b, c, d, rest @ ..] = data else {
        return Err(Error::Protocol(format!(
            "the answer has {} byte(s), fewer than a message header",
            data.len()
        )));
    };
    if *flag != 0 {
        return Err(Error::Protocol(
            "the answer is compressed, which was not offered".into(),
        ));
    }
    let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    if rest.len() != len {
        return Err(Error::Protocol(format!(
            "the answer announces {len} byte(s) but carries {}",
            rest.len()
        )));
    }
    Ok(rest)
}

/// Decodes a `grpc-message` value (percent-encoded UTF-8).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16);
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gRPC status in `headers`, if there is one: `Ok(())` for OK, the error otherwise.
fn status_in(headers: &HeaderMap) -> Option<Result<()>> {
    let code = headers.get("grpc-status")?;
    let code: u32 = match code.to_str().ok().and_then(|c| c.trim().parse().ok()) {
        Some(c) => c,
        None => {
            return Some(Err(Error::Protocol(format!(
                "malformed grpc-status {code:?}"
            ))));
        }
    };
    if code == 0 {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some(Err(Error::Grpc { code, message }))
}

/// Makes one unary call on a fresh HTTP/2 connection over `io` (already TLS with ALPN `h2`,
/// or plaintext for h2c) and closes it.
///
/// `authority` is the `:authority` (host name) and `path` the method path; `metadata` are
/// extra request headers (`authorization`, `clusterid`, ...), lowercase names.
pub async fn unary<T, Req, Resp>(
    io: T,
    authority: &str,
    path: &str,
    metadata: &[(&str, &str)],
    request: &Req,
) -> Result<Resp>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Req: Message,
    Resp: Message + Default,
{
    let (client, connection) = h2::client::handshake(io).await?;
    // The connection future drives the socket; it ends when the client side is dropped.
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "gRPC connection ended");
        }
    });
    let result = call(client, authority, path, metadata, request).await;
    driver.abort();
    result
}

async fn call<Req, Resp>(
    client: h2::client::SendRequest<Bytes>,
    authority: &str,
    path: &str,
    metadata: &[(&str, &str)],
    request: &Req,
) -> Result<Resp>
where
    Req: Message,
    Resp: Message + Default,
{
    let mut client = client.ready().await?;
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("https://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "federator-mtls");
    for (name, value) in metadata {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(())
        .map_err(|e| Error::Protocol(format!("cannot build the request: {e}")))?;
    let (response, mut body_tx) = client.send_request(req, false)?;
    // h2 queues the data and sends it as the peer's flow-control window allows.
    body_tx.send_data(frame(request), true)?;

    let response = response.await?;
    let (head, mut body) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(Error::Protocol(format!(
            "HTTP status {} (is this a gRPC endpoint?)",
            head.status
        )));
    }
    // Trailers-Only: the status comes in the headers and there is no message.
    if let Some(status) = status_in(&head.headers) {
        status?;
        return Err(Error::Protocol(
            "status OK without a message in a unary call".into(),
        ));
    }
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > MAX_MESSAGE {
            return Err(Error::Protocol(format!(
                "the answer exceeds {MAX_MESSAGE} bytes"
            )));
        }
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    match status_in(&trailers) {
        Some(status) => status?,
        None => return Err(Error::Protocol("the answer has no grpc-status".into())),
    }
    Ok(Resp::decode(unframe(&data)?)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::proto::IstioCertificateResponse;

    #[test]
    fn frames_round_trip() {
        let msg = IstioCertificateResponse {
            cert_chain: vec!["a".into(), "bc".into()],
        };
        let framed = frame(&msg);
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 7]);
        let back = IstioCertificateResponse::decode(unframe(&framed).unwrap()).unwrap();
        assert_eq!(back, msg);
        assert!(unframe(&framed[..6]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err());
        assert!(unframe(&[0, 0]).is_err());
    }

    #[test]
    fn grpc_status_from_headers() {
        let mut h = HeaderMap::new();
        assert!(status_in(&h).is_none());
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(matches!(status_in(&h), Some(Ok(()))));
        h.insert("grpc-status", "16".parse().unwrap());
        h.insert(
            "grpc-message",
            "request%20authenticate%20failure".parse().unwrap(),
        );
        let err = status_in(&h).unwrap().unwrap_err().to_string();
        assert_eq!(
            err,
            "gRPC status 16 (UNAUTHENTICATED): request authenticate failure"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%25c"), "a b%c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
    }
}
