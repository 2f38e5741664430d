//! Benchmark: issue `cacerts` for 50 clusters with `federator ca issue`, and with the openssl
//! command sequence Istio's `tools/certs` Makefiles run for the same job, side by side, for
//! the same key algorithm and size. Prints wall time, per-cluster time, and the peak RSS of one
//! issuance by each tool (via /usr/bin/time when it is installed).
//!
//! Run: `cargo bench -p federator --bench ca_issue` (CLUSTERS=N to change the count).
//!
//! The openssl sequence per cluster, as in tools/certs (common.mk + Makefile.selfsigned.mk):
//! write intermediate.conf; genrsa (or genpkey for EC); req -new; x509 -req -CA ... -extfile;
//! cat ca-cert.pem root-cert.pem > cert-chain.pem; cp root-cert.pem. Every step is a process,
//! as make runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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
    /// openssl arguments that write a key to the path appended after them.
    openssl_keygen: &'static [&'static str],
}

const ALGORITHMS: [Algorithm; 2] = [
    Algorithm {
        federator: "rsa-4096",
        openssl_keygen: &["genrsa", "-out"],
    },
    Algorithm {
        federator: "ecdsa-p256",
        openssl_keygen: &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ],
    },
];

fn openssl_keygen(alg: &Algorithm, out: &Path) {
    let mut c = Command::new("openssl");
    c.args(alg.openssl_keygen).arg(out);
    if alg.federator == "rsa-4096" {
        c.arg("4096");
    }
    run(&mut c);
}

fn intermediate_conf(cluster: &str) -> String {
    format!(
        "[ req ]\nencrypt_key = no\nprompt = no\nutf8 = yes\ndefault_md = sha256\ndefault_bits = 4096\nreq_extensions = req_ext\nx509_extensions = req_ext\ndistinguished_name = req_dn\n[ req_ext ]\nsubjectKeyIdentifier = hash\nbasicConstraints = critical, CA:true, pathlen:0\nkeyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign\nsubjectAltName=@san\n[ san ]\nDNS.1 = istiod.istio-system.svc\n[ req_dn ]\nO = Istio\nCN = Intermediate CA\nL = {cluster}\n"
    )
}

fn openssl_root(alg: &Algorithm, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let conf = dir.join("root-ca.conf");
    fs::write(&conf, "[ req ]\nencrypt_key = no\nprompt = no\nutf8 = yes\ndefault_md = sha256\ndefault_bits = 4096\nreq_extensions = req_ext\nx509_extensions = req_ext\ndistinguished_name = req_dn\n[ req_ext ]\nsubjectKeyIdentifier = hash\nbasicConstraints = critical, CA:true\nkeyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign\n[ req_dn ]\nO = Istio\nCN = Root CA\n").unwrap();
    openssl_keygen(alg, &dir.join("root-key.pem"));
    run(Command::new("openssl").args([
        "req",
        "-new",
        "-key",
        s(&dir.join("root-key.pem")),
        "-config",
        s(&conf),
        "-out",
        s(&dir.join("root-cert.csr")),
    ]));
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-days",
        "3650",
        "-signkey",
        s(&dir.join("root-key.pem")),
        "-extensions",
        "req_ext",
        "-extfile",
        s(&conf),
        "-in",
        s(&dir.join("root-cert.csr")),
        "-out",
        s(&dir.join("root-cert.pem")),
    ]));
}

fn openssl_cluster(alg: &Algorithm, root: &Path, out: &Path, cluster: &str) {
    let d = out.join(cluster);
    fs::create_dir_all(&d).unwrap();
    let conf = d.join("intermediate.conf");
    fs::write(&conf, intermediate_conf(cluster)).unwrap();
    openssl_keygen(alg, &d.join("ca-key.pem"));
    run(Command::new("openssl").args([
        "req",
        "-new",
        "-config",
        s(&conf),
        "-key",
        s(&d.join("ca-key.pem")),
        "-out",
        s(&d.join("cluster-ca.csr")),
    ]));
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-days",
        "730",
        "-CA",
        s(&root.join("root-cert.pem")),
        "-CAkey",
        s(&root.join("root-key.pem")),
        "-CAcreateserial",
        "-extensions",
        "req_ext",
        "-extfile",
        s(&conf),
        "-in",
        s(&d.join("cluster-ca.csr")),
        "-out",
        s(&d.join("ca-cert.pem")),
    ]));
    run(Command::new("sh").arg("-c").arg(format!(
        "cat {} {} > {}",
        s(&d.join("ca-cert.pem")),
        s(&root.join("root-cert.pem")),
        s(&d.join("cert-chain.pem"))
    )));
    run(Command::new("cp").arg(root.join("root-cert.pem")).arg(&d));
}

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
        openssl_root(alg, &oroot);

        let fout = tmp.path().join("federator-out");
        let start = Instant::now();
        for i in 0..n {
            federator_cluster(alg, &froot, &fout, &format!("cluster-{i}"));
        }
        let fed = start.elapsed();

        let oout = tmp.path().join("openssl-out");
        let start = Instant::now();
        for i in 0..n {
            openssl_cluster(alg, &oroot, &oout, &format!("cluster-{i}"));
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
        let mut keygen: Vec<&str> = vec!["openssl"];
        keygen.extend(alg.openssl_keygen);
        let key_out = tmp.path().join("rss-key.pem");
        keygen.push(s(&key_out));
        if alg.federator == "rsa-4096" {
            keygen.push("4096");
        }
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
