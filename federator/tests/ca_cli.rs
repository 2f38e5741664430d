//! `federator ca init|issue|inspect` end to end, with the openssl CLI as an independent oracle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn federator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_federator"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = federator(args);
    assert!(
        out.status.success(),
        "federator {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs federator expecting failure; returns (exit code, stderr).
fn fails(args: &[&str]) -> (i32, String) {
    let out = federator(args);
    assert!(
        !out.status.success(),
        "federator {args:?} unexpectedly succeeded"
    );
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Mints a workload leaf with openssl from a cluster's ca-cert.pem / ca-key.pem, as Istio's
/// tools/certs workload targets do.
fn mint_leaf(cluster_dir: &Path, out: &Path, spiffe_id: &str) -> PathBuf {
    let conf = out.join("leaf.conf");
    fs::write(
        &conf,
        format!(
            "[req]\nprompt=no\ndistinguished_name=dn\n[dn]\nCN=workload\n[ext]\nbasicConstraints=critical,CA:false\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:{spiffe_id}\n"
        ),
    )
    .unwrap();
    let key = out.join("leaf-key.pem");
    let csr = out.join("leaf.csr");
    let leaf = out.join("leaf.pem");
    let o = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        s(&key),
        "-config",
        s(&conf),
        "-out",
        s(&csr),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = openssl(&[
        "x509",
        "-req",
        "-in",
        s(&csr),
        "-CA",
        s(&cluster_dir.join("ca-cert.pem")),
        "-CAkey",
        s(&cluster_dir.join("ca-key.pem")),
        "-set_serial",
        "4242",
        "-days",
        "1",
        "-extfile",
        s(&conf),
        "-extensions",
        "ext",
        "-out",
        s(&leaf),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    leaf
}

/// `openssl verify -x509_strict` of `cert` against `roots`, with `untrusted` intermediates.
fn verifies(cert: &Path, roots: &Path, untrusted: Option<&Path>) -> bool {
    let mut args = vec!["verify", "-x509_strict", "-CAfile", s(roots)];
    if let Some(u) = untrusted {
        args.extend(["-untrusted", s(u)]);
    }
    args.push(s(cert));
    openssl(&args).status.success()
}

#[test]
fn three_clusters_trust_each_other_and_not_a_stranger() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = tmp.path().join("clusters");
    ok(&["ca", "init", "--out", s(&root)]);
    for c in ["east", "west", "north"] {
        ok(&[
            "ca",
            "issue",
            "--root",
            s(&root),
            "--cluster",
            c,
            "--out",
            s(&out),
        ]);
    }
    let stranger_root = tmp.path().join("stranger-root");
    ok(&["ca", "init", "--out", s(&stranger_root)]);
    ok(&[
        "ca",
        "issue",
        "--root",
        s(&stranger_root),
        "--cluster",
        "stranger",
        "--out",
        s(&out),
    ]);

    let dir = |c: &str| out.join(c);
    for c in ["east", "west", "north"] {
        assert!(
            verifies(
                &dir(c).join("ca-cert.pem"),
                &dir(c).join("root-cert.pem"),
                None
            ),
            "{c}'s CA chains to its root"
        );
        ok(&["ca", "inspect", s(&dir(c))]);
    }
    for from in ["east", "west", "north"] {
        let work = tmp.path().join(format!("leaf-{from}"));
        fs::create_dir_all(&work).unwrap();
        let leaf = mint_leaf(
            &dir(from),
            &work,
            "spiffe://cluster.local/ns/default/sa/web",
        );
        for to in ["east", "west", "north"] {
            assert!(
                verifies(
                    &leaf,
                    &dir(to).join("root-cert.pem"),
                    Some(&dir(from).join("cert-chain.pem"))
                ),
                "a leaf of {from} verifies against {to}'s root-cert.pem"
            );
        }
        assert!(
            !verifies(
                &leaf,
                &dir("stranger").join("root-cert.pem"),
                Some(&dir(from).join("cert-chain.pem"))
            ),
            "a leaf of {from} must not verify against a stranger's root"
        );
    }
    let work = tmp.path().join("leaf-stranger");
    fs::create_dir_all(&work).unwrap();
    let leaf = mint_leaf(
        &dir("stranger"),
        &work,
        "spiffe://cluster.local/ns/default/sa/web",
    );
    assert!(!verifies(
        &leaf,
        &dir("east").join("root-cert.pem"),
        Some(&dir("stranger").join("cert-chain.pem"))
    ));
}

#[test]
fn files_have_the_right_modes_and_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    ok(&[
        "ca",
        "init",
        "--out",
        s(&root),
        "--key-algorithm",
        "ecdsa-p384",
        "--org",
        "Example",
    ]);
    let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(root.join("root-key.pem")), 0o600);
    assert!(
        fs::read_to_string(root.join("root-key.pem"))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let out = tmp.path().join("out");
    ok(&[
        "ca",
        "issue",
        "--root",
        s(&root),
        "--cluster",
        "c1",
        "--trust-domain",
        "c1.example",
        "--out",
        s(&out),
    ]);
    let c1 = out.join("c1");
    assert_eq!(mode(c1.join("ca-key.pem")), 0o600);
    let mut names: Vec<String> = fs::read_dir(&c1)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem"
        ]
    );
    let chain = fs::read_to_string(c1.join("cert-chain.pem")).unwrap();
    let ca = fs::read_to_string(c1.join("ca-cert.pem")).unwrap();
    let rootpem = fs::read_to_string(c1.join("root-cert.pem")).unwrap();
    assert_eq!(
        chain,
        format!("{ca}{rootpem}"),
        "cert-chain.pem = cluster CA then root"
    );
    let json = ok(&["ca", "inspect", s(&c1), "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["trust_domain"], "c1.example");
    assert_eq!(v["ca"]["subject"], "O=Example, L=c1, CN=c1 intermediate CA");
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    assert_eq!(
        v["workload_check"],
        "spiffe://c1.example/ns/federator/sa/inspect"
    );
    assert!(
        ok(&["ca", "inspect", s(&c1)]).contains(
            "Workload check: a certificate for spiffe://c1.example/ns/federator/sa/inspect"
        )
    );
}

#[test]
fn signs_an_external_csr_and_reads_a_tools_certs_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    // A root made the way tools/certs makes one: RSA 4096 in PKCS#1 (genrsa -traditional).
    let key = root.join("root-key.pem");
    assert!(
        openssl(&["genrsa", "-traditional", "-out", s(&key), "2048"])
            .status
            .success()
    );
    assert!(
        fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    let o = openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        s(&key),
        "-subj",
        "/O=Istio/CN=Root CA",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:true",
        "-addext",
        "keyUsage=critical,digitalSignature,nonRepudiation,keyEncipherment,keyCertSign",
        "-out",
        s(&root.join("root-cert.pem")),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // An external CSR (the key stays with its owner).
    let csr = tmp.path().join("c.csr");
    let ckey = tmp.path().join("c.key");
    assert!(
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            s(&ckey),
            "-subj",
            "/CN=ext",
            "-out",
            s(&csr)
        ])
        .status
        .success()
    );
    let out = tmp.path().join("out");
    let msg = ok(&[
        "ca",
        "issue",
        "--root",
        s(&root),
        "--cluster",
        "ext",
        "--csr",
        s(&csr),
        "--out",
        s(&out),
    ]);
    assert!(msg.contains("no key written"));
    let ext = out.join("ext");
    assert!(!ext.join("ca-key.pem").exists());
    assert!(verifies(
        &ext.join("ca-cert.pem"),
        &ext.join("root-cert.pem"),
        None
    ));
    // Adding the owner's key completes the material.
    fs::copy(&ckey, ext.join("ca-key.pem")).unwrap();
    ok(&["ca", "inspect", s(&ext)]);
    // A CSR asking for more than the policy grants is refused and writes nothing.
    let greedy = tmp.path().join("greedy.csr");
    assert!(
        openssl(&[
            "req",
            "-new",
            "-key",
            s(&ckey),
            "-subj",
            "/CN=g",
            "-addext",
            "basicConstraints=critical,CA:true,pathlen:3",
            "-out",
            s(&greedy)
        ])
        .status
        .success()
    );
    let (code, err) = fails(&[
        "ca",
        "issue",
        "--root",
        s(&root),
        "--cluster",
        "greedy",
        "--csr",
        s(&greedy),
        "--out",
        s(&out),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("asks for path length 3"), "{err}");
    assert!(!out.join("greedy").exists());
}

#[test]
fn bad_input_is_a_one_line_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    ok(&["ca", "init", "--out", s(&root)]);
    let out = tmp.path().join("out");
    let before = fs::read(root.join("root-cert.pem")).unwrap();

    // init over an existing root refuses.
    let (code, err) = fails(&["ca", "init", "--out", s(&root)]);
    assert_eq!(code, 2);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(fs::read(root.join("root-cert.pem")).unwrap(), before);

    // Missing root.
    let (code, err) = fails(&[
        "ca",
        "issue",
        "--root",
        s(&tmp.path().join("nope")),
        "--cluster",
        "a",
        "--out",
        s(&out),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("root certificate not found; create a root with `federator ca init"),
        "{err}"
    );

    // Truncated root certificate, garbage key, wrong key.
    let bad = tmp.path().join("bad");
    fs::create_dir_all(&bad).unwrap();
    let cert = String::from_utf8(before.clone()).unwrap();
    fs::write(bad.join("root-cert.pem"), &cert[..cert.len() / 2]).unwrap();
    fs::copy(root.join("root-key.pem"), bad.join("root-key.pem")).unwrap();
    let (code, err) = fails(&[
        "ca",
        "issue",
        "--root",
        s(&bad),
        "--cluster",
        "a",
        "--out",
        s(&out),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("truncated"), "{err}");
    fs::write(bad.join("root-cert.pem"), &cert).unwrap();
    fs::write(bad.join("root-key.pem"), "garbage").unwrap();
    let (_, err) = fails(&[
        "ca",
        "issue",
        "--root",
        s(&bad),
        "--cluster",
        "a",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("CA key: no PEM block found"), "{err}");
    let other = tmp.path().join("other");
    ok(&["ca", "init", "--out", s(&other)]);
    fs::copy(other.join("root-key.pem"), bad.join("root-key.pem")).unwrap();
    let (_, err) = fails(&[
        "ca",
        "issue",
        "--root",
        s(&bad),
        "--cluster",
        "a",
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("the private key does not match the certificate"),
        "{err}"
    );

    // Usage errors.
    let (code, _) = fails(&[
        "ca",
        "issue",
        "--root",
        s(&root),
        "--cluster",
        "a",
        "--out",
        s(&out),
        "--ttl",
        "ten days",
    ]);
    assert_eq!(code, 2);
    let (code, _) = fails(&[
        "ca",
        "init",
        "--out",
        s(&tmp.path().join("x")),
        "--key-algorithm",
        "rsa-1024",
    ]);
    assert_eq!(code, 2);

    let (_, err) = fails(&[
        "ca",
        "issue",
        "--root",
        s(&bad),
        "--cluster",
        "a",
        "--out",
        s(&out),
    ]);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!out.exists(), "nothing was written");

    // inspect: problems exit 1, missing directory exits 2.
    ok(&[
        "ca",
        "issue",
        "--root",
        s(&root),
        "--cluster",
        "a",
        "--out",
        s(&out),
    ]);
    fs::copy(other.join("root-cert.pem"), out.join("a/root-cert.pem")).unwrap();
    let o = federator(&["ca", "inspect", s(&out.join("a"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("ca-cert.pem: does not verify against root-cert.pem")
    );
    let (code, _) = fails(&["ca", "inspect", s(&tmp.path().join("missing"))]);
    assert_eq!(code, 2);
}

#[test]
fn rsa_and_p384_material_passes_istiods_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    ok(&[
        "ca",
        "init",
        "--out",
        s(&root),
        "--key-algorithm",
        "rsa-2048",
    ]);
    let out = tmp.path().join("out");
    for (c, alg) in [("r", "rsa-3072"), ("p", "ecdsa-p384")] {
        ok(&[
            "ca",
            "issue",
            "--root",
            s(&root),
            "--cluster",
            c,
            "--key-algorithm",
            alg,
            "--out",
            s(&out),
        ]);
        let report = ok(&["ca", "inspect", s(&out.join(c))]);
        assert!(
            report.contains(if alg == "rsa-3072" {
                "RSA 3072"
            } else {
                "ECDSA P-384"
            }),
            "{report}"
        );
        assert!(verifies(
            &out.join(c).join("ca-cert.pem"),
            &out.join(c).join("root-cert.pem"),
            None
        ));
    }
}
