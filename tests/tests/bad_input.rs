//! The bad-input catalogue (docs/security.md): every case is refused with a message that says
//! what is wrong and what to do, and changes nothing — the resourceVersion of every object in
//! the hub and in every member (Events and Leases aside) is the same before and after, while
//! `serve` runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use federator_api::hub::{MemberCluster, MemberClusterSpec};
use federator_api::names;
use federator_e2e::snapshot::{Snapshotter, changes};
use federator_e2e::*;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One refused input: what is run, and a piece of the message the user must get.
struct Case {
    what: &'static str,
    args: Vec<String>,
    expect: &'static str,
}

fn case(what: &'static str, args: &[&str], expect: &'static str) -> Case {
    Case {
        what,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        expect,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A kubeconfig for `server` with a bearer token (no CA check: the server is not reached or
/// refuses the token anyway).
fn token_kubeconfig(server: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
    )
}

/// An HTTP server that answers 500 to everything, and one that accepts and never answers.
async fn broken_servers() -> (String, String) {
    let failing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let urls = (
        format!("http://{}", failing.local_addr().unwrap()),
        format!("https://{}", hanging.local_addr().unwrap()),
    );
    tokio::spawn(async move {
        while let Ok((mut s, _)) = failing.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "internal error";
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hanging.accept().await {
            held.push(s);
        }
    });
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_message_and_changes_nothing() {
    let members = [
        ("c1", "cluster.local"),
        ("c2", "c2.example"),
        ("c3", "c3.example"),
    ];
    // Three clusters, two of them members; c3 is the one the join cases point at.
    let mut fed = Federation::start(&members, &[]).await;
    for name in ["c1", "c2"] {
        fed.join(name);
        fed.install_mesh_config(name).await;
    }
    fed.start_serve(&[]);
    for name in ["c1", "c2"] {
        fed.start_agent(name);
    }
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dir = fed.dir.clone();
    let c3 = fed.members["c3"].cluster.clone();
    let c3_kubeconfig = c3.kubeconfig_path().to_str().unwrap().to_owned();
    let c3_text = std::fs::read_to_string(&c3_kubeconfig).unwrap();
    let truncated = write(&dir, "truncated.kubeconfig", &c3_text[..c3_text.len() / 2]);
    let garbage = write(&dir, "garbage.kubeconfig", "this is not: [a kubeconfig");
    let empty = write(&dir, "empty.kubeconfig", "");
    let closed = write(
        &dir,
        "closed.kubeconfig",
        &token_kubeconfig("https://127.0.0.1:1", "t"),
    );
    let expired = write(
        &dir,
        "expired.kubeconfig",
        &token_kubeconfig(c3.server(), "an-expired-or-revoked-token"),
    );
    let (failing_url, hanging_url) = broken_servers().await;
    let failing = write(&dir, "500.kubeconfig", &token_kubeconfig(&failing_url, "t"));
    let hanging = write(
        &dir,
        "hang.kubeconfig",
        &token_kubeconfig(&hanging_url, "t"),
    );
    let not_pem = write(
        &dir,
        "not.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    );

    // Valid CAs that are not this hub's root.
    let make_root = |name: &str| {
        let out = dir.join(name);
        fed.federator_ok(&["ca", "init", "--out", out.to_str().unwrap()]);
        (
            out.join("root-cert.pem").to_str().unwrap().to_owned(),
            out.join("root-key.pem").to_str().unwrap().to_owned(),
        )
    };
    let (other_root, third_root) = (make_root("other-root"), make_root("third-root"));
    let ca_out = dir.join("ca-out").to_string_lossy().into_owned();
    let join = |name: &str, kubeconfig: &str, extra: &[&str]| {
        let mut a = vec![
            "join",
            "cluster",
            name,
            "--kubeconfig",
            kubeconfig,
            "--agent-mode",
            "external",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let cases = vec![
        // join: the kubeconfig
        Case {
            what: "join: kubeconfig file missing",
            args: join("c3", "/nonexistent/kubeconfig", &[]),
            expect: "/nonexistent/kubeconfig",
        },
        Case {
            what: "join: truncated kubeconfig",
            args: join("c3", &truncated, &[]),
            expect: "kubeconfig",
        },
        Case {
            what: "join: kubeconfig that is not YAML",
            args: join("c3", &garbage, &[]),
            expect: "kubeconfig",
        },
        Case {
            what: "join: empty kubeconfig",
            args: join("c3", &empty, &[]),
            expect: "kubeconfig",
        },
        Case {
            what: "join: context not in the kubeconfig",
            args: join("c3", &c3_kubeconfig, &["--context", "nope"]),
            expect: "nope",
        },
        Case {
            what: "join: API server not listening",
            args: join("c3", &closed, &[]),
            expect: "127.0.0.1:1",
        },
        Case {
            what: "join: expired or revoked credential",
            args: join("c3", &expired, &[]),
            expect: "rejected the kubeconfig's credential (401",
        },
        Case {
            what: "join: API server answers 500",
            args: join("c3", &failing, &[]),
            expect: "failed (500",
        },
        Case {
            what: "join: API server accepts and never answers",
            args: join("c3", &hanging, &[]),
            expect: "did not answer",
        },
        Case {
            what: "join: another member's kubeconfig under a new name",
            args: join(
                "c9",
                fed.members["c2"]
                    .cluster
                    .kubeconfig_path()
                    .to_str()
                    .unwrap(),
                &["--trust-domain", "c2.example"],
            ),
            expect: "c2",
        },
        // join: the names
        Case {
            what: "join: cluster name not a DNS label",
            args: join("Bad_Name", &c3_kubeconfig, &[]),
            expect: "invalid cluster name",
        },
        Case {
            what: "join: trust domain with a scheme",
            args: join(
                "c3",
                &c3_kubeconfig,
                &["--trust-domain", "spiffe://c3.example"],
            ),
            expect: "trust domain",
        },
        Case {
            what: "join: trust domain with upper case",
            args: join("c3", &c3_kubeconfig, &["--trust-domain", "C3.Example"]),
            expect: "trust domain",
        },
        Case {
            what: "join: --server not https",
            args: join("c3", &c3_kubeconfig, &["--server", "http://10.0.0.1:6443"]),
            expect: "https",
        },
        Case {
            what: "join: --server not a URL",
            args: join("c3", &c3_kubeconfig, &["--server", "::"]),
            expect: "--server",
        },
        case(
            "join: unknown agent mode",
            &[
                "join",
                "cluster",
                "c3",
                "--kubeconfig",
                &c3_kubeconfig,
                "--agent-mode",
                "sidecar",
            ],
            "sidecar",
        ),
        // leave, renew
        case(
            "leave: not a member",
            &["leave", "cluster", "nope"],
            "not a member",
        ),
        case(
            "renew: not a member",
            &["renew", "cluster", "nope"],
            "not a member",
        ),
        case(
            "renew: bad timeout",
            &["renew", "cluster", "c1", "--now", "--timeout", "soon"],
            "soon",
        ),
        // rotate-root (local backend)
        case(
            "rotate-root: local backend without --trust-domain",
            &["rotate-root"],
            "--trust-domain",
        ),
        case(
            "rotate-root: trust domain without members",
            &["rotate-root", "--trust-domain", "nope.example"],
            "trust domains: c2.example, cluster.local",
        ),
        case(
            "rotate-root: bad drain",
            &[
                "rotate-root",
                "--trust-domain",
                "cluster.local",
                "--drain",
                "a while",
            ],
            "a while",
        ),
        case(
            "rotate-root: abort when not rotating",
            &["rotate-root", "--abort", "--trust-domain", "cluster.local"],
            "not rotating",
        ),
        case(
            "rotate-root: --cert on the local backend",
            &["rotate-root", "--cert", &not_pem, "--key", &not_pem],
            "rotate an imported CA, but this hub's root backend is local",
        ),
        case(
            "rotate-root: --vault-issuer on the local backend",
            &["rotate-root", "--vault-issuer", "x"],
            "rotate a Vault issuer, but this hub's root backend is local",
        ),
        // init on a running hub
        case(
            "init: import without --key",
            &["init", "--root", "import", "--cert", &not_pem],
            "--key",
        ),
        case(
            "init: import of files that are not PEM",
            &[
                "init", "--root", "import", "--cert", &not_pem, "--key", &not_pem,
            ],
            "not.pem",
        ),
        case(
            "init: vault without an address",
            &["init", "--root", "vault"],
            "--vault-addr",
        ),
        case(
            "init: bad cluster CA lifetime",
            &["init", "--cluster-ca-ttl", "forever"],
            "forever",
        ),
        case(
            "init: renewal point over 100%",
            &["init", "--renew-at-percent", "150"],
            "between 1 and 99",
        ),
        case(
            "init: unknown key algorithm",
            &["init", "--key-algorithm", "dsa"],
            "dsa",
        ),
        case(
            "init: another backend on an initialised hub",
            &[
                "init",
                "--root",
                "import",
                "--cert",
                &other_root.0,
                "--key",
                &other_root.1,
            ],
            "refusing to change it to import",
        ),
        case(
            "init: a key that is not the certificate's",
            &[
                "init",
                "--root",
                "import",
                "--cert",
                &other_root.0,
                "--key",
                &third_root.1,
            ],
            "does not match",
        ),
        // status, bundle, serve, doctor, ca, global flags
        case(
            "status: unknown output format",
            &["status", "-o", "xml"],
            "xml",
        ),
        case(
            "status: bad --stale-after",
            &["status", "--stale-after", "soon"],
            "soon",
        ),
        case(
            "bundle: trust domain not in the federation",
            &["bundle", "--trust-domain", "nope.example"],
            "nope.example",
        ),
        case(
            "serve: reader token renewal not below its lifetime",
            &[
                "serve",
                "--reader-token-ttl",
                "1h",
                "--reader-token-renew-after",
                "2h",
            ],
            "--reader-token-renew-after",
        ),
        case(
            "serve: bad metrics address",
            &["serve", "--metrics-addr", "localhost"],
            "localhost",
        ),
        case(
            "doctor: kubeconfig missing",
            &["doctor", "--kubeconfig", "/nonexistent/kubeconfig"],
            "/nonexistent/kubeconfig",
        ),
        case(
            "hub kubeconfig missing",
            &["--hub-kubeconfig", "/nonexistent/hub", "status"],
            "/nonexistent/hub",
        ),
        case(
            "hub context not in the kubeconfig",
            &["--hub-context", "nope", "status"],
            "nope",
        ),
        case(
            "unknown log format",
            &["--log-format", "xml", "status"],
            "xml",
        ),
        case(
            "ca issue: root files missing",
            &[
                "ca",
                "issue",
                "--root",
                "/nonexistent",
                "--cluster",
                "x",
                "--out",
                &ca_out,
            ],
            "/nonexistent",
        ),
    ];

    let clusters = {
        let mut v = vec![("hub".to_owned(), fed.hub.client().await.unwrap())];
        for (name, _) in &members {
            v.push((
                (*name).to_owned(),
                fed.members[*name].cluster.client().await.unwrap(),
            ));
        }
        v
    };
    let snap = Snapshotter::new(clusters).await;
    let mut before = snap.take().await;
    assert!(before.len() > 100, "{} objects", before.len());
    let mut problems = Vec::new();
    let mut table = Vec::new();
    for c in &cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let out = fed.federator(&args);
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        // The error itself (a client library's own log lines may come before it).
        let first = err
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("")
            .to_owned();
        table.push(format!(
            "| {} | {} | {} | {:.1}s |",
            c.what,
            out.status.code().map_or("signal".into(), |c| c.to_string()),
            first.replace('|', "\\|"),
            took.as_secs_f64()
        ));
        if out.status.success() {
            problems.push(format!(
                "{}: accepted: {}",
                c.what,
                String::from_utf8_lossy(&out.stdout)
            ));
        } else if !err.to_lowercase().contains(&c.expect.to_lowercase()) {
            problems.push(format!(
                "{}: the message lacks {:?}: {err}",
                c.what, c.expect
            ));
        }
        if took > Duration::from_secs(45) {
            problems.push(format!("{}: took {took:?}", c.what));
        }
        let after = snap.take().await;
        let changed = changes(&before, &after);
        if !changed.is_empty() {
            problems.push(format!("{}: changed {changed:?}", c.what));
        }
        before = after;
    }

    // Hand-written API objects the API server's schema refuses.
    let hub = fed.hub.client().await.unwrap();
    let mcs: Api<MemberCluster> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let bad_td = MemberCluster::new(
        "evil",
        MemberClusterSpec {
            trust_domain: "Not Valid".into(),
            credential_secret: "federator-member-evil".into(),
            ..MemberClusterSpec::default()
        },
    );
    match mcs.create(&PostParams::default(), &bad_td).await {
        Ok(_) => problems.push("MemberCluster with an invalid trust domain: accepted".into()),
        Err(e) => table.push(format!(
            "| MemberCluster with trustDomain \"Not Valid\" (kubectl apply) | API 422 | {} | |",
            e.to_string().replace('|', "\\|")
        )),
    }
    let feds: Api<federator_api::hub::Federation> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let patch = serde_json::json!({ "spec": { "renewAtPercent": 150 } });
    match feds
        .patch("default", &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => problems.push("Federation with renewAtPercent 150: accepted".into()),
        Err(e) => table.push(format!(
            "| Federation edited to renewAtPercent 150 | API 422 | {} | |",
            e.to_string().replace('|', "\\|")
        )),
    }
    let after = snap.take().await;
    let changed = changes(&before, &after);
    if !changed.is_empty() {
        problems.push(format!("API objects: changed {changed:?}"));
    }

    println!("| case | exit | message (first line) | time |\n|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    println!(
        "figure: {} bad-input cases, {} objects compared after each",
        cases.len() + 1,
        before.len()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(cases.len() >= 40);
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(30))
        .await;
}
