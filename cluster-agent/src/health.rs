//! Liveness and readiness for the kubelet's probes (`--health-addr`).
//!
//! * `GET /healthz`: 200 while the process serves (the controller ending ends the process).
//! * `GET /readyz`: 200 once a reconcile has succeeded, i.e. the agent reached its API server,
//!   read its `ClusterTrust` and did (or found nothing left to do for) every step; 503 before,
//!   with the last error. It stays ready afterwards: a member whose API server is briefly
//!   unreachable keeps its installed CA, and an unready agent would only stop rollouts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::{Error, Result};

/// Shared between the controller (which reports) and the probe server (which answers).
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    reconciled: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Health {
    /// A reconcile succeeded.
    pub fn reconciled(&self) {
        self.inner.reconciled.store(true, Ordering::SeqCst);
        *lock(&self.inner.last_error) = None;
    }

    /// A reconcile failed with `error`.
    pub fn failed(&self, error: &str) {
        *lock(&self.inner.last_error) = Some(error.to_owned());
    }

    /// Whether the agent is ready (a reconcile has succeeded).
    pub fn is_ready(&self) -> bool {
        self.inner.reconciled.load(Ordering::SeqCst)
    }

    /// The answer to `GET path`: status line and body.
    pub fn answer(&self, path: &str) -> (&'static str, String) {
        match path {
            "/healthz" | "/livez" => ("200 OK", "ok\n".to_owned()),
            "/readyz" if self.is_ready() => ("200 OK", "ready\n".to_owned()),
            "/readyz" => (
                "503 Service Unavailable",
                match lock(&self.inner.last_error).as_deref() {
                    Some(e) => {
                        format!("not ready: no reconcile has succeeded yet; last error: {e}\n")
                    }
                    None => "not ready: no reconcile has succeeded yet\n".to_owned(),
                },
            ),
            _ => ("404 Not Found", "not found\n".to_owned()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only an Option is swapped under this lock; a poisoned one is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds `addr` (so a taken port fails the start, with a clear error) and serves the probes
/// in the background; returns the address bound (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    health: Health,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::HealthListen { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    info!(addr = %bound, "serving /healthz and /readyz");
    Ok((
        bound,
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let health = health.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let read = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        conn.read(&mut buf),
                    )
                    .await;
                    let Ok(Ok(n)) = read else {
                        return;
                    };
                    let request = String::from_utf8_lossy(&buf[..n]);
                    let path = request.split_whitespace().nth(1).unwrap_or("/");
                    let (status, body) = health.answer(path);
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    if let Err(e) = conn.write_all(response.as_bytes()).await {
                        warn!(error = %e, "probe response");
                    }
                });
            }
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_the_first_successful_reconcile() {
        let h = Health::default();
        assert_eq!(h.answer("/healthz").0, "200 OK");
        let (status, body) = h.answer("/readyz");
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains("no reconcile has succeeded"), "{body}");
        h.failed("cannot read ClusterTrust federator-system/local: connection refused");
        assert!(h.answer("/readyz").1.contains("connection refused"));
        h.reconciled();
        assert_eq!(h.answer("/readyz"), ("200 OK", "ready\n".to_owned()));
        h.failed("later error");
        assert_eq!(h.answer("/readyz").0, "200 OK", "stays ready");
        assert_eq!(h.answer("/nope").0, "404 Not Found");
    }

    #[tokio::test]
    async fn serves_the_probes_over_http() {
        let h = Health::default();
        let (addr, _task) = serve("127.0.0.1:0".parse().unwrap(), h.clone())
            .await
            .unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        h.reconciled();
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    }
}
