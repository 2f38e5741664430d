//! # federator-testkit
//!
//! What the workspace's tests share, so that each fixture is written once (after rustls'
//! `rustls-test`). Never a dependency of a binary: it panics instead of returning errors.
//!
//! | module | what it holds |
//! |---|---|
//! | [`pki`] | roots, cluster CAs issued under policy, bundles, `cacerts` |
//! | [`exchange`] | the exchange's objects as the hub writes them: bundle entries, specs, the signed-CA answer |
//! | [`wait`] | polling until a condition holds, with a message naming what was awaited |
//! | [`openssl`] | `openssl verify -x509_strict`, an oracle independent of our own chain checks |
//! | [`tools_certs`] | the openssl sequence of Istio's `tools/certs` Makefiles, the benchmarks' baseline |
//!
//! And [`agent_args`]: the `cluster-agent` command line every test runs it with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod exchange;
pub mod openssl;
pub mod pki;
pub mod tools_certs;
pub mod wait;

pub use wait::{wait_for, wait_until};

/// The `cluster-agent` command line for a cluster, with its own kubeconfig.
pub fn agent_args(kubeconfig: &std::path::Path, cluster: &str, log_level: &str) -> Vec<String> {
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    ["--kubeconfig", &kubeconfig, "--cluster-name", cluster]
        .into_iter()
        .chain(["--log-level", log_level])
        .map(str::to_owned)
        .collect()
}
