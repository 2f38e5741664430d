//! SPIFFE federation with the reference implementation: a real SPIRE server (v1.13.3, built
//! from its Go module by `tools/build.sh spire`) `federates_with` the federation's trust
//! domains through the hub's bundle endpoint (`serve --bundle-endpoint-addr`, profile
//! `https_web` with a serving certificate from a test CA that SPIRE trusts through
//! `SSL_CERT_FILE`), and holds exactly the federation's roots for each of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use federator_e2e::*;
use federator_testkit::wait_until;
use testbed::spire::{FederatesWith, Profile, SpireOptions, SpireServer};
use testbed::{Binaries, Process, ProcessSpec};

/// The files of the bundle endpoint's `https_web` serving certificate, from a test CA.
struct WebPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn web_pki(dir: &Path) -> WebPki {
    let ca = testbed::pki::Ca::new("bundle endpoint test CA").unwrap();
    let serving = ca.issue_serving("federator bundle endpoint").unwrap();
    let files = WebPki {
        ca: dir.join("web-ca.pem"),
        cert: dir.join("bundle-endpoint.crt"),
        key: dir.join("bundle-endpoint.key"),
    };
    std::fs::write(&files.ca, ca.cert_pem()).unwrap();
    std::fs::write(&files.cert, &serving.cert_pem).unwrap();
    testbed::pki::write_private(&files.key, &serving.key_pem).unwrap();
    files
}

/// How a replica's bundle endpoint authenticates itself.
enum Endpoint<'a> {
    /// `https_web` with the test CA's serving certificate.
    Web(&'a WebPki),
    /// `https_spiffe` with an X509-SVID the hub issues for this SPIFFE ID.
    Spiffe(&'a str),
}

/// A hub replica with leader election and the bundle endpoint on `addr`.
fn replica(fed: &Federation, id: &str, addr: &str, endpoint: &Endpoint<'_>) -> Process {
    // A 10 s hint: SPIRE still polls every 15 s (it raises any hint to 1 minute and polls four
    // times per hint), and a rotation keeps the old root for at least three hints (30 s), less
    // than the tests' 40 s drain.
    let mut args = vec![
        "--bundle-endpoint-addr",
        addr,
        "--bundle-refresh-hint",
        "10s",
    ];
    let (cert, key);
    match endpoint {
        Endpoint::Web(pki) => {
            (cert, key) = (pki.cert.to_string_lossy(), pki.key.to_string_lossy());
            args.extend([
                "--bundle-endpoint-cert",
                &cert,
                "--bundle-endpoint-key",
                &key,
            ]);
        }
        Endpoint::Spiffe(spiffe_id) => args.extend([
            "--bundle-endpoint-profile",
            "https_spiffe",
            "--bundle-endpoint-spiffe-id",
            spiffe_id,
        ]),
    }
    fed.serve_replica(id, &args)
}

/// `GET url` over HTTPS, trusting only `ca`: (status, body).
fn https_get(url: &str, ca: &Path) -> Result<(u16, String), String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').ok_or("no status")?;
    Ok((
        code.trim().parse().map_err(|_| "bad status")?,
        body.to_owned(),
    ))
}

/// The federation's roots per trust domain (DER), as its status publishes them, and the
/// bundle generation.
async fn published(fed: &Federation) -> (BTreeMap<String, BTreeSet<Vec<u8>>>, i64) {
    let status = fed.federation_status().await;
    let roots = status
        .published
        .iter()
        .map(|e| {
            let ders =
                federator_core::cert::parse_pem_certificates(e.roots_pem.as_bytes(), "published")
                    .unwrap();
            (e.trust_domain.clone(), ders.into_iter().collect())
        })
        .collect();
    (roots, status.bundle_generation)
}

/// What SPIRE holds for its federated trust domains (`spire-server bundle list -output
/// json`): roots (DER) and sequence number per trust domain.
async fn spire_federated(
    spire: &SpireServer,
) -> Result<BTreeMap<String, (BTreeSet<Vec<u8>>, i64)>, String> {
    let out = spire
        .cli(&["bundle", "list"], &["-output", "json"])
        .await
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    // cliprinter prints one JSON document per response message: an object or a list of them.
    let responses = match v {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    };
    let mut held = BTreeMap::new();
    for r in responses {
        for b in r["bundles"].as_array().cloned().unwrap_or_default() {
            let td = b["trust_domain"].as_str().unwrap_or_default().to_owned();
            let roots = b["x509_authorities"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    base64::engine::general_purpose::STANDARD
                        .decode(a["asn1"].as_str().unwrap_or_default())
                        .unwrap()
                })
                .collect();
            let seq = b["sequence_number"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| b["sequence_number"].as_i64())
                .unwrap_or(-1);
            held.insert(td, (roots, seq));
        }
    }
    Ok(held)
}

#[tokio::test(flavor = "multi_thread")]
async fn spire_federates_with_the_bundle_endpoint_over_https_web() {
    let spire_bin = Binaries::locate().spire_server().unwrap();
    let mut fed =
        Federation::start(&[("east", "east.example"), ("west", "west.example")], &[]).await;
    let pki = web_pki(&fed.dir);
    for name in ["east", "west"] {
        fed.join(name);
        fed.start_agent(name);
    }
    // Two replicas: the leader and a standby both serve the bundles.
    let addrs: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", testbed::process::pick_port().unwrap()))
        .collect();
    let _leader = replica(&fed, "a", &addrs[0], &Endpoint::Web(&pki));
    fed.wait_healthy(&["east", "west"], Duration::from_secs(90))
        .await;
    let _standby = replica(&fed, "b", &addrs[1], &Endpoint::Web(&pki));
    let (ours, generation) = published(&fed).await;
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        ["east.example", "west.example"]
    );

    // What the endpoint serves, on both replicas: a SPIFFE bundle per trust domain, with the
    // bundle generation as its sequence and the refresh hint; unknown paths are 404s.
    for addr in &addrs {
        let (status, body) = wait_until(
            &format!("the bundle endpoint on {addr}"),
            Duration::from_secs(30),
            || async { https_get(&format!("https://{addr}/east.example"), &pki.ca) },
            String::new,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let td = federator_core::identity::TrustDomain::new("east.example").unwrap();
        let doc = federator_core::spiffe::parse_bundle(body.as_bytes(), &td).unwrap();
        assert_eq!(doc.sequence, Some(u64::try_from(generation).unwrap()));
        assert_eq!(doc.refresh_hint, Some(Duration::from_secs(10)));
        assert_eq!(
            doc.x509_authorities.into_iter().collect::<BTreeSet<_>>(),
            ours["east.example"]
        );
        let (status, body) = https_get(&format!("https://{addr}/nope.example"), &pki.ca).unwrap();
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("/east.example, /west.example"), "{body}");
    }

    // SPIRE federates with both trust domains through the endpoint, https_web, trusting the
    // test CA only through SSL_CERT_FILE.
    let dir = fed.dir.join("spire");
    let spire = SpireServer::start(
        &spire_bin,
        &dir,
        &SpireOptions {
            trust_domain: "spire.example".into(),
            federates_with: ["east.example", "west.example"]
                .iter()
                .map(|td| FederatesWith {
                    trust_domain: (*td).into(),
                    url: format!("https://{}/{td}", addrs[1]),
                    profile: Profile::HttpsWeb,
                })
                .collect(),
            ssl_cert_file: Some(pki.ca.clone()),
            refresh_hint: Duration::from_secs(60),
            endpoint_web_cert: None,
        },
    )
    .await
    .unwrap();
    // Roots only: SPIRE 1.13.3 does not keep the sequence of a fetched bundle (it reports 0).
    let expected: BTreeMap<String, (BTreeSet<Vec<u8>>, i64)> = ours
        .iter()
        .map(|(td, roots)| (td.clone(), (roots.clone(), 0)))
        .collect();
    wait_until(
        "SPIRE to hold exactly the federation's roots for both trust domains",
        Duration::from_secs(60),
        || async {
            let held = spire_federated(&spire).await?;
            if held == expected {
                Ok(())
            } else {
                let show = |m: &BTreeMap<String, (BTreeSet<Vec<u8>>, i64)>| {
                    m.iter()
                        .map(|(td, (r, q))| format!("{td}: {} root(s), sequence {q}", r.len()))
                        .collect::<Vec<_>>()
                };
                Err(format!(
                    "SPIRE holds {:?}, expected {:?}",
                    show(&held),
                    show(&expected)
                ))
            }
        },
        || spire.log_tail(20),
    )
    .await;
}

/// A root rotation (`rotate-root`, local backend) as SPIRE sees it through the bundle
/// endpoint: SPIRE holds the old root alone, then both, then the new one alone, and it never
/// lacks the old root while the federation still publishes it; it learns the new root before
/// the federation drops the old one. Checked every half second from the start of the rotation
/// to its end (SPIRE polls every 15 s: a 60 s refresh hint / 4).
#[tokio::test(flavor = "multi_thread")]
async fn spire_learns_a_rotated_root_before_the_old_one_is_dropped() {
    let spire_bin = Binaries::locate().spire_server().unwrap();
    let mut fed = Federation::start(&[("east", "east.example")], &[]).await;
    let pki = web_pki(&fed.dir);
    fed.join("east");
    fed.start_agent("east");
    let addr = format!("127.0.0.1:{}", testbed::process::pick_port().unwrap());
    let _serve = replica(&fed, "a", &addr, &Endpoint::Web(&pki));
    fed.wait_healthy(&["east"], Duration::from_secs(90)).await;
    let (ours, _) = published(&fed).await;
    let old: BTreeSet<Vec<u8>> = ours["east.example"].clone();
    assert_eq!(old.len(), 1);
    let spire = SpireServer::start(
        &spire_bin,
        &fed.dir.join("spire"),
        &SpireOptions {
            trust_domain: "spire.example".into(),
            federates_with: vec![FederatesWith {
                trust_domain: "east.example".into(),
                url: format!("https://{addr}/east.example"),
                profile: Profile::HttpsWeb,
            }],
            ssl_cert_file: Some(pki.ca.clone()),
            refresh_hint: Duration::from_secs(60),
            endpoint_web_cert: None,
        },
    )
    .await
    .unwrap();
    let spire_holds = || async {
        spire_federated(&spire).await.map(|m| {
            m.get("east.example")
                .map(|(r, _)| r.clone())
                .unwrap_or_default()
        })
    };
    wait_until(
        "SPIRE to hold the federation's root",
        Duration::from_secs(60),
        || async {
            let held = spire_holds().await?;
            if held == old {
                Ok(())
            } else {
                Err(format!("{} roots", held.len()))
            }
        },
        || spire.log_tail(20),
    )
    .await;

    let new = rotate_as_spire_sees_it(&fed, &spire, &old).await;
    // The member ends on the new root alone, which is what SPIRE holds.
    let fp = federator_core::cert::fingerprint(&new);
    fed.wait_all_on_root(&["east"], &fp).await;
}

/// Rotates east.example's root (`rotate-root --drain 40s`) and follows it at SPIRE, every half
/// second from `rotate-root` until SPIRE drops the old root: SPIRE holds the old root alone,
/// then both, then the new one alone, never a root that is neither, and never lacks the old
/// root while the federation still publishes it; it holds both before the federation drops the
/// old one. Returns the new root (DER).
async fn rotate_as_spire_sees_it(
    fed: &Federation,
    spire: &SpireServer,
    old: &BTreeSet<Vec<u8>>,
) -> Vec<u8> {
    let old = old.clone();
    let spire_holds = || async {
        spire_federated(spire).await.map(|m| {
            m.get("east.example")
                .map(|(r, _)| r.clone())
                .unwrap_or_default()
        })
    };
    let started = std::time::Instant::now();
    fed.federator_ok(&[
        "rotate-root",
        "--trust-domain",
        "east.example",
        "--drain",
        "40s",
    ]);
    let mut states: Vec<(f64, usize, BTreeSet<Vec<u8>>)> = Vec::new();
    let mut new: Option<Vec<u8>> = None;
    let mut spire_saw_both: Option<f64> = None;
    let mut published_dropped_old: Option<f64> = None;
    let mut spire_dropped_old: Option<f64> = None;
    let deadline = started + Duration::from_secs(240);
    loop {
        // SPIRE first, then what the federation publishes: the published set only ever loses
        // the old root once, so a SPIRE without it before a publication with it is SPIRE
        // dropping it early.
        let held = spire_holds().await.unwrap();
        let (pubd, _) = published(fed).await;
        let pubd = pubd["east.example"].clone();
        let t = started.elapsed().as_secs_f64();
        for r in &pubd {
            if !old.contains(r) {
                new.get_or_insert_with(|| r.clone());
            }
        }
        let both: BTreeSet<Vec<u8>> = old.iter().cloned().chain(new.clone()).collect();
        assert!(
            held.is_subset(&both),
            "SPIRE holds a root that is neither the old nor the new one"
        );
        let pub_has_old = pubd.is_superset(&old);
        let spire_has_old = held.is_superset(&old);
        assert!(
            spire_has_old || !pub_has_old,
            "at {t:.1}s SPIRE lacks the old root that the federation still publishes"
        );
        if !pub_has_old && published_dropped_old.is_none() {
            published_dropped_old = Some(t);
        }
        if new.is_some() && held == both && spire_saw_both.is_none() {
            spire_saw_both = Some(t);
        }
        if !spire_has_old && spire_dropped_old.is_none() {
            spire_dropped_old = Some(t);
        }
        if states.last().map(|(_, _, h)| h) != Some(&held) {
            states.push((t, held.len(), held.clone()));
        }
        if spire_dropped_old.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no end of the rotation at SPIRE after 240 s: {:?}",
            states.iter().map(|(t, n, _)| (t, n)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let new = new.expect("the federation published a new root");
    let seen: Vec<BTreeSet<Vec<u8>>> = states.iter().map(|(_, _, h)| h.clone()).collect();
    assert_eq!(
        seen,
        vec![
            old.clone(),
            old.iter().cloned().chain([new.clone()]).collect(),
            [new.clone()].into_iter().collect(),
        ],
        "SPIRE's roots for east.example: the old one, both, the new one"
    );
    let (both_at, dropped_at, spire_dropped_at) = (
        spire_saw_both.unwrap(),
        published_dropped_old.unwrap(),
        spire_dropped_old.unwrap(),
    );
    assert!(
        both_at < dropped_at,
        "SPIRE held both roots at {both_at:.1}s, the federation dropped the old one at {dropped_at:.1}s"
    );
    eprintln!(
        "rotation at SPIRE: both roots held {both_at:.1}s after rotate-root; the federation dropped the old root at {dropped_at:.1}s, SPIRE at {spire_dropped_at:.1}s"
    );
    new
}

/// The `istio` mesh config of a member: its `caCertificates` entries as (trust domains, pem).
async fn ca_certificates(fed: &Federation, name: &str) -> Vec<(Vec<String>, String)> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let client = fed.members[name].cluster.client().await.unwrap();
    let cm = kube::Api::<ConfigMap>::namespaced(client, federator_api::names::ISTIO_NAMESPACE)
        .get(federator_api::names::ISTIO_CONFIGMAP)
        .await
        .unwrap();
    let mesh = cm.data.unwrap_or_default()[federator_api::names::MESH_KEY].clone();
    let v: serde_yaml::Value = serde_yaml::from_str(&mesh).unwrap();
    v["caCertificates"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let tds = e["trustDomains"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t.as_str().map(ToOwned::to_owned))
                .collect();
            (tds, e["pem"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// `federator status -o json`'s row for a foreign trust domain.
fn foreign_row(fed: &Federation, td: &str) -> Option<serde_json::Value> {
    let out = fed.federator(&["status", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["foreign"]
        .as_array()?
        .iter()
        .find(|f| f["trustDomain"] == td)
        .cloned()
}

/// Runs `federator` as an operator whose machine trusts `ca` (`SSL_CERT_FILE`), as `trust add`
/// needs to fetch an `https_web` endpoint before it writes anything.
fn federator_trusting(fed: &Federation, ca: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin("federator"))
        .args(args)
        .env("FEDERATOR_HUB_KUBECONFIG", fed.hub.kubeconfig_path())
        .env("SSL_CERT_FILE", ca)
        .output()
        .unwrap()
}

fn ders(pem: &str) -> BTreeSet<Vec<u8>> {
    federator_core::cert::parse_pem_certificates(pem.as_bytes(), "pem")
        .unwrap()
        .into_iter()
        .collect()
}

/// Both directions with one SPIRE server: it federates with the federation's trust domain
/// (as above), and the federation trusts SPIRE's (`federator trust add`, SPIRE's endpoint
/// served `https_web`): an X509-SVID SPIRE mints verifies against the member's mesh config
/// entry for spire.example, and a workload certificate of the member verifies against what
/// SPIRE holds for east.example. Then SPIRE goes down: the member keeps SPIRE's roots, status
/// says the domain is stale, and it recovers by itself when SPIRE is back.
#[tokio::test(flavor = "multi_thread")]
async fn the_federation_trusts_spire_and_keeps_its_roots_while_it_is_down() {
    let spire_bin = Binaries::locate().spire_server().unwrap();
    let mut fed = Federation::start(&[("east", "east.example")], &[]).await;
    let pki = web_pki(&fed.dir);
    fed.join("east");
    fed.install_mesh_config("east").await;
    fed.start_agent("east");
    let addr = format!("127.0.0.1:{}", testbed::process::pick_port().unwrap());
    // The hub authenticates SPIRE's https_web endpoint with the test CA.
    let mut spec = ProcessSpec::new("serve", bin("federator"), fed.dir.join("serve.log"))
        .args(["serve", "--log-level", "info", "--heartbeat", "5s"])
        .args([
            "--bundle-endpoint-addr",
            &addr,
            "--bundle-refresh-hint",
            "60s",
        ])
        .arg("--bundle-endpoint-cert")
        .arg(&pki.cert)
        .arg("--bundle-endpoint-key")
        .arg(&pki.key)
        .env("FEDERATOR_HUB_KUBECONFIG", fed.hub.kubeconfig_path())
        .env("SSL_CERT_FILE", &pki.ca);
    spec = spec.env("RUST_LOG", "info");
    let _serve = Process::spawn(spec).unwrap();
    fed.wait_healthy(&["east"], Duration::from_secs(90)).await;

    let spire = SpireServer::start(
        &spire_bin,
        &fed.dir.join("spire"),
        &SpireOptions {
            trust_domain: "spire.example".into(),
            federates_with: vec![FederatesWith {
                trust_domain: "east.example".into(),
                url: format!("https://{addr}/east.example"),
                profile: Profile::HttpsWeb,
            }],
            ssl_cert_file: Some(pki.ca.clone()),
            // SPIRE's own endpoint: short, so that the hub comes back soon after an outage.
            refresh_hint: Duration::from_secs(5),
            endpoint_web_cert: Some((pki.cert.clone(), pki.key.clone())),
        },
    )
    .await
    .unwrap();
    let spire_roots = ders(&spire.cli(&["bundle", "show"], &[]).await.unwrap());
    assert!(!spire_roots.is_empty());

    let out = federator_trusting(
        &fed,
        &pki.ca,
        &[
            "trust",
            "add",
            "spire.example",
            "--bundle-endpoint",
            spire.bundle_endpoint_url(),
            "--profile",
            "https_web",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8(out.stdout).unwrap();
    // The CLI fetched SPIRE's bundle itself before writing the domain.
    assert!(
        out.contains(&format!(
            "fetched {}: {} root(s)",
            spire.bundle_endpoint_url(),
            spire_roots.len()
        )),
        "{out}"
    );
    assert!(out.contains("trusting spire.example"), "{out}");

    // The member's mesh config gets SPIRE's roots for spire.example; root-cert.pem does not.
    let entries = wait_until(
        "the member's mesh config to hold SPIRE's roots for spire.example",
        Duration::from_secs(60),
        || async {
            let e = ca_certificates(&fed, "east").await;
            let spire_pems: BTreeSet<Vec<u8>> = e
                .iter()
                .filter(|(tds, _)| tds == &["spire.example".to_owned()])
                .flat_map(|(_, pem)| ders(pem))
                .collect();
            if spire_pems == spire_roots {
                Ok(e)
            } else {
                Err(format!(
                    "{} entries; status {:?}",
                    e.len(),
                    foreign_row(&fed, "spire.example")
                ))
            }
        },
        String::new,
    )
    .await;
    assert_eq!(
        entries.len(),
        spire_roots.len(),
        "only SPIRE's roots: {entries:?}"
    );
    let files = fed.cacerts("east").await.unwrap();
    let root_cert = String::from_utf8(files["root-cert.pem"].clone()).unwrap();
    assert!(
        ders(&root_cert).is_disjoint(&spire_roots),
        "not mesh-wide: root-cert.pem must not hold SPIRE's roots"
    );
    let row = foreign_row(&fed, "spire.example").unwrap();
    assert_eq!(
        (row["ready"].as_bool(), row["stale"].as_bool()),
        (Some(true), Some(false)),
        "{row}"
    );

    // An X509-SVID SPIRE mints for its trust domain verifies against what the member got.
    let minted = fed.dir.join("minted");
    std::fs::create_dir_all(&minted).unwrap();
    spire
        .cli(
            &["x509", "mint"],
            &[
                "-spiffeID",
                "spiffe://spire.example/workload",
                "-write",
                minted.to_str().unwrap(),
            ],
        )
        .await
        .unwrap();
    let svid = federator_core::cert::parse_pem_certificates(
        &std::fs::read(minted.join("svid.pem")).unwrap(),
        "svid.pem",
    )
    .unwrap();
    let member_anchors: Vec<Vec<u8>> = entries.iter().flat_map(|(_, pem)| ders(pem)).collect();
    federator_core::verify::verify_workload_chain(
        &svid,
        &member_anchors,
        time::OffsetDateTime::now_utc(),
    )
    .expect("SPIRE's SVID verifies against the member's spire.example anchors");
    // ... and not against the member's own bundle.
    assert!(verifies(&svid, &files).is_err());

    // A workload certificate of the member verifies against what SPIRE holds for east.example.
    let held = wait_until(
        "SPIRE to hold east.example's roots",
        Duration::from_secs(60),
        || async {
            let held = spire_federated(&spire).await?;
            held.get("east.example")
                .cloned()
                .ok_or_else(|| format!("{:?}", held.keys()))
        },
        || spire.log_tail(20),
    )
    .await;
    let leaf = mint_leaf(&files, "spiffe://east.example/ns/default/sa/app");
    let anchors: Vec<Vec<u8>> = held.0.into_iter().collect();
    federator_core::verify::verify_workload_chain(&leaf, &anchors, time::OffsetDateTime::now_utc())
        .expect(
            "the member's workload certificate verifies against SPIRE's bundle for east.example",
        );

    // SPIRE down: the member keeps the last good roots, status says stale.
    spire.stop().await;
    let row = wait_until(
        "status to say spire.example is stale",
        Duration::from_secs(60),
        || async {
            let row = foreign_row(&fed, "spire.example").ok_or("no row")?;
            if row["stale"] == true {
                Ok(row)
            } else {
                Err(row.to_string())
            }
        },
        String::new,
    )
    .await;
    assert_eq!(row["ready"], false, "{row}");
    assert!(
        row["message"]
            .as_str()
            .unwrap()
            .contains("EndpointUnreachable"),
        "{row}"
    );
    assert!(
        row["message"]
            .as_str()
            .unwrap()
            .contains("members keep its last good roots"),
        "{row}"
    );
    let ct = fed.cluster_trust("east").await.unwrap();
    assert_eq!(
        ct.spec
            .foreign
            .iter()
            .map(|e| e.trust_domain.as_str())
            .collect::<Vec<_>>(),
        ["spire.example"]
    );
    assert_eq!(ders(&ct.spec.foreign[0].roots_pem), spire_roots);
    let e = ca_certificates(&fed, "east").await;
    assert_eq!(e, entries, "the mesh config keeps SPIRE's roots");

    // Back up: fresh again without anyone doing anything.
    spire.start_again().await.unwrap();
    wait_until(
        "spire.example to be fresh again",
        Duration::from_secs(60),
        || async {
            let row = foreign_row(&fed, "spire.example").ok_or("no row")?;
            if row["ready"] == true && row["stale"] == false {
                Ok(())
            } else {
                Err(row.to_string())
            }
        },
        String::new,
    )
    .await;

    // Removal takes SPIRE's roots out of the member's mesh config.
    fed.federator_ok(&["trust", "remove", "spire.example"]);
    wait_until(
        "the member's mesh config to lose SPIRE's roots",
        Duration::from_secs(60),
        || async {
            let e = ca_certificates(&fed, "east").await;
            if e.is_empty() {
                Ok(())
            } else {
                Err(format!("{e:?}"))
            }
        },
        String::new,
    )
    .await;
}

/// A SPIFFE bundle document of `ders` (each as an x509-svid JWK with its key parameters).
fn bundle_doc(ders: &[Vec<u8>]) -> String {
    let keys: Vec<serde_json::Value> = ders
        .iter()
        .map(|der| {
            let k = federator_core::spiffe::public_jwk(der).unwrap();
            let mut m = serde_json::Map::new();
            m.insert("use".into(), "x509-svid".into());
            m.insert("kty".into(), k.kty.into());
            for (name, v) in [
                ("crv", k.crv),
                ("x", k.x),
                ("y", k.y),
                ("n", k.n),
                ("e", k.e),
            ] {
                if let Some(v) = v {
                    m.insert(name.into(), v.into());
                }
            }
            m.insert(
                "x5c".into(),
                vec![base64::engine::general_purpose::STANDARD.encode(der)].into(),
            );
            serde_json::Value::Object(m)
        })
        .collect();
    serde_json::json!({"keys": keys, "spiffe_sequence": 1}).to_string()
}

/// `openssl s_server -WWW`: serves the files of `dir` over TLS with `cert`/`key`.
fn file_server(name: &str, dir: &Path, cert: &Path, key: &Path, log: PathBuf) -> (Process, String) {
    let port = testbed::process::pick_port().unwrap();
    let mut spec = ProcessSpec::new(name, "openssl", log)
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key);
    spec.cwd = Some(dir.to_owned());
    let process = Process::spawn(spec).unwrap();
    // Listening before anyone fetches from it (`trust add` fetches once, right away).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (process, format!("https://127.0.0.1:{port}"))
}

/// Bad bundle endpoints: garbage, a non-CA certificate, a CA of another trust domain, a huge
/// document, a TLS certificate the system roots do not vouch for. Each is refused with a
/// clear status, and nothing reaches the member.
#[tokio::test(flavor = "multi_thread")]
async fn bad_bundle_endpoints_are_refused_and_nothing_is_distributed() {
    let mut fed = Federation::start(&[("east", "east.example")], &[]).await;
    let pki = web_pki(&fed.dir);
    fed.join("east");
    fed.install_mesh_config("east").await;
    fed.start_agent("east");
    let spec = ProcessSpec::new("serve", bin("federator"), fed.dir.join("serve.log"))
        .args(["serve", "--log-level", "info"])
        .env("FEDERATOR_HUB_KUBECONFIG", fed.hub.kubeconfig_path())
        .env("SSL_CERT_FILE", &pki.ca);
    let _serve = Process::spawn(spec).unwrap();
    fed.wait_healthy(&["east"], Duration::from_secs(90)).await;
    let generation = fed.federation_status().await.bundle_generation;

    let www = fed.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let files = fed.cacerts("east").await.unwrap();
    let leaf = mint_leaf(&files, "spiffe://bad-leaf.example/workload").remove(0);
    let other_root = federator_testkit::pki::root("other root");
    let (_, other_ca) = federator_testkit::pki::issue(&other_root, "other", "other.example");
    let other_ca_der = other_ca.cert_der;
    std::fs::write(
        www.join("garbage.json"),
        "<html>this is not a bundle</html>",
    )
    .unwrap();
    std::fs::write(www.join("leaf.json"), bundle_doc(&[leaf])).unwrap();
    std::fs::write(www.join("other.json"), bundle_doc(&[other_ca_der])).unwrap();
    let mut huge = bundle_doc(&[]);
    huge.insert_str(1, &" ".repeat(600 * 1024));
    std::fs::write(www.join("huge.json"), huge).unwrap();
    let (_files, url) = file_server("www", &www, &pki.cert, &pki.key, fed.dir.join("www.log"));
    // A server whose certificate comes from a CA the hub does not trust.
    let rogue_ca = testbed::pki::Ca::new("rogue CA").unwrap();
    let rogue = rogue_ca.issue_serving("rogue").unwrap();
    let (rogue_cert, rogue_key) = (fed.dir.join("rogue.crt"), fed.dir.join("rogue.key"));
    std::fs::write(&rogue_cert, &rogue.cert_pem).unwrap();
    testbed::pki::write_private(&rogue_key, &rogue.key_pem).unwrap();
    let (_rogue, rogue_url) = file_server(
        "rogue",
        &www,
        &rogue_cert,
        &rogue_key,
        fed.dir.join("rogue.log"),
    );

    let cases = [
        (
            "garbage.example",
            format!("{url}/garbage.json"),
            "BundleRefused",
            "not a SPIFFE bundle",
        ),
        (
            "bad-leaf.example",
            format!("{url}/leaf.json"),
            "BundleRefused",
            "CA",
        ),
        (
            "spire.example",
            format!("{url}/other.json"),
            "BundleRefused",
            "other.example",
        ),
        (
            "huge.example",
            format!("{url}/huge.json"),
            "BundleRefused",
            "bytes",
        ),
        (
            "rogue.example",
            format!("{rogue_url}/garbage.json"),
            "EndpointNotAuthenticated",
            "certificate",
        ),
    ];
    // The operator's own fetch refuses each of them and writes nothing (the CLI trusts the
    // same CA as the hub here): the reason, the problem, and that nothing was written.
    for (td, u, reason, says) in &cases {
        let out = federator_trusting(&fed, &pki.ca, &["trust", "add", td, "--bundle-endpoint", u]);
        assert_eq!(out.status.code(), Some(2), "{td}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{reason}: ")), "{td}: {err}");
        assert!(err.contains(says), "{td}: {err}");
        assert!(
            err.contains(&format!("nothing was written for {td}")),
            "{td}: {err}"
        );
        assert!(foreign_row(&fed, td).is_none(), "{td} was written");
    }
    // An endpoint nobody listens on: refused the same way.
    let closed = format!(
        "https://127.0.0.1:{}/",
        testbed::process::pick_port().unwrap()
    );
    let out = federator_trusting(
        &fed,
        &pki.ca,
        &[
            "trust",
            "add",
            "closed.example",
            "--bundle-endpoint",
            &closed,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("EndpointUnreachable: GET"), "{err}");
    assert!(
        err.contains("nothing was written for closed.example"),
        "{err}"
    );
    assert!(foreign_row(&fed, "closed.example").is_none());
    // Removing a domain that is not trusted is an error naming what is.
    let out = fed.federator(&["trust", "remove", "never.example"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "never.example is not a trusted foreign trust domain: nothing removed (none is trusted)"
        ),
        "{err}"
    );
    let ct = fed.cluster_trust("east").await.unwrap();
    assert!(ct.spec.foreign.is_empty(), "{:?}", ct.spec.foreign);
    assert_eq!(fed.federation_status().await.bundle_generation, generation);

    // Written anyway (--no-fetch, as when only the hub can reach an endpoint), `serve`
    // refuses each of them in its status.
    for (td, u, _, _) in &cases {
        fed.federator_ok(&["trust", "add", td, "--bundle-endpoint", u, "--no-fetch"]);
    }
    for (td, _, reason, says) in &cases {
        let row = wait_until(
            &format!("{td} to be refused"),
            Duration::from_secs(60),
            || async {
                let row = foreign_row(&fed, td).ok_or("no row")?;
                if row["message"].as_str().unwrap_or_default().is_empty()
                    || row["message"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("not fetched")
                {
                    Err(row.to_string())
                } else {
                    Ok(row)
                }
            },
            String::new,
        )
        .await;
        assert_eq!(row["ready"], false, "{row}");
        assert_eq!(row["roots"], 0, "{row}");
        let message = row["message"].as_str().unwrap();
        assert!(message.starts_with(reason), "{td}: {message}");
        assert!(message.contains(says), "{td}: {message}");
        assert!(
            message.contains("no roots are distributed for it yet"),
            "{td}: {message}"
        );
    }
    // Nothing reached the member, and the bundle generation did not move.
    let ct = fed.cluster_trust("east").await.unwrap();
    assert!(ct.spec.foreign.is_empty(), "{:?}", ct.spec.foreign);
    assert!(ca_certificates(&fed, "east").await.is_empty());
    assert_eq!(fed.federation_status().await.bundle_generation, generation);

    // Bad parameters are refused by the CLI itself, and nothing is written.
    for (args, says) in [
        (
            vec![
                "trust",
                "add",
                "x.example",
                "--bundle-endpoint",
                "http://x.example/",
            ],
            "https://",
        ),
        (
            vec![
                "trust",
                "add",
                "east.example",
                "--bundle-endpoint",
                "https://x/",
            ],
            "a trust domain of this federation",
        ),
        (
            vec![
                "trust",
                "add",
                "x.example",
                "--bundle-endpoint",
                "https://x/",
                "--profile",
                "https_spiffe",
            ],
            "--endpoint-spiffe-id",
        ),
    ] {
        let out = fed.federator(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(foreign_row(&fed, "x.example").is_none());
}

/// The bundle endpoint's X509-SVID as the leader keeps it (`federator-bundle-endpoint`): its
/// chain (DER, leaf first), once it verifies as an SVID for `id` under a root of `roots`.
async fn endpoint_svid(fed: &Federation, id: &str, roots: &BTreeSet<Vec<u8>>) -> Vec<Vec<u8>> {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(
        fed.hub.client().await.unwrap(),
        federator_api::names::NAMESPACE,
    );
    wait_until(
        "the bundle endpoint's X509-SVID under the expected root",
        Duration::from_secs(60),
        || async {
            let s = secrets
                .get_opt(federator_api::names::BUNDLE_ENDPOINT_SECRET)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no Secret yet")?;
            if s.type_.as_deref() != Some("kubernetes.io/tls") {
                return Err(format!("type {:?}", s.type_));
            }
            let data = federator_api::plumbing::secret_data(&s);
            let chain =
                federator_core::cert::parse_pem_certificates(&data["tls.crt"], "tls.crt").unwrap();
            let mut bundle = federator_core::bundle::TrustBundle::new();
            for r in roots {
                bundle
                    .add(
                        &federator_core::identity::TrustDomain::new("east.example").unwrap(),
                        r.clone(),
                    )
                    .unwrap();
            }
            let got = federator_core::verify::verify_svid(
                &chain,
                &bundle,
                time::OffsetDateTime::now_utc(),
            )
            .map_err(|e| e.to_string())?;
            if got.to_string() == id {
                Ok(chain)
            } else {
                Err(format!("for {got}"))
            }
        },
        String::new,
    )
    .await
}

/// `https_spiffe` both ways with the reference implementation. The hub serves its bundle
/// endpoint with an X509-SVID it issues itself from the federation's CA; SPIRE federates with
/// it over `https_spiffe`, bootstrapped with a bundle that also holds a decoy root, and ends up
/// holding exactly the federation's roots (so it fetched, authenticating the SVID). Through two
/// root rotations SPIRE holds old → both → new each time: the SVID stays under the root SPIRE
/// holds and moves to the new one only when the old one leaves, so the second rotation, which
/// SPIRE can only learn by authenticating the SVID under the second root, reaches it too. The
/// other way, `trust add --profile https_spiffe` fetches SPIRE's own endpoint (SPIRE's default
/// profile) with SPIRE's bundle as the bootstrap bundle, and the member gets SPIRE's roots; a
/// wrong endpoint SPIFFE ID or a bootstrap bundle that does not hold SPIRE's root is refused
/// before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn https_spiffe_both_ways_with_spire_through_two_rotations() {
    const ENDPOINT_ID: &str = "spiffe://east.example/federator/bundle-endpoint";
    let spire_bin = Binaries::locate().spire_server().unwrap();
    let mut fed = Federation::start(&[("east", "east.example")], &[]).await;
    fed.join("east");
    fed.install_mesh_config("east").await;
    fed.start_agent("east");
    let addr = format!("127.0.0.1:{}", testbed::process::pick_port().unwrap());
    let _serve = replica(&fed, "a", &addr, &Endpoint::Spiffe(ENDPOINT_ID));
    fed.wait_healthy(&["east"], Duration::from_secs(90)).await;
    let (ours, _) = published(&fed).await;
    let old = ours["east.example"].clone();
    let chain = endpoint_svid(&fed, ENDPOINT_ID, &old).await;
    assert!(
        chain.len() >= 3,
        "leaf, its one-use CA, the root: {} certificates",
        chain.len()
    );

    // SPIRE, bootstrapped with our root and a decoy, federates with east.example over
    // https_spiffe. Set before its first poll: SPIRE is started, given the bundle, restarted.
    let decoy = ders(&testbed::pki::Ca::new("decoy root").unwrap().cert_pem());
    let bootstrap: Vec<Vec<u8>> = old.iter().chain(decoy.iter()).cloned().collect();
    // With our refresh hint, so that SPIRE polls at once at its pace for it.
    let mut bootstrap_doc: serde_json::Value =
        serde_json::from_str(&bundle_doc(&bootstrap)).unwrap();
    bootstrap_doc["spiffe_refresh_hint"] = 60.into();
    let bootstrap_doc = bootstrap_doc.to_string();
    let spire = SpireServer::start(
        &spire_bin,
        &fed.dir.join("spire"),
        &SpireOptions {
            trust_domain: "spire.example".into(),
            federates_with: vec![FederatesWith {
                trust_domain: "east.example".into(),
                url: format!("https://{addr}/east.example"),
                profile: Profile::HttpsSpiffe {
                    endpoint_spiffe_id: ENDPOINT_ID.into(),
                },
            }],
            ssl_cert_file: None,
            refresh_hint: Duration::from_secs(60),
            endpoint_web_cert: None,
        },
    )
    .await
    .unwrap();
    spire
        .cli_with_input(
            &["bundle", "set"],
            &["-format", "spiffe", "-id", "spiffe://east.example"],
            Some(bootstrap_doc.as_bytes()),
        )
        .await
        .unwrap();
    spire.stop().await;
    spire.start_again().await.unwrap();
    wait_until(
        "SPIRE to replace the bootstrap bundle with the fetched one (the decoy gone)",
        Duration::from_secs(90),
        || async {
            let held = spire_federated(&spire).await?;
            let east = held.get("east.example").map(|(r, _)| r.clone());
            if east.as_ref() == Some(&old) {
                Ok(())
            } else {
                Err(format!(
                    "SPIRE holds {} root(s) for east.example",
                    east.map_or(0, |r| r.len())
                ))
            }
        },
        || spire.log_tail(20),
    )
    .await;

    // Two rotations. After the first the SVID is under the second root, which SPIRE must
    // authenticate to learn the third.
    let second = rotate_as_spire_sees_it(&fed, &spire, &old).await;
    let second: BTreeSet<Vec<u8>> = [second].into();
    let chain = endpoint_svid(&fed, ENDPOINT_ID, &second).await;
    assert_eq!(
        chain.last(),
        second.iter().next(),
        "the SVID moved to the new root"
    );
    let third = rotate_as_spire_sees_it(&fed, &spire, &second).await;
    fed.wait_all_on_root(&["east"], &federator_core::cert::fingerprint(&third))
        .await;

    // The other way: the federation trusts SPIRE's own https_spiffe endpoint.
    let spire_bundle = spire
        .cli(&["bundle", "show"], &["-format", "spiffe"])
        .await
        .unwrap();
    let spire_roots = ders(&spire.cli(&["bundle", "show"], &[]).await.unwrap());
    let bootstrap = fed.dir.join("spire-bootstrap.json");
    std::fs::write(&bootstrap, &spire_bundle).unwrap();
    let decoy_file = fed.dir.join("decoy.json");
    std::fs::write(
        &decoy_file,
        bundle_doc(&decoy.iter().cloned().collect::<Vec<_>>()),
    )
    .unwrap();
    let add = |id: &str, bundle: &Path| {
        fed.federator(&[
            "trust",
            "add",
            "spire.example",
            "--bundle-endpoint",
            spire.bundle_endpoint_url(),
            "--profile",
            "https_spiffe",
            "--endpoint-spiffe-id",
            id,
            "--bootstrap-bundle",
            bundle.to_str().unwrap(),
        ])
    };
    for (id, bundle, says) in [
        (
            "spiffe://spire.example/not/the/server",
            &bootstrap,
            "EndpointNotAuthenticated",
        ),
        (
            "spiffe://spire.example/spire/server",
            &decoy_file,
            "EndpointNotAuthenticated",
        ),
    ] {
        let out = add(id, bundle);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(says) && err.contains("nothing was written"),
            "{err}"
        );
        assert!(foreign_row(&fed, "spire.example").is_none());
    }
    let out = add("spiffe://spire.example/spire/server", &bootstrap);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "fetched {}: {} root(s)",
            spire.bundle_endpoint_url(),
            spire_roots.len()
        )),
        "{stdout}"
    );
    wait_until(
        "the member's mesh config to hold SPIRE's roots, fetched by serve over https_spiffe",
        Duration::from_secs(60),
        || async {
            let held: BTreeSet<Vec<u8>> = ca_certificates(&fed, "east")
                .await
                .iter()
                .filter(|(tds, _)| tds == &["spire.example".to_owned()])
                .flat_map(|(_, pem)| ders(pem))
                .collect();
            let row = foreign_row(&fed, "spire.example");
            let ready = row.as_ref().is_some_and(|r| r["ready"] == true);
            if held == spire_roots && ready {
                Ok(())
            } else {
                Err(format!("{} root(s); status {row:?}", held.len()))
            }
        },
        String::new,
    )
    .await;
}
