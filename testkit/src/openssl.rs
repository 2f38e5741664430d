//! `openssl verify -x509_strict`: an oracle independent of federator's own chain checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Verifies `cert` against the roots in `roots`, through the certificates in `untrusted`.
/// The error holds openssl's output.
pub fn verify(cert: &Path, roots: &Path, untrusted: Option<&Path>) -> Result<(), String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-CAfile"]).arg(roots);
    if let Some(u) = untrusted {
        cmd.arg("-untrusted").arg(u);
    }
    let out = cmd.arg(cert).output().expect("openssl must be installed");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Verifies `ca-cert.pem` of `cacerts` files against `root-cert.pem` through `cert-chain.pem`.
pub fn verify_cacerts(cacerts: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"] {
        std::fs::write(dir.path().join(f), &cacerts[f]).unwrap();
    }
    verify(
        &dir.path().join("ca-cert.pem"),
        &dir.path().join("root-cert.pem"),
        Some(&dir.path().join("cert-chain.pem")),
    )
}

/// Verifies the PEM certificate `leaf` against the PEM `roots` through the PEM `chain`.
pub fn verify_pem(leaf: &str, roots: &str, chain: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f);
    for (f, text) in [
        ("leaf.pem", leaf),
        ("roots.pem", roots),
        ("chain.pem", chain),
    ] {
        std::fs::write(path(f), text).unwrap();
    }
    verify(
        &path("leaf.pem"),
        &path("roots.pem"),
        Some(&path("chain.pem")),
    )
}
