//! # federator-api
//!
//! The Kubernetes API shared by the hub (`federator`) and the agent (`cluster-agent`): the
//! custom resources, the well-known names, and the RBAC each side needs. The trust logic
//! itself lives in `federator-core`, which knows nothing of Kubernetes.
//!
//! | module | what it holds |
//! |---|---|
//! | [`hub`] | resources in the hub cluster: [`hub::Federation`], [`hub::MemberCluster`] |
//! | [`member`] | the exchange object in each member: [`member::ClusterTrust`] |
//! | [`foreign`] | SPIFFE federation: [`foreign::ForeignTrustDomain`], the bundle endpoint's settings |
//! | [`istio`] | what federator reads from Istio's objects (the istiod Deployment's facts) |
//! | [`names`] | namespaces, object names, field managers, annotations |
//! | [`rbac`] | the Roles the agent, the hub's member credential and the reader identity get |
//! | [`remote`] | Istio remote secrets (multi-primary discovery) and which a member should hold |
//! | [`agent`] | the agent's Deployment, as `join` installs it |
//! | [`condition`] | status conditions, their types and reasons |
//! | [`events`] | Kubernetes Events and their reasons |
//! | [`duration`], [`fields`] | typed CRD fields: Go durations, timestamps, schemas |
//! | [`plumbing`] | Kubernetes plumbing both sides use: apply, create, watches, kubeconfigs, backoff |
//! | [`serving`] | the `/metrics`, `/healthz` and `/readyz` server both binaries run |
//! | [`logging`] | the log subscriber both binaries install (`--log-format text|json`) |
//!
//! ## The exchange (one `ClusterTrust` named `local` in each member's `federator-system`)
//!
//! * The hub writes `spec` (with its least-privilege credential): the trust bundle and its
//!   generation, the CSR generation it asks for, and the signed chain for the last CSR.
//! * The agent writes `status` (the `/status` subresource): its CSR (public key only), what it
//!   installed, istiod's state, conditions.
//! * The cluster CA key stays in a member Secret the hub's credential cannot read.

#![forbid(unsafe_code)]

pub mod agent;
pub mod condition;
pub mod duration;
pub mod events;
pub mod failpoint;
pub mod fields;
pub mod foreign;
pub mod hub;
pub mod istio;
pub mod logging;
pub mod member;
pub mod names;
pub mod plumbing;
pub mod rbac;
pub mod remote;
pub mod serving;
pub mod spiffe_tls;

/// The API group of every federator resource.
pub const GROUP: &str = "federator.io";
/// The API version of every federator resource.
pub const VERSION: &str = "v1alpha1";

/// The CRDs `federator init` installs in the hub: Federation, MemberCluster, ClusterTrust
/// (the hub's own cluster may be a member too; `join` installs ClusterTrust in each member) and
/// ForeignTrustDomain.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        hub::Federation::crd(),
        hub::MemberCluster::crd(),
        member::ClusterTrust::crd(),
        foreign::ForeignTrustDomain::crd(),
    ]
}

/// [`crds`] as YAML documents (each starting with `---`), what `federator crds` prints.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out += "---\n";
        out += &serde_yaml::to_string(&crd)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    #[test]
    fn the_printed_crds_read_back_as_the_installed_ones() {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        use serde::Deserialize;
        let yaml = crate::crds_yaml().unwrap();
        let read: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|doc| CustomResourceDefinition::deserialize(doc).unwrap())
            .collect();
        assert_eq!(read, crate::crds());
        let names: Vec<_> = read
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "federations.federator.io",
                "memberclusters.federator.io",
                "clustertrusts.federator.io",
                "foreigntrustdomains.federator.io"
            ]
        );
    }

    #[test]
    fn crds_have_status_and_printer_columns() {
        for crd in [
            crate::hub::Federation::crd(),
            crate::hub::MemberCluster::crd(),
            crate::member::ClusterTrust::crd(),
            crate::foreign::ForeignTrustDomain::crd(),
        ] {
            let v = &crd.spec.versions[0];
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{}",
                crd.spec.names.kind
            );
            assert!(
                v.additional_printer_columns
                    .as_ref()
                    .is_some_and(|c| c.len() >= 3)
            );
            let yaml = serde_yaml::to_string(&crd).unwrap();
            assert!(yaml.contains("conditions"), "{}", crd.spec.names.kind);
        }
    }

    /// The API server validates enum-like fields, durations and timestamps itself.
    #[test]
    fn schemas_validate_typed_fields() {
        let has = |crd, needles: &[&str]| {
            let yaml = serde_yaml::to_string(&crd).unwrap();
            for needle in needles {
                assert!(yaml.contains(needle), "schema lacks {needle:?}:\n{yaml}");
            }
        };
        let fed = crate::hub::Federation::crd();
        has(
            fed,
            &[
                "- local",
                "- import",
                "- vault",
                "- approle",
                "- trusting-new-root",
            ],
        );
        let fed = crate::hub::Federation::crd();
        has(
            fed,
            &["- re-signing", "- ecdsa-p384", crate::duration::PATTERN],
        );
        let fed = crate::hub::Federation::crd();
        has(
            fed,
            &[
                "format: date-time",
                "x-kubernetes-list-type: map",
                "maximum: 99",
            ],
        );
        let member = crate::hub::MemberCluster::crd();
        has(
            member,
            &[
                "- in-cluster",
                "- external",
                "- hot-reload",
                "observedGeneration",
            ],
        );
        let trust = crate::member::ClusterTrust::crd();
        has(
            trust,
            &[
                "- restarted",
                "format: date-time",
                "x-kubernetes-list-map-keys",
            ],
        );
    }

    /// Objects written by earlier versions (every field as text, `""` for unset) are read,
    /// and what is written now reads back the same.
    #[test]
    fn objects_of_earlier_versions_are_read() {
        use crate::hub::{AgentMode, Federation, MemberCluster, RootType, RotationPhase};
        use crate::member::{ClusterTrust, IstiodState};
        let condition = r#"{"type": "Ready", "status": "True", "reason": "Synced", "message": "", "lastTransitionTime": "2026-01-01T00:00:00.123456789Z"}"#;
        let fed: Federation = serde_json::from_str(&format!(
            r#"{{"apiVersion": "federator.io/v1alpha1", "kind": "Federation",
            "metadata": {{"name": "default", "namespace": "federator-system"}},
            "spec": {{"root": {{"type": "vault", "vault": {{"address": "http://127.0.0.1:8200",
                "mount": "pki", "issuer": "", "namespace": "", "auth": "approle",
                "authMount": "approle", "role": "", "jwtPath": "", "caPem": ""}}}},
              "clusterCaTtl": "720h", "renewAtPercent": 66, "keyAlgorithm": "ecdsa-p256",
              "localRoots": {{"keyAlgorithm": "", "ttl": "", "organization": ""}}}},
            "status": {{"conditions": [{condition}],
              "roots": [{{"trustDomain": "cluster.local", "sha256": "ab", "subject": "CN=x",
                "notAfter": "2036-01-01T00:00:00Z"}}],
              "bundleDigest": "d", "bundleGeneration": 3, "members": 2,
              "rotations": [{{"trustDomain": "cluster.local", "phase": "trusting-new-root",
                "previousSha256": "a", "sha256": "b", "removesOldRootAt": ""}}]}}}}"#
        ))
        .unwrap();
        assert_eq!(fed.spec.root.type_, RootType::Vault);
        assert_eq!(fed.spec.cluster_ca_ttl.get().as_secs(), 720 * 3600);
        assert_eq!(fed.spec.local_roots, Default::default());
        let status = fed.status.as_ref().unwrap();
        assert_eq!(status.rotations[0].phase, RotationPhase::TrustingNewRoot);
        assert_eq!(status.rotations[0].removes_old_root_at, None);
        // Written again, they read back the same (sub-second digits are dropped once).
        fn round<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
            serde_json::from_value(serde_json::to_value(v).unwrap()).unwrap()
        }
        assert_eq!(round(&round(&fed)), round(&fed));

        let member: MemberCluster = serde_json::from_str(&format!(
            r#"{{"apiVersion": "federator.io/v1alpha1", "kind": "MemberCluster",
            "metadata": {{"name": "c1", "namespace": "federator-system"}},
            "spec": {{"trustDomain": "cluster.local", "network": "", "credentialSecret": "s",
              "server": "https://127.0.0.1:1", "agentMode": "external"}},
            "status": {{"conditions": [{condition}], "caSerial": "", "caNotAfter": "",
              "caRootSha256": "", "bundleGenerationAcknowledged": 0, "istiod": "",
              "lastContact": "", "problems": []}}}}"#
        ))
        .unwrap();
        assert_eq!(member.spec.agent_mode, Some(AgentMode::External));
        let s = member.status.as_ref().unwrap();
        assert!(s.ca_not_after.is_none() && s.last_contact.is_none() && s.istiod.is_none());
        assert_eq!(round(&round(&member)), round(&member));

        let trust: ClusterTrust = serde_json::from_str(&format!(
            r#"{{"apiVersion": "federator.io/v1alpha1", "kind": "ClusterTrust",
            "metadata": {{"name": "local", "namespace": "federator-system"}},
            "spec": {{"clusterName": "c1", "trustDomain": "cluster.local",
              "bundle": [{{"trustDomain": "cluster.local", "rootsPem": "x"}}],
              "bundleGeneration": 1, "csrGeneration": 1, "keyAlgorithm": "ecdsa-p256",
              "signed": {{"csrDigest": "d", "generation": 1, "chainPem": "c", "serial": "01",
                "notAfter": "2026-02-01T00:00:00Z", "renewAfter": "2026-01-20T00:00:00.5Z"}}}},
            "status": {{"csr": {{"generation": 1, "pem": "p", "digest": "d"}},
              "installed": {{"serial": "01", "sha256": "s", "notAfter": "2026-02-01T00:00:00Z",
                "bundleGeneration": 1, "csrGeneration": 1}},
              "istiod": {{"state": "hot-reload", "multiRoot": true, "message": "m"}},
              "conditions": [{condition}], "problems": []}}}}"#
        ))
        .unwrap();
        let st = trust.status.as_ref().unwrap();
        assert_eq!(st.istiod.as_ref().unwrap().state, IstiodState::HotReload);
        assert!(trust.spec.signed.as_ref().unwrap().renew_after.is_some());
        assert_eq!(round(&round(&trust)), round(&trust));
    }
}
