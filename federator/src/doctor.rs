//! `federator doctor`: what a cluster's Istio means for federator, before or after `join`.
//!
//! [`observe`] reads, with the user's kubeconfig and nothing else, the objects the agent reads
//! in a member (the istiod Deployment, `istio-system/cacerts`, the roots istiod publishes in
//! `istio-system/istio-ca-root-cert`, the mesh config in `istio-system/istio`, and the
//! exchange object `federator-system/local` when the cluster has joined). [`diagnose`] is pure: it applies the rules of the istiod version that
//! runs ([`federator_core::istiod`], the same rules the agent decides restarts with) and the
//! `cacerts` validator, and says what each finding means and what to do. Nothing is written.
//!
//! Private keys: `cacerts` is read to validate it (as `ca inspect-cacerts` does); only
//! certificate facts and problems are reported, never key material.

use std::collections::BTreeMap;

use federator_api::istio::{MeshSettings, PROXY_CONFIG_XDS_AGENT};
use federator_api::member::ClusterTrust;
use federator_api::{fields, names};
use federator_core::cacerts;
use federator_core::istiod::{self, IstiodFacts};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use kube::Client;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Error, Result};

/// What [`observe`] read from the cluster.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Whether the namespace `istio-system` exists.
    pub istio_namespace: bool,
    /// The istiod Deployment, if there is one.
    pub istiod: Option<IstiodObserved>,
    /// `istio-system/cacerts` as files, if the Secret exists.
    pub cacerts: Option<BTreeMap<String, Vec<u8>>>,
    /// `root-cert.pem` of `istio-system/istio-ca-root-cert`, if istiod published it.
    pub published_roots: Option<Vec<u8>>,
    /// The exchange object, if the cluster has joined a federation.
    pub cluster_trust: Option<ClusterTrust>,
    /// The mesh config (`istio-system/istio`, key `mesh`), read; `None`: no such ConfigMap.
    pub mesh: Option<Result<MeshSettings, String>>,
    /// The trust domain the cluster joins (or joined) with, when known: the exchange
    /// object's, else `doctor --trust-domain`.
    pub trust_domain: Option<String>,
}

/// What the istiod Deployment says.
#[derive(Clone, Debug)]
pub struct IstiodObserved {
    /// Version, `ISTIO_MULTIROOT_MESH`, workload TTL.
    pub facts: IstiodFacts,
    /// Ready replicas.
    pub ready_replicas: i32,
}

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// A fact, for the record.
    Ok,
    /// Works, but worth knowing (or acting on before it matters).
    Warning,
    /// Broken now, or breaks federator's installation: do what it says.
    Problem,
}

/// One thing doctor found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub level: Level,
    /// What it is about: `istiod`, `cacerts`, `published roots`, `federation`.
    pub subject: &'static str,
    /// What was found, what it means, and what to do.
    pub message: String,
}

/// The versions of the project's compatibility matrix (docs/istiod.md), and their minors.
const TESTED: &str = "1.26.8, 1.27.9, 1.28.3, 1.29.2, 1.31.1";
const TESTED_MINORS: [u32; 5] = [26, 27, 28, 29, 31];

/// Applies istiod's per-version rules and the `cacerts` validator to what was observed.
pub fn diagnose(o: &Observed, now: OffsetDateTime) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |level, subject, message: String| {
        out.push(Finding {
            level,
            subject,
            message,
        })
    };

    // istiod and its version's rules.
    match &o.istiod {
        None if !o.istio_namespace => add(
            Level::Warning,
            "istiod",
            "no namespace istio-system: Istio is not installed here yet; `federator join` creates the namespace and the agent installs cacerts, which istiod loads when it starts".into(),
        ),
        None => add(
            Level::Ok,
            "istiod",
            "no Deployment istio-system/istiod: nothing to restart; istiod loads cacerts when it starts".into(),
        ),
        Some(i) => {
            let rules = i.facts.rules();
            match rules.version() {
                None => add(
                    Level::Warning,
                    "istiod",
                    "version unknown (no image tag, no app.kubernetes.io/version label): federator applies the strictest rules of every version".into(),
                ),
                Some(v) => {
                    let tested = v.major == 1 && TESTED_MINORS.contains(&v.minor);
                    add(
                        if tested { Level::Ok } else { Level::Warning },
                        "istiod",
                        format!(
                            "version {v}{}: compares a changed root-cert.pem by {}; clamps workload certificates to the cluster CA: {}; a partial cacerts is fatal at start: {}",
                            if tested {
                                String::new()
                            } else {
                                format!(" (not one federator is tested with: {TESTED})")
                            },
                            rules.root_comparison(),
                            yes_no(rules.clamps_leaf_to_signer()),
                            yes_no(rules.partial_bundle_is_fatal()),
                        ),
                    );
                }
            }
            if i.facts.multi_root {
                add(
                    Level::Ok,
                    "istiod",
                    format!("{}=true: istiod hot-reloads root changes its rule accepts; the agent restarts it for the others", istiod::MULTIROOT_ENV),
                );
            } else {
                add(
                    Level::Warning,
                    "istiod",
                    format!(
                        "{} is not true: istiod ignores every change of root-cert.pem, so each bundle change (a trust domain joining or leaving, a root rotation) makes the agent restart istiod; set {}=true on the discovery container to let it hot-reload",
                        istiod::MULTIROOT_ENV,
                        istiod::MULTIROOT_ENV
                    ),
                );
            }
            if i.ready_replicas == 0 {
                add(
                    Level::Warning,
                    "istiod",
                    "no ready replica: istiod is starting, or failing (see its Pods' logs)".into(),
                );
            }
        }
    }

    // cacerts.
    let inspection = o.cacerts.as_ref().map(|f| cacerts::inspect(f, now));
    match (&o.cacerts, &inspection) {
        (None, _) | (_, None) => add(
            Level::Ok,
            "cacerts",
            "no istio-system/cacerts: istiod runs with its own self-signed CA; after `federator join` the agent installs cacerts and restarts istiod once (every version switches to a plug-in CA only at start)".into(),
        ),
        (Some(_), Some(report)) if report.is_ok() => {
            let ca = report.ca.as_ref();
            add(
                Level::Ok,
                "cacerts",
                format!(
                    "valid: cluster CA {} (serial {}, expires {}), trust domain {}, {} root(s) in root-cert.pem",
                    ca.map_or("?", |c| c.subject.as_str()),
                    ca.map_or("?", |c| c.serial.as_str()),
                    ca.map_or("?", |c| c.not_after.as_str()),
                    report.trust_domain.as_deref().unwrap_or("?"),
                    report.roots.len()
                ),
            );
            if let (Some(i), Some(not_after)) = (
                &o.istiod,
                ca.and_then(|c| OffsetDateTime::parse(&c.not_after, &Rfc3339).ok()),
            ) {
                let renew_after = o
                    .cluster_trust
                    .as_ref()
                    .and_then(|ct| ct.spec.signed.as_ref())
                    .filter(|s| ca.is_some_and(|c| c.serial == s.serial))
                    .and_then(|s| s.renew_after.as_ref())
                    .map(fields::offset);
                if let Some(w) = istiod::leaf_outlives_ca_warning(&i.facts, not_after, renew_after)
                {
                    add(Level::Warning, "cacerts", w);
                }
            }
            if let Some(w) = foreign_cacerts(o, ca.map(|c| c.serial.as_str())) {
                add(Level::Warning, "cacerts", w);
            }
        }
        (Some(_), Some(report)) => {
            for p in &report.problems {
                add(
                    Level::Problem,
                    "cacerts",
                    format!("{}: {}", p.file, p.message),
                );
            }
        }
    }

    // What istiod has loaded.
    if o.istiod.as_ref().is_some_and(|i| i.ready_replicas > 0) {
        let installed = o
            .cacerts
            .as_ref()
            .and_then(|f| f.get(cacerts::ROOT_CERT))
            .filter(|_| inspection.as_ref().is_some_and(cacerts::Inspection::is_ok));
        match (&o.published_roots, installed) {
            (None, _) => add(
                Level::Warning,
                "published roots",
                format!(
                    "istiod has not published {}/{} yet: workloads get their trust bundle from it",
                    names::ISTIO_NAMESPACE,
                    names::ISTIO_ROOT_CERT_CONFIGMAP
                ),
            ),
            (Some(published), Some(installed)) => {
                let same = istiod::root_fingerprints(published)
                    .is_some_and(|p| Some(p) == istiod::root_fingerprints(installed));
                if same {
                    add(
                        Level::Ok,
                        "published roots",
                        "istiod publishes exactly the roots of cacerts: it has loaded them".into(),
                    );
                } else {
                    add(
                        Level::Warning,
                        "published roots",
                        format!(
                            "istiod publishes other roots than cacerts holds: it has not loaded the current root-cert.pem (a Pod's cacerts volume follows the Secret at the kubelet's next sync, up to a minute or more; a change its version refuses, or any change without {}=true, needs a restart, which the agent of a joined cluster requests)",
                            istiod::MULTIROOT_ENV
                        ),
                    );
                }
            }
            (Some(_), None) => {}
        }
    }

    // The mesh config.
    mesh_findings(o, &mut add);

    // The federation.
    match &o.cluster_trust {
        None => add(
            Level::Ok,
            "federation",
            format!(
                "not joined (no ClusterTrust {}/{}): `federator join cluster NAME --kubeconfig F` joins it",
                names::NAMESPACE,
                names::CLUSTER_TRUST
            ),
        ),
        Some(ct) => {
            let installed = ct.status.as_ref().and_then(|s| s.installed.as_ref());
            add(
                Level::Ok,
                "federation",
                format!(
                    "joined as {} in trust domain {}: bundle generation {} of {} installed, {} trust domain(s) trusted",
                    ct.spec.cluster_name,
                    ct.spec.trust_domain,
                    installed.map_or(0, |i| i.bundle_generation),
                    ct.spec.bundle_generation,
                    ct.spec.bundle.len()
                ),
            );
            if let Some(td) = inspection.as_ref().and_then(|r| r.trust_domain.as_deref())
                && td != ct.spec.trust_domain
            {
                add(
                    Level::Problem,
                    "federation",
                    format!(
                        "cacerts is for trust domain {td}, the federation has this cluster in {}: the agent replaces cacerts once it runs; if it does not, check the agent (`kubectl -n {} get pods`)",
                        ct.spec.trust_domain,
                        names::NAMESPACE
                    ),
                );
            }
            for p in ct.status.iter().flat_map(|s| s.problems.iter()) {
                add(
                    Level::Warning,
                    "federation",
                    format!("the agent reports: {p}"),
                );
            }
        }
    }
    out
}

/// A valid `cacerts` federator did not write: before join, someone else's CA (join replaces
/// it); after, one that is not the cluster CA the hub signed.
fn foreign_cacerts(o: &Observed, serial: Option<&str>) -> Option<String> {
    let backup = format!(
        "back it up first (`kubectl -n {} get secret {} -o yaml`)",
        names::ISTIO_NAMESPACE,
        names::CACERTS_SECRET
    );
    match &o.cluster_trust {
        None => Some(format!(
            "{}/{} exists and federator did not write it: `federator join` replaces it with a cluster CA under the federation's root, and workloads that trust only its current root stop trusting this cluster's new certificates until they get the federation's bundle; {backup}, and if other meshes trust its root, import that root with `federator init --root import`",
            names::ISTIO_NAMESPACE,
            names::CACERTS_SECRET
        )),
        Some(ct) => {
            let signed = ct.spec.signed.as_ref().map(|s| s.serial.as_str());
            let installed = ct
                .status
                .as_ref()
                .and_then(|s| s.installed.as_ref())
                .map(|i| i.serial.as_str());
            let ours = serial.is_some() && (serial == signed || serial == installed);
            (!ours && signed.is_some()).then(|| {
                format!(
                    "{}/{} holds a cluster CA (serial {}) the hub did not sign (it signed {}): someone else wrote it; the agent replaces it at its next reconcile — if it keeps coming back, find what writes it (an Istio installer's plugged-in certs, cert-manager); {backup}",
                    names::ISTIO_NAMESPACE,
                    names::CACERTS_SECRET,
                    serial.unwrap_or("?"),
                    signed.unwrap_or("?")
                )
            })
        }
    }
}

/// The mesh config's trust domain against the cluster's, and `PROXY_CONFIG_XDS_AGENT`.
fn mesh_findings(o: &Observed, add: &mut impl FnMut(Level, &'static str, String)) {
    let cm = format!(
        "ConfigMap {}/{}",
        names::ISTIO_NAMESPACE,
        names::ISTIO_CONFIGMAP
    );
    let settings = match &o.mesh {
        None if !o.istio_namespace => return,
        None => {
            add(
                Level::Ok,
                "mesh config",
                format!(
                    "no {cm}: istiod runs with the default mesh config (trust domain cluster.local)"
                ),
            );
            MeshSettings {
                trust_domain: federator_core::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
                proxy_config_xds_agent: false,
            }
        }
        Some(Err(e)) => {
            add(
                Level::Problem,
                "mesh config",
                format!("{cm}: {e}: istiod cannot load it either; fix its `mesh` key"),
            );
            return;
        }
        Some(Ok(s)) => s.clone(),
    };
    match &o.trust_domain {
        Some(td) if *td != settings.trust_domain => add(
            Level::Problem,
            "mesh config",
            format!(
                "trustDomain is {} but the cluster joins (or joined) the federation in {td}: istiod issues workload identities in {}, which no member's bundle maps to this cluster's root; set meshConfig.trustDomain to {td} (and restart istiod), or join with --trust-domain {}",
                settings.trust_domain, settings.trust_domain, settings.trust_domain
            ),
        ),
        Some(td) => add(
            Level::Ok,
            "mesh config",
            format!("trustDomain {td}: the cluster's trust domain in the federation"),
        ),
        None => add(
            Level::Ok,
            "mesh config",
            format!(
                "trustDomain {}: join with --trust-domain {} (or pass doctor --trust-domain to check another)",
                settings.trust_domain, settings.trust_domain
            ),
        ),
    }
    if settings.proxy_config_xds_agent {
        add(
            Level::Ok,
            "mesh config",
            format!(
                "{PROXY_CONFIG_XDS_AGENT}=true: sidecars take new roots over XDS as soon as istiod pushes them"
            ),
        );
    } else {
        add(
            Level::Warning,
            "mesh config",
            format!(
                "meshConfig.defaultConfig.proxyMetadata.{PROXY_CONFIG_XDS_AGENT} is not \"true\": sidecars learn a new root only at their next workload certificate rotation (up to its lifetime, 24h by default), so a root rotation must drain at least that long; set it to \"true\" (Istio's multi-root setup) and restart the workloads"
            ),
        );
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Reads what [`diagnose`] needs. Objects that do not exist are `None`; a refused or failed
/// read is an error naming the object, since a partial picture would mislead.
pub async fn observe(client: &Client, trust_domain: Option<&str>) -> Result<Observed> {
    let istio = names::ISTIO_NAMESPACE;
    let what = |o: &str| format!("read {o}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let istio_namespace = namespaces
        .get_opt(istio)
        .await
        .map_err(|e| Error::kube(&what(&format!("namespace {istio}")), e))?
        .is_some();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), istio);
    let istiod = deployments
        .get_opt(names::ISTIOD_DEPLOYMENT)
        .await
        .map_err(|e| Error::kube(&what(&format!("Deployment {istio}/istiod")), e))?
        .map(|d| IstiodObserved {
            facts: federator_api::istio::istiod_facts(&d),
            ready_replicas: d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
        });
    let secrets: Api<Secret> = Api::namespaced(client.clone(), istio);
    let cacerts = secrets
        .get_opt(names::CACERTS_SECRET)
        .await
        .map_err(|e| Error::kube(&what(&format!("Secret {istio}/cacerts")), e))?
        .map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        });
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), istio);
    let published_roots = configmaps
        .get_opt(names::ISTIO_ROOT_CERT_CONFIGMAP)
        .await
        .map_err(|e| {
            Error::kube(
                &what(&format!(
                    "ConfigMap {istio}/{}",
                    names::ISTIO_ROOT_CERT_CONFIGMAP
                )),
                e,
            )
        })?
        .and_then(|c| c.data)
        .and_then(|mut d| d.remove(cacerts::ROOT_CERT))
        .map(String::into_bytes);
    let exchange: Api<ClusterTrust> = Api::namespaced(client.clone(), names::NAMESPACE);
    let cluster_trust = match exchange.get_opt(names::CLUSTER_TRUST).await {
        Ok(ct) => ct,
        // Not joined: the CRD does not exist, so the resource is unknown to the apiserver.
        Err(e) if federator_api::plumbing::is_status(&e, 404) => None,
        Err(e) => {
            return Err(Error::kube(
                &what(&format!(
                    "ClusterTrust {}/{}",
                    names::NAMESPACE,
                    names::CLUSTER_TRUST
                )),
                e,
            ));
        }
    };
    let mesh = configmaps
        .get_opt(names::ISTIO_CONFIGMAP)
        .await
        .map_err(|e| {
            Error::kube(
                &what(&format!("ConfigMap {istio}/{}", names::ISTIO_CONFIGMAP)),
                e,
            )
        })?
        .map(|c| {
            let yaml = c
                .data
                .and_then(|mut d| d.remove(names::MESH_KEY))
                .unwrap_or_default();
            federator_api::istio::mesh_settings(&yaml)
        });
    let trust_domain = cluster_trust
        .as_ref()
        .map(|ct| ct.spec.trust_domain.clone())
        .or_else(|| trust_domain.map(str::to_owned));
    Ok(Observed {
        istio_namespace,
        istiod,
        cacerts,
        published_roots,
        cluster_trust,
        mesh,
        trust_domain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_core::istiod::{Container, IstiodFacts};

    fn facts(image: &str, multi_root: bool) -> IstiodFacts {
        let env: Vec<(&str, Option<&str>)> = if multi_root {
            vec![(istiod::MULTIROOT_ENV, Some("true"))]
        } else {
            Vec::new()
        };
        IstiodFacts::read(
            &[Container {
                name: istiod::DISCOVERY_CONTAINER,
                image: Some(image),
                env: &env,
            }],
            None,
        )
    }

    fn istiod(image: &str, multi_root: bool) -> Option<IstiodObserved> {
        Some(IstiodObserved {
            facts: facts(image, multi_root),
            ready_replicas: 1,
        })
    }

    fn find<'a>(f: &'a [Finding], subject: &str, needle: &str) -> Option<&'a Finding> {
        f.iter()
            .find(|x| x.subject == subject && x.message.contains(needle))
    }

    /// Valid `cacerts` with no renewal known (not joined): its last day of workload
    /// certificates outlives it where istiod does not clamp them.
    fn short_cacerts() -> BTreeMap<String, Vec<u8>> {
        let root = federator_testkit::pki::root("cluster.local");
        federator_testkit::pki::cacerts(&root, "c1", "cluster.local").files()
    }

    #[test]
    fn each_version_gets_its_own_rules() {
        let now = OffsetDateTime::now_utc();
        let old = diagnose(
            &Observed {
                istio_namespace: true,
                istiod: istiod("docker.io/istio/pilot:1.27.9", true),
                ..Observed::default()
            },
            now,
        );
        assert!(
            find(
                &old,
                "istiod",
                "version 1.27.9: compares a changed root-cert.pem by raw-byte substring"
            )
            .is_some(),
            "{old:?}"
        );
        assert!(
            find(
                &old,
                "istiod",
                "clamps workload certificates to the cluster CA: no"
            )
            .is_some()
        );
        let new = diagnose(
            &Observed {
                istio_namespace: true,
                istiod: istiod("docker.io/istio/pilot:1.31.1", true),
                ..Observed::default()
            },
            now,
        );
        assert!(
            find(&new, "istiod", "certificate-set subset").is_some(),
            "{new:?}"
        );
        assert!(
            find(
                &new,
                "istiod",
                "clamps workload certificates to the cluster CA: yes"
            )
            .is_some()
        );
        let untested = diagnose(
            &Observed {
                istio_namespace: true,
                istiod: istiod("docker.io/istio/pilot:1.22.0", true),
                ..Observed::default()
            },
            now,
        );
        let f = find(&untested, "istiod", "not one federator is tested with").unwrap();
        assert_eq!(f.level, Level::Warning);
        let unknown = diagnose(
            &Observed {
                istio_namespace: true,
                istiod: istiod("registry.example/pilot@sha256:00", true),
                ..Observed::default()
            },
            now,
        );
        assert!(
            find(&unknown, "istiod", "strictest rules").is_some(),
            "{unknown:?}"
        );
    }

    #[test]
    fn multi_root_off_is_a_warning_that_says_what_to_set() {
        let f = diagnose(
            &Observed {
                istio_namespace: true,
                istiod: istiod("istio/pilot:1.31.1", false),
                ..Observed::default()
            },
            OffsetDateTime::now_utc(),
        );
        let w = find(&f, "istiod", "ISTIO_MULTIROOT_MESH is not true").unwrap();
        assert_eq!(w.level, Level::Warning);
        assert!(w.message.contains("set ISTIO_MULTIROOT_MESH=true"));
    }

    #[test]
    fn leaves_outliving_the_ca_are_flagged_only_where_istiod_does_not_clamp() {
        let now = OffsetDateTime::now_utc();
        let with = |image: &str| {
            diagnose(
                &Observed {
                    istio_namespace: true,
                    istiod: istiod(image, true),
                    cacerts: Some(short_cacerts()),
                    ..Observed::default()
                },
                now,
            )
        };
        let old = with("istio/pilot:1.29.2");
        assert!(
            find(&old, "cacerts", "valid: cluster CA").is_some(),
            "{old:?}"
        );
        let w = find(&old, "cacerts", "does not clamp").unwrap();
        assert_eq!(w.level, Level::Warning);
        let new = with("istio/pilot:1.29.3");
        assert!(find(&new, "cacerts", "does not clamp").is_none(), "{new:?}");
    }

    #[test]
    fn broken_cacerts_are_problems_naming_the_file() {
        let mut files = short_cacerts();
        files.remove(cacerts::ROOT_CERT);
        let f = diagnose(
            &Observed {
                istio_namespace: true,
                cacerts: Some(files),
                ..Observed::default()
            },
            OffsetDateTime::now_utc(),
        );
        let p = find(&f, "cacerts", "root-cert.pem: missing").unwrap();
        assert_eq!(p.level, Level::Problem);
        assert!(find(&f, "cacerts", "valid").is_none());
    }

    #[test]
    fn published_roots_are_compared_as_sets() {
        let files = short_cacerts();
        let root = files[cacerts::ROOT_CERT].clone();
        let obs = |published: Option<Vec<u8>>| Observed {
            istio_namespace: true,
            istiod: istiod("istio/pilot:1.31.1", true),
            cacerts: Some(files.clone()),
            published_roots: published,
            ..Observed::default()
        };
        let now = OffsetDateTime::now_utc();
        let same = diagnose(&obs(Some(root.clone())), now);
        assert!(
            find(&same, "published roots", "it has loaded them").is_some(),
            "{same:?}"
        );
        let other = federator_testkit::pki::root("other.example").cert_pem();
        let differs = diagnose(&obs(Some(other.into_bytes())), now);
        let w = find(&differs, "published roots", "has not loaded").unwrap();
        assert_eq!(w.level, Level::Warning);
        let none = diagnose(&obs(None), now);
        assert!(find(&none, "published roots", "not published").is_some());
    }

    #[test]
    fn the_mesh_config_is_checked_against_the_clusters_trust_domain() {
        let now = OffsetDateTime::now_utc();
        let obs = |mesh: Option<Result<MeshSettings, String>>, td: Option<&str>| Observed {
            istio_namespace: true,
            mesh,
            trust_domain: td.map(str::to_owned),
            ..Observed::default()
        };
        let settings = |td: &str, xds| {
            Some(Ok(MeshSettings {
                trust_domain: td.into(),
                proxy_config_xds_agent: xds,
            }))
        };
        let f = diagnose(&obs(settings("east.local", true), Some("west.local")), now);
        let p = find(&f, "mesh config", "trustDomain is east.local").unwrap();
        assert_eq!(p.level, Level::Problem);
        assert!(
            p.message
                .contains("set meshConfig.trustDomain to west.local")
        );
        assert!(find(&f, "mesh config", "PROXY_CONFIG_XDS_AGENT=true").is_some());
        let f = diagnose(&obs(settings("east.local", false), Some("east.local")), now);
        assert!(f.iter().all(|x| x.level != Level::Problem), "{f:?}");
        let w = find(&f, "mesh config", "is not \"true\"").unwrap();
        assert_eq!(w.level, Level::Warning);
        assert!(w.message.contains("set it to \"true\""));
        // Unknown trust domain (before join, no --trust-domain): says what to join with.
        let f = diagnose(&obs(settings("east.local", true), None), now);
        assert!(find(&f, "mesh config", "join with --trust-domain east.local").is_some());
        // No ConfigMap: istiod's default, cluster.local.
        let f = diagnose(&obs(None, Some("east.local")), now);
        assert_eq!(
            find(&f, "mesh config", "trustDomain is cluster.local")
                .unwrap()
                .level,
            Level::Problem
        );
        let f = diagnose(&obs(Some(Err("not YAML".into())), None), now);
        assert_eq!(
            find(&f, "mesh config", "not YAML").unwrap().level,
            Level::Problem
        );
    }

    #[test]
    fn a_cacerts_federator_did_not_write_is_named() {
        let now = OffsetDateTime::now_utc();
        let obs = Observed {
            istio_namespace: true,
            cacerts: Some(short_cacerts()),
            ..Observed::default()
        };
        let f = diagnose(&obs, now);
        let w = find(&f, "cacerts", "federator did not write it").unwrap();
        assert_eq!(w.level, Level::Warning);
        assert!(w.message.contains("back it up first"));
    }

    #[test]
    fn no_istio_and_not_joined_say_what_happens_next() {
        let f = diagnose(&Observed::default(), OffsetDateTime::now_utc());
        assert!(find(&f, "istiod", "no namespace istio-system").is_some());
        assert!(find(&f, "cacerts", "self-signed CA").is_some());
        assert!(find(&f, "federation", "not joined").is_some());
        assert!(f.iter().all(|x| x.level != Level::Problem), "{f:?}");
    }
}
