//! The HTTP endpoints both binaries serve for Prometheus and the kubelet, on one address
//! (`--metrics-addr`): `/metrics` (OpenMetrics text from a `prometheus-client` registry),
//! `/healthz` (liveness) and `/readyz` (readiness). What each answers is the binary's
//! ([`Endpoints`]); how it is served (hyper, HTTP/1.1, a header timeout, connections that end
//! with the server) is here, once — also for the hub's SPIFFE bundle endpoint, which serves
//! its own [`Handler`] over TLS ([`serve_tls`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a binary answers on its endpoints.
pub trait Endpoints: Send + Sync + 'static {
    /// The `/metrics` exposition ([`render`] of the binary's registry).
    fn metrics(&self) -> String;
    /// `/healthz`: `Err(reason)` when the process should be restarted.
    fn live(&self) -> Result<(), String>;
    /// `/readyz`: `Err(reason)` while the process should get no traffic (or, for a
    /// Deployment's rollout, does not count as available).
    fn ready(&self) -> Result<(), String>;
}

/// One answer: status, content type, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

fn text(status: StatusCode, body: String) -> Reply {
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body,
    }
}

fn probe(result: Result<(), String>, ok: &str) -> Reply {
    match result {
        Ok(()) => text(StatusCode::OK, format!("{ok}\n")),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", why.lines().next().unwrap_or_default()),
        ),
    }
}

/// The answer to `GET path`. A failing probe answers 503 with its reason on one line.
pub fn answer(endpoints: &dyn Endpoints, path: &str) -> Reply {
    match path {
        "/metrics" => Reply {
            status: StatusCode::OK,
            content_type: OPENMETRICS,
            body: endpoints.metrics(),
        },
        "/healthz" | "/livez" => probe(endpoints.live(), "ok"),
        "/readyz" => probe(endpoints.ready(), "ready"),
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

/// Registers `name{version="…"} 1`, the `*_build_info` gauge that tells which version runs.
pub fn register_build_info(registry: &mut Registry, name: &str, help: &str, version: &str) {
    use prometheus_client::metrics::{family::Family, gauge::Gauge};
    let info = Family::<[(String, String); 1], Gauge>::default();
    info.get_or_create(&[("version".to_owned(), version.to_owned())])
        .set(1);
    registry.register(name, help, info);
}

/// What a server answers to `GET path` (any method is answered the same way).
pub trait Handler: Send + Sync + 'static {
    /// The answer to `path`.
    fn answer(&self, path: &str) -> Reply;
}

/// The probe endpoints as a [`Handler`].
struct Probes(Arc<dyn Endpoints>);

impl Handler for Probes {
    fn answer(&self, path: &str) -> Reply {
        answer(self.0.as_ref(), path)
    }
}

/// The OpenMetrics text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Listens on `addr` (failing at once when it cannot, so a taken port fails the start) and
/// serves `endpoints` until the returned handle is dropped. Returns the address bound (port
/// 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    endpoints: Arc<dyn Endpoints>,
) -> std::io::Result<(SocketAddr, AbortOnDropHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr().unwrap_or(addr);
    info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok((
        bound,
        AbortOnDropHandle::new(tokio::spawn(accept(
            listener,
            None,
            Arc::new(Probes(endpoints)),
        ))),
    ))
}

/// Listens on `addr` (failing at once when it cannot) and serves `handler` over TLS with
/// `tls` (HTTP/1.1) until the returned handle is dropped. Returns the address bound.
pub async fn serve_tls(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<dyn Handler>,
) -> std::io::Result<(SocketAddr, AbortOnDropHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr().unwrap_or(addr);
    Ok((
        bound,
        AbortOnDropHandle::new(tokio::spawn(accept(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
            handler,
        ))),
    ))
}

/// How long a client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Arc<dyn Handler>,
) {
    // Connections live in this set, so they end with the server.
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let handler = handler.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            match tls {
                None => connection(stream, peer, handler).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection(stream, peer, handler).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves one HTTP/1.1 connection.
async fn connection<S>(stream: S, peer: SocketAddr, handler: Arc<dyn Handler>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let reply = handler.answer(req.uri().path());
        let mut response = Response::new(Full::new(Bytes::from(reply.body)));
        *response.status_mut() = reply.status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(reply.content_type),
        );
        async move { Ok::<_, Infallible>(response) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        debug!(%peer, error = %e, "HTTP connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// `GET path` on `addr`: the whole response, headers included (the content type is checked
    /// here; the other crates' tests use `testbed::http`).
    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[derive(Default)]
    struct Fake {
        ready: AtomicBool,
    }

    impl Endpoints for Fake {
        fn metrics(&self) -> String {
            "fake_metric 1\n# EOF\n".into()
        }
        fn live(&self) -> Result<(), String> {
            Ok(())
        }
        fn ready(&self) -> Result<(), String> {
            if self.ready.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("not yet: first line\nsecond line".into())
            }
        }
    }

    #[tokio::test]
    async fn serves_the_endpoints_over_http() {
        let fake = Arc::new(Fake::default());
        let (addr, server) = serve("127.0.0.1:0".parse().unwrap(), fake.clone())
            .await
            .unwrap();
        assert!(
            serve(addr, fake.clone()).await.is_err(),
            "a taken address fails at start"
        );
        let m = get(addr, "/metrics").await.unwrap();
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("application/openmetrics-text"), "{m}");
        assert!(m.ends_with("fake_metric 1\n# EOF\n"), "{m}");
        assert!(
            get(addr, "/healthz")
                .await
                .unwrap()
                .ends_with("\r\n\r\nok\n")
        );
        let r = get(addr, "/readyz").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(
            r.ends_with("\r\n\r\nnot yet: first line\n"),
            "one line: {r}"
        );
        fake.ready.store(true, Ordering::SeqCst);
        let r = get(addr, "/readyz").await.unwrap();
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("ready\n"),
            "{r}"
        );
        assert!(
            get(addr, "/nope")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 404")
        );
        drop(server);
    }
}
