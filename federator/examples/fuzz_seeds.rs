//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/`) from federator's own
//! generators, so that every fuzzer starts from inputs that go deep: real roots, cluster CA
//! chains, CSRs, `cacerts` material, trust bundles and kubeconfigs. Certificates are made valid
//! at `federator_core::fuzz::now()`, the fixed instant the fuzz entries use.
//!
//! ```text
//! cargo run -p federator --example fuzz_seeds -- fuzz/corpus [fuzz/regressions]
//! ```
//!
//! With a second directory it also writes the regression cases that were constructed rather
//! than found by a fuzzer (listed in federator/tests/fuzz_corpus.rs). The output differs on
//! every run (fresh keys and serials); the committed files are one run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use federator_core::bundle::TrustBundle;
use federator_core::ca::{IssuingCa, RootOptions};
use federator_core::cacerts::CaCerts;
use federator_core::cert;
use federator_core::csr::{CsrInfo, generate_cluster_csr};
use federator_core::fuzz;
use federator_core::identity::{ClusterName, SpiffeId, TrustDomain};
use federator_core::key::{KeyAlgorithm, PrivateKey};
use federator_core::policy::{ClusterCaRequest, SigningPolicy};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// How one `csr_policy` seed differs from a bare CSR.
type Variant<'a> = Box<dyn Fn(&mut CertificateParams) + 'a>;

struct Out(PathBuf);

impl Out {
    fn put(&self, target: &str, name: &str, data: impl AsRef<[u8]>) {
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    fuzz::join(parts)
}

fn der(pem_text: &str) -> Vec<u8> {
    cert::parse_pem_certificates(pem_text.as_bytes(), "seed")
        .unwrap()
        .concat()
}

/// A DER private key as the fuzz entries take it: a byte selecting the PEM type, then DER.
fn key_der(pem_text: &str) -> Vec<u8> {
    let block = pem::parse(pem_text).unwrap();
    let sel = fuzz::KEY_TAGS
        .iter()
        .position(|t| *t == block.tag())
        .unwrap() as u8;
    [vec![sel], block.into_contents()].concat()
}

fn root(alg: KeyAlgorithm, path_len: u8) -> IssuingCa {
    let opts = RootOptions {
        key_algorithm: alg,
        path_len,
        ..RootOptions::default()
    };
    IssuingCa::create_root(&opts, fuzz::now()).unwrap()
}

/// Cluster CA material under `ca`, as the agent assembles it.
fn cacerts(ca: &IssuingCa, cluster: &str, td: &str, alg: KeyAlgorithm) -> CaCerts {
    let cluster = ClusterName::new(cluster).unwrap();
    let td = TrustDomain::new(td).unwrap();
    let (key, csr) = generate_cluster_csr(&cluster, &td, alg).unwrap();
    let request = ClusterCaRequest {
        cluster,
        trust_domain: td.clone(),
    };
    let issued = SigningPolicy::default()
        .sign(
            ca,
            &CsrInfo::parse(csr.as_bytes()).unwrap(),
            &request,
            fuzz::now(),
        )
        .unwrap();
    let mut bundle = TrustBundle::new();
    bundle.add(&td, ca.root_der().to_vec()).unwrap();
    CaCerts::assemble(&issued.chain_pem, &key, &bundle).unwrap()
}

fn cacerts_input(c: &CaCerts) -> Vec<u8> {
    join(&[
        c.ca_cert.as_bytes(),
        c.ca_key.as_bytes(),
        c.cert_chain.as_bytes(),
        c.root_cert.as_bytes(),
    ])
}

fn params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = fuzz::now() - Duration::from_secs(3600);
    p.not_after = fuzz::now() + Duration::from_secs(10 * 365 * 86400);
    p
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let out = Out(Path::new(&dir).to_owned());

    // duration
    for (i, d) in [
        "8760h", "87600h", "1h30m", "45s", "1500ms", "2m5s", "0s", "1s500ms", "720h",
    ]
    .iter()
    .enumerate()
    {
        out.put("duration", &format!("seed-{i}"), d);
    }

    let p256 = root(KeyAlgorithm::EcdsaP256, 1);
    let p384 = root(KeyAlgorithm::EcdsaP384, 1);
    let rsa = root(KeyAlgorithm::Rsa2048, 1);
    let a = cacerts(&p256, "west", "a.local", KeyAlgorithm::EcdsaP256);
    let b = cacerts(&rsa, "east", "b.local", KeyAlgorithm::Rsa2048);
    let c = cacerts(&p384, "north", "c.local", KeyAlgorithm::EcdsaP384);

    // certificate
    out.put("certificate", "root-p256.pem", p256.cert_pem());
    out.put("certificate", "root-p384.pem", p384.cert_pem());
    out.put("certificate", "root-rsa2048.pem", rsa.cert_pem());
    out.put("certificate", "root-p256.der", p256.cert_der());
    out.put("certificate", "cluster-chain.pem", &a.cert_chain);
    out.put("certificate", "cluster-chain.der", der(&a.cert_chain));
    let leaf = a
        .issue_workload_cert(
            &SpiffeId::parse("spiffe://a.local/ns/default/sa/web").unwrap(),
            Duration::from_secs(3600),
            fuzz::now(),
        )
        .unwrap();
    out.put("certificate", "workload-chain.pem", &leaf.chain_pem);

    // private_key
    out.put("private_key", "pkcs8-p256.pem", &a.ca_key);
    out.put("private_key", "pkcs8-rsa2048.pem", &b.ca_key);
    out.put("private_key", "pkcs8-p384.pem", &c.ca_key);
    {
        use p256::pkcs8::LineEnding;
        let k = p256::SecretKey::from_slice(&[9u8; 32]).unwrap();
        out.put(
            "private_key",
            "sec1-p256.pem",
            k.to_sec1_pem(LineEnding::LF).unwrap().as_bytes(),
        );
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let pem = b.ca_key.clone();
        let r = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
        let pkcs1 = r.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap();
        out.put("private_key", "pkcs1-rsa2048.pem", pkcs1.as_bytes());
        out.put("private_key", "pkcs1-rsa2048.der", key_der(&pkcs1));
        let sec1 = k.to_sec1_pem(LineEnding::LF).unwrap();
        out.put("private_key", "sec1-p256.der", key_der(&sec1));
    }
    out.put("private_key", "pkcs8-p256.der", key_der(&a.ca_key));

    // ca_import: a self-signed root, and an intermediate with its chain.
    out.put(
        "ca_import",
        "root-p256",
        join(&[
            p256.cert_pem().as_bytes(),
            p256.key().to_pkcs8_pem().as_bytes(),
        ]),
    );
    out.put(
        "ca_import",
        "root-p256-der",
        join(&[&der(&p256.cert_pem()), &key_der(&p256.key().to_pkcs8_pem())]),
    );
    out.put(
        "ca_import",
        "root-rsa2048",
        join(&[
            rsa.cert_pem().as_bytes(),
            rsa.key().to_pkcs8_pem().as_bytes(),
        ]),
    );
    {
        let root_key = KeyPair::generate().unwrap();
        let mut rp = params("enterprise root");
        rp.is_ca = IsCa::Ca(BasicConstraints::Constrained(2));
        rp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_cert = rp.self_signed(&root_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&rp, &root_key);
        let int_key = KeyPair::generate().unwrap();
        let mut ip = params("federation intermediate");
        ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        ip.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ip.use_authority_key_identifier_extension = true;
        let int_cert = ip.signed_by(&int_key, &issuer).unwrap();
        let chain = cert::to_pem([int_cert.der().as_ref(), root_cert.der().as_ref()]);
        out.put(
            "ca_import",
            "intermediate-with-chain",
            join(&[chain.as_bytes(), int_key.serialize_pem().as_bytes()]),
        );
    }

    // csr: what agents send.
    for (name, alg) in [
        ("p256", KeyAlgorithm::EcdsaP256),
        ("p384", KeyAlgorithm::EcdsaP384),
        ("rsa2048", KeyAlgorithm::Rsa2048),
    ] {
        let (_, pem) = generate_cluster_csr(
            &ClusterName::new(fuzz::CLUSTER).unwrap(),
            &TrustDomain::new(fuzz::TRUST_DOMAIN).unwrap(),
            alg,
        )
        .unwrap();
        out.put("csr", &format!("cluster-csr-{name}.pem"), &pem);
        if name == "p256" {
            out.put(
                "csr",
                "cluster-csr-p256.der",
                CsrInfo::parse(pem.as_bytes()).unwrap().der,
            );
        }
    }

    // csr_policy: CertificationRequestInfos for the fixed key, asking for what the policy
    // grants and for each thing it refuses.
    let fixed = KeyPair::try_from(fuzz::csr_policy_key_pkcs8().as_slice()).unwrap();
    let td_uri = || SanType::URI("spiffe://fuzz.local".try_into().unwrap());
    let ca0 = IsCa::Ca(BasicConstraints::Constrained(0));
    let ku = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let variants: Vec<(&str, Variant<'_>)> = vec![
        (
            "policy",
            Box::new(|p| {
                p.subject_alt_names = vec![td_uri()];
                p.is_ca = ca0;
                p.key_usages = ku.clone();
            }),
        ),
        ("bare", Box::new(|_| {})),
        (
            "other-trust-domain",
            Box::new(|p| {
                p.subject_alt_names =
                    vec![SanType::URI("spiffe://other.local".try_into().unwrap())];
                p.is_ca = ca0;
            }),
        ),
        (
            "dns-and-ip",
            Box::new(|p| {
                p.subject_alt_names = vec![
                    td_uri(),
                    SanType::DnsName("istiod.example.com".try_into().unwrap()),
                    SanType::IpAddress([10, 0, 0, 1].into()),
                    SanType::Rfc822Name("ca@example.com".try_into().unwrap()),
                ];
            }),
        ),
        (
            "path-length-1",
            Box::new(|p| p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1))),
        ),
        (
            "unconstrained",
            Box::new(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
        ),
        ("non-ca", Box::new(|p| p.is_ca = IsCa::ExplicitNoCa)),
        (
            "eku",
            Box::new(|p| {
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ]
            }),
        ),
        (
            "extra-key-usage",
            Box::new(|p| {
                p.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::KeyEncipherment,
                ]
            }),
        ),
        (
            "name-constraints",
            Box::new(|p| {
                // rcgen writes no name constraints into a CSR: DER by hand, permitted
                // subtree dNSName example.com.
                let mut nc = vec![0x30, 0x11, 0xa0, 0x0f, 0x30, 0x0d, 0x82, 0x0b];
                nc.extend(b"example.com");
                p.custom_extensions = vec![CustomExtension::from_oid_content(&[2, 5, 29, 30], nc)]
            }),
        ),
        (
            "custom-extension",
            Box::new(|p| {
                p.custom_extensions = vec![CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 99999, 1],
                    vec![0x05, 0x00],
                )]
            }),
        ),
    ];
    for (name, f) in &variants {
        let mut p = params("fuzz-1 intermediate CA");
        p.distinguished_name
            .push(DnType::OrganizationName, "attacker");
        f(&mut p);
        let csr = p.serialize_request(&fixed).unwrap();
        let cri = fuzz::csr_request_info(csr.der()).unwrap();
        out.put("csr_policy", &format!("cri-{name}.der"), cri);
    }

    // cacerts
    out.put("cacerts", "valid-p256", cacerts_input(&a));
    out.put("cacerts", "valid-rsa2048", cacerts_input(&b));
    out.put("cacerts", "valid-p384", cacerts_input(&c));
    out.put(
        "cacerts",
        "valid-p256-der",
        join(&[
            &der(&a.ca_cert),
            &key_der(&a.ca_key),
            &der(&a.cert_chain),
            &der(&a.root_cert),
        ]),
    );
    out.put(
        "cacerts",
        "istio-generated",
        join(&[&cacerts_input(&a), b"true"]),
    );

    // trust_bundle
    let entry = |td: &str, pems: &[String]| format!("{td}\n{}", pems.concat());
    out.put(
        "trust_bundle",
        "one-domain",
        entry("a.local", &[p256.cert_pem()]),
    );
    out.put(
        "trust_bundle",
        "rotation",
        entry("a.local", &[p256.cert_pem(), p384.cert_pem()]),
    );
    out.put(
        "trust_bundle",
        "three-domains",
        join(&[
            entry("a.local", &[p256.cert_pem()]).as_bytes(),
            entry("b.local", &[rsa.cert_pem()]).as_bytes(),
            entry("c.local", &[p384.cert_pem(), p256.cert_pem()]).as_bytes(),
        ]),
    );
    out.put(
        "trust_bundle",
        "rotation-der",
        [
            b"a.local\n".to_vec(),
            der(&p256.cert_pem()),
            der(&p384.cert_pem()),
        ]
        .concat(),
    );

    // spiffe_bundle: what federator's bundle endpoint serves, a SPIRE-like bundle with a JWT
    // authority and a refresh hint, a key of unknown use (skipped), and an empty key set.
    let spiffe = |td: &str, pems: &[String], seq: i64| {
        let tdv = federator_core::identity::TrustDomain::new(td).unwrap();
        let bundle = federator_core::bundle::TrustBundle::from_domain_pems(
            pems.iter().map(|p| (&tdv, p.as_str())),
        )
        .unwrap();
        let mut doc = serde_json::to_value(bundle.spiffe_bundle(&tdv, seq).unwrap()).unwrap();
        doc["spiffe_refresh_hint"] = 300.into();
        doc
    };
    out.put(
        "spiffe_bundle",
        "one-root",
        format!("a.local\n{}", spiffe("a.local", &[p256.cert_pem()], 1)),
    );
    out.put(
        "spiffe_bundle",
        "rotation",
        format!(
            "a.local\n{}",
            spiffe("a.local", &[p256.cert_pem(), p384.cert_pem()], 7)
        ),
    );
    let mut spire_like = spiffe("b.local", &[rsa.cert_pem()], 3);
    spire_like["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "use": "jwt-svid", "kid": "k1", "kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        }));
    spire_like["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "use": "future-svid", "kty": "EC"
        }));
    out.put(
        "spiffe_bundle",
        "spire-like",
        format!("b.local\n{spire_like}"),
    );
    out.put(
        "spiffe_bundle",
        "empty",
        "c.local\n{\"keys\": [], \"spiffe_sequence\": 2}",
    );

    // kubeconfig: the testbed's (client certificate and token) and the hub's stored credential.
    let ca_pem = p256.cert_pem();
    let admin_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let kc = testbed::kubeconfig::render(
        "c1",
        "https://127.0.0.1:6443",
        &ca_pem,
        "admin",
        &testbed::kubeconfig::Credentials::ClientCert {
            cert_pem: leaf.chain_pem.clone(),
            key_pem: admin_key.to_pkcs8_pem(),
        },
    )
    .unwrap();
    out.put("kubeconfig", "client-cert.yaml", kc);
    let kc = testbed::kubeconfig::render(
        "c2",
        "https://10.0.0.2:6443",
        &ca_pem,
        "admin",
        &testbed::kubeconfig::Credentials::Token("not-a-real-token".into()),
    )
    .unwrap();
    out.put("kubeconfig", "token.yaml", &kc);
    let mut config = kube::Config::new("https://10.0.0.3:6443".parse().unwrap());
    config.root_cert = Some(vec![p256.cert_der().to_vec()]);
    config.tls_server_name = Some("kubernetes.default".into());
    let stored =
        federator::hub::member_access::token_kubeconfig("west", &config, "not-a-real-token")
            .unwrap();
    out.put("kubeconfig", "stored-credential.yaml", &stored);
    out.put(
        "kubeconfig",
        "exec-and-multidoc.yaml",
        format!(
            "{kc}---\napiVersion: v1\nkind: Config\nusers:\n- name: exec\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/true\n      args: [\"a\", \"b\"]\n      env:\n      - name: X\n        value: y\n      provideClusterInfo: true\n      interactiveMode: Never\npreferences: {{}}\nextensions:\n- name: e\n  extension: {{a: &x [1, 2], b: *x}}\n"
        ),
    );
    eprintln!("seed corpora written to {}", out.0.display());

    if let Some(dir) = std::env::args().nth(2) {
        let reg = Out(Path::new(&dir).to_owned());
        reg.put(
            "cacerts",
            "cross-signed-loop",
            fuzz::cross_signed_loop(12).unwrap(),
        );
        let root = root(KeyAlgorithm::EcdsaP256, 1);
        reg.put(
            "trust_bundle",
            "ec-root-with-empty-point",
            [
                b"a.local\n".to_vec(),
                fuzz::with_ec_point(root.cert_der(), &[]).unwrap(),
            ]
            .concat(),
        );
        eprintln!(
            "constructed regression cases written to {}",
            reg.0.display()
        );
    }
}
