//! The one Service that routes: `kubernetes` (`https://<gateway>:443`, what in-cluster clients
//! use via `KUBERNETES_SERVICE_HOST`/`_PORT`) forwarded to the apiserver on 127.0.0.1; and the
//! way Pods reach the testbed's other clusters: `https://<gateway>:<port>` forwarded to the
//! apiserver listening on `127.0.0.1:<port>` ([`crate::Cluster::server_from`]).
//!
//! The apiservers listen on loopback only, where a Pod cannot reach them, and there is no
//! kube-proxy; a Pod reaches nothing outside its bridge. The node's bridge carries the address
//! that is also the `kubernetes` Service's ClusterIP; these forwarders listen on that address
//! and copy bytes both ways (TLS stays end to end: every apiserver's certificate names every
//! node's bridge address). They run in the testbed's process and stop with the node.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use crate::{Error, Result};

/// Listens on `listen` and forwards every connection to `target`, the apiserver of cluster
/// `cluster`, until the returned task is aborted (which also closes the connections).
pub async fn spawn(
    cluster: &str,
    listen: SocketAddr,
    target: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        Error::Node(format!(
            "cannot listen on {listen} to forward to the apiserver of {cluster}: {e}"
        ))
    })?;
    let cluster = cluster.to_owned();
    Ok(tokio::spawn(async move {
        // The connections belong to this task: aborting it closes them too.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let Ok((mut inbound, _)) = listener.accept().await else {
                // Out of file descriptors, say: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let cluster = cluster.clone();
            connections.spawn(async move {
                match TcpStream::connect(target).await {
                    Ok(mut outbound) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(e) => {
                        tracing::debug!(%cluster, %target, error = %e, "forwarder: apiserver unreachable")
                    }
                }
            });
        }
    }))
}
