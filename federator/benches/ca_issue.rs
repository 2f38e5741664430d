//! Benchmark: issue `cacerts` for 50 clusters with `federator ca issue`, and with the openssl
//! command sequence Istio's `tools/certs` Makefiles run for the same job, side by side, for
//! the same key algorithm and size. Prints wall time, per-cluster time, and the peak RSS of one
//! issuance by each tool (via /usr/bin/time when it is installed).
//!
//! Run: `cargo bench -p federator --bench ca_issue` (CLUSTERS=N to change the count).
//!
//! The openssl sequence per cluster is Istio's tools/certs one (common.mk +
//! Makefile.selfsigned.mk), from `federator_testkit::tools_certs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use federator_testkit::tools_certs::{self, Key};

const FEDERATOR: &str = env!("CARGO_BIN_EXE_federator");

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Algorithm {
    federator: &'static str,
    openssl: Key,
}

const ALGORITHMS: [Algorithm; 2] = [
    Algorithm {
        federator: "rsa-4096",
        openssl: Key::Rsa4096,
    },
    Algorithm {
        federator: "ecdsa-p256",
        openssl: Key::EcdsaP256,
    },
];

fn federator_cluster(alg: &Algorithm, root: &Path, out: &Path, cluster: &str) {
    run(Command::new(FEDERATOR).args([
        "ca",
        "issue",
        "--root",
        s(root),
        "--cluster",
        cluster,
        "--key-algorithm",
        alg.federator,
        "--ttl",
        "17520h",
        "--out",
        s(out),
    ]));
}

/// Peak RSS in KiB of one command, via GNU time, if installed.
fn peak_rss(cmd: &[&str]) -> Option<u64> {
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .args(cmd)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

fn main() {
    // `cargo bench` passes --bench; any other argument is ignored.
    let n: usize = std::env::var("CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    println!(
        "issuing cacerts for {n} clusters; {} CPU(s)",
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(1)
    );
    println!(
        "{:<12} {:<36} {:>10} {:>14} {:>14}",
        "algorithm", "tool", "total", "per cluster", "peak RSS"
    );
    for alg in &ALGORITHMS {
        let tmp = tempfile::tempdir().unwrap();
        let froot = tmp.path().join("federator-root");
        run(Command::new(FEDERATOR).args([
            "ca",
            "init",
            "--out",
            s(&froot),
            "--key-algorithm",
            alg.federator,
        ]));
        let oroot = tmp.path().join("openssl-root");
        tools_certs::root(alg.openssl, &oroot);

        let fout = tmp.path().join("federator-out");
        let start = Instant::now();
        for i in 0..n {
            federator_cluster(alg, &froot, &fout, &format!("cluster-{i}"));
        }
        let fed = start.elapsed();

        let oout = tmp.path().join("openssl-out");
        let start = Instant::now();
        for i in 0..n {
            tools_certs::cluster(alg.openssl, &oroot, &oout, &format!("cluster-{i}"));
        }
        let ossl = start.elapsed();

        let fed_rss = peak_rss(&[
            FEDERATOR,
            "ca",
            "issue",
            "--root",
            s(&froot),
            "--cluster",
            "rss",
            "--key-algorithm",
            alg.federator,
            "--out",
            s(&fout),
        ]);
        let key_out = tmp.path().join("rss-key.pem");
        let args = alg.openssl.keygen_args(&key_out);
        let mut keygen: Vec<&str> = vec!["openssl"];
        keygen.extend(args.iter().map(String::as_str));
        let ossl_rss = peak_rss(&keygen);
        let row = |tool: &str, d: Duration, rss: Option<u64>| {
            println!(
                "{:<12} {:<36} {:>9.2}s {:>12.1}ms {:>14}",
                alg.federator,
                tool,
                d.as_secs_f64(),
                d.as_secs_f64() * 1000.0 / n as f64,
                rss.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or_else(|| "n/a".into())
            )
        };
        row("federator ca issue", fed, fed_rss);
        row("openssl (tools/certs sequence)", ossl, ossl_rss);
        println!(
            "{:<12} {:<36} {:>10.2}x",
            alg.federator,
            "openssl time / federator time",
            ossl.as_secs_f64() / fed.as_secs_f64()
        );
    }
    println!("(peak RSS: one federator issue vs the largest openssl step, key generation)");
}
