//! The one Service that routes: `kubernetes` (`https://<gateway>:443`, what in-cluster clients
//! use via `KUBERNETES_SERVICE_HOST`/`_PORT`) forwarded to the apiserver on 127.0.0.1.
//!
//! The apiserver listens on loopback only, where a Pod cannot reach it, and there is no
//! kube-proxy. The node's bridge carries the address that is also the `kubernetes` Service's
//! ClusterIP; this forwarder listens on that address, port 443, and copies bytes both ways
//! (TLS stays end to end: the apiserver's certificate names that address). It runs in the
//! testbed's process and stops with it.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use crate::{Error, Result};

/// Listens on `listen` and forwards every connection to `target`, until the returned task is
/// aborted.
pub async fn spawn(listen: SocketAddr, target: SocketAddr) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        Error::Node(format!(
            "cannot listen on {listen} for the kubernetes Service: {e}"
        ))
    })?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                // Out of file descriptors, say: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                match TcpStream::connect(target).await {
                    Ok(mut outbound) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(e) => {
                        tracing::debug!(%target, error = %e, "kubernetes Service: apiserver unreachable")
                    }
                }
            });
        }
    }))
}
