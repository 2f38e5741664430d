//! Kubernetes Events for the transitions an operator looks for, and their reasons as
//! constants (`kubectl describe membercluster NAME` on the hub, `kubectl describe clustertrust
//! local -n federator-system` in a member, or `kubectl get events`).
//!
//! | reason | object | when |
//! |---|---|---|
//! | `CsrSigned` | `MemberCluster` | the hub signed a cluster CA |
//! | `CsrRefused` | `MemberCluster` | the hub refused a CSR (the note says why) |
//! | `SigningFailed` | `MemberCluster` | signing failed for now (Vault down...); retried |
//! | `RenewalRequested` | `MemberCluster` | a cluster CA reached its renewal point |
//! | `ReSignRequested` | `MemberCluster` | a root rotation moves the member to the new root |
//! | `BundleUpdated` | `MemberCluster` | the member was sent a new bundle generation |
//! | `CredentialRenewed` | `MemberCluster` | the hub replaced its token for the member |
//! | `CredentialRejected` | `MemberCluster` | the member answered 401 to the hub's credential |
//! | `CredentialRenewalFailed` | `MemberCluster` | the hub could not renew its token |
//! | `BundleChanged` | `Federation` | the federation's bundle got a new generation |
//! | `RotationPhase` | `Federation` | a root rotation entered a phase (note: which) |
//! | `RotationWaitsForIstiod` | `Federation` | a rotation waits for a member's istiod to publish the bundle (note: which, its version, why) |
//! | `RotationFinished` | `Federation` | a rotation's old root left every bundle |
//! | `CsrCreated` | `ClusterTrust` | the agent made a fresh key and CSR |
//! | `ChainAccepted` | `ClusterTrust` | the agent validated and kept the hub's chain |
//! | `ChainRejected` | `ClusterTrust` | the agent refused the hub's chain (the note says why) |
//! | `CacertsWritten` | `ClusterTrust` | the agent wrote `istio-system/cacerts` |
//! | `IstiodRestartRequested` | `ClusterTrust` | the agent asked for a rolling restart of istiod |
//! | `MeshConfigUpdated` | `ClusterTrust` | the agent updated `caCertificates` |
//! | `ForeignBundleUpdated` | `ForeignTrustDomain` | a fetched bundle changed the domain's roots (or sequence) |
//! | `ForeignBundleFailed` | `ForeignTrustDomain` | a fetch failed or was refused; the last good roots stay |
//! | `ForeignBundleRecovered` | `ForeignTrustDomain` | a fetch succeeded again after failures |
//! | `EndpointSvidIssued` | `Federation` | the bundle endpoint got a new X509-SVID |
//!
//! Publishing is best effort: a failure is logged and never fails a reconcile. A warning about
//! a problem the object's status already reports is not published again ([`Note::is_news`]).
//! The same note about the same object again within [`SERIES_TTL`] counts in the first one's
//! `series`; a different note is a new Event, even with the same reason. (kube-runtime's
//! `Recorder` keys its series without the note, so a second sentence with the same reason —
//! "signed cluster CA 02" after "signed cluster CA 01" — only raised the count of the first
//! and was never shown; this publisher keeps the note in the key.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tracing::warn;

/// How long the same note about the same object counts in one Event's series (kube-runtime's
/// `Recorder` uses the same 6 minutes).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// Event reasons.
pub mod reasons {
    /// The hub signed a cluster CA.
    pub const CSR_SIGNED: &str = "CsrSigned";
    /// The hub refused a CSR.
    pub const CSR_REFUSED: &str = "CsrRefused";
    /// Signing failed for now and is retried.
    pub const SIGNING_FAILED: &str = "SigningFailed";
    /// A cluster CA reached its renewal point.
    pub const RENEWAL_REQUESTED: &str = "RenewalRequested";
    /// A root rotation moves the member to the new root.
    pub const RE_SIGN_REQUESTED: &str = "ReSignRequested";
    /// An operator asked for a re-issue of the member's cluster CA (`federator renew`).
    pub const REISSUE_REQUESTED: &str = "ReissueRequested";
    /// The member was sent a new bundle generation.
    pub const BUNDLE_UPDATED: &str = "BundleUpdated";
    /// The hub replaced its token for the member.
    pub const CREDENTIAL_RENEWED: &str = "CredentialRenewed";
    /// The member rejected the hub's credential.
    pub const CREDENTIAL_REJECTED: &str = "CredentialRejected";
    /// The hub could not renew its token.
    pub const CREDENTIAL_RENEWAL_FAILED: &str = "CredentialRenewalFailed";
    /// The federation's bundle got a new generation.
    pub const BUNDLE_CHANGED: &str = "BundleChanged";
    /// A root rotation entered a phase.
    pub const ROTATION_PHASE: &str = "RotationPhase";
    /// A root rotation waits for a member's istiod to publish the bundle.
    pub const ROTATION_WAITS_FOR_ISTIOD: &str = "RotationWaitsForIstiod";
    /// A root rotation's old root left every bundle.
    pub const ROTATION_FINISHED: &str = "RotationFinished";
    /// The agent made a fresh key and CSR.
    pub const CSR_CREATED: &str = "CsrCreated";
    /// The agent validated and kept the hub's chain.
    pub const CHAIN_ACCEPTED: &str = "ChainAccepted";
    /// The agent refused the hub's chain.
    pub const CHAIN_REJECTED: &str = "ChainRejected";
    /// The agent wrote `istio-system/cacerts`.
    pub const CACERTS_WRITTEN: &str = "CacertsWritten";
    /// The agent asked for a rolling restart of istiod.
    pub const ISTIOD_RESTART_REQUESTED: &str = "IstiodRestartRequested";
    /// The agent updated `caCertificates` in the mesh config.
    pub const MESH_CONFIG_UPDATED: &str = "MeshConfigUpdated";
    /// The hub issued a new token for a member's reader identity (remote secrets).
    pub const READER_TOKEN_ISSUED: &str = "ReaderTokenIssued";
    /// The hub handed a member a new set of peers (remote secrets).
    pub const PEERS_UPDATED: &str = "PeersUpdated";
    /// The agent created, updated or deleted remote secrets in `istio-system`.
    pub const REMOTE_SECRETS_WRITTEN: &str = "RemoteSecretsWritten";
    /// A fetched foreign bundle changed the domain's roots or sequence.
    pub const FOREIGN_BUNDLE_UPDATED: &str = "ForeignBundleUpdated";
    /// A fetch of a foreign bundle failed or was refused.
    pub const FOREIGN_BUNDLE_FAILED: &str = "ForeignBundleFailed";
    /// A fetch of a foreign bundle succeeded again after failures.
    pub const FOREIGN_BUNDLE_RECOVERED: &str = "ForeignBundleRecovered";
    /// The bundle endpoint got a new X509-SVID.
    pub const ENDPOINT_SVID_ISSUED: &str = "EndpointSvidIssued";
}

/// How notable an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Something happened as it should.
    Normal,
    /// Something needs attention.
    Warning,
}

/// One event to publish: reason, a sentence, and the action that led to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// How notable.
    pub severity: Severity,
    /// One of [`reasons`].
    pub reason: &'static str,
    /// What happened, in a sentence.
    pub message: String,
    /// The action taken, e.g. `Sign`, `Renew`.
    pub action: &'static str,
}

impl Note {
    /// A normal event.
    pub fn normal(reason: &'static str, action: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Normal,
            reason,
            message: message.into(),
            action,
        }
    }

    /// A warning.
    pub fn warning(reason: &'static str, action: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            reason,
            message: message.into(),
            action,
        }
    }

    /// Whether this is news given the problems the object's status already reports: a
    /// warning about a problem already reported was published when it first appeared, and
    /// is not published again at every reconcile (that would be a write at steady state).
    pub fn is_news(&self, reported_problems: &[String]) -> bool {
        self.severity == Severity::Normal || !reported_problems.contains(&self.message)
    }
}

/// What identifies an Event's series: the object, and everything the Event says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    severity: Severity,
    reason: &'static str,
    action: &'static str,
    note: String,
}

/// An Event published, and its series so far.
#[derive(Clone, Debug)]
struct Published {
    name: String,
    namespace: String,
    count: i32,
    last: Instant,
}

/// Publishes events as one reporting controller.
#[derive(Clone)]
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    published: Arc<Mutex<HashMap<SeriesKey, Published>>>,
}

impl Events {
    /// A publisher for `controller` (`federator` or `cluster-agent`) through `client`;
    /// `instance` names the reporting instance (the controller's name without one).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            published: Arc::default(),
        }
    }

    /// Publishes `note` about `object`; logs (and otherwise ignores) a failure.
    pub async fn publish(&self, object: &ObjectReference, note: &Note) {
        if let Err(error) = self.try_publish(object, note).await {
            warn!(reason = note.reason, %error, "cannot publish an event");
        }
    }

    async fn try_publish(&self, object: &ObjectReference, note: &Note) -> kube::Result<()> {
        // The API caps a note at 1 kB.
        let mut message = note.message.clone();
        if message.len() > 1000 {
            let mut cut = 1000;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let key = SeriesKey {
            regarding: (
                object.uid.clone(),
                object.kind.clone(),
                object.namespace.clone(),
                object.name.clone(),
            ),
            severity: note.severity,
            reason: note.reason,
            action: note.action,
            note: message.clone(),
        };
        let now = Instant::now();
        let known = {
            let mut published = self
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            published.retain(|_, p| now.duration_since(p.last) < SERIES_TTL);
            published.get(&key).cloned()
        };
        let time = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let published = match known {
            Some(p) => {
                let api: Api<Event> = Api::namespaced(self.client.clone(), &p.namespace);
                let series = EventSeries {
                    count: p.count + 1,
                    last_observed_time: time,
                };
                let patch = serde_json::json!({ "series": series });
                api.patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Published {
                    count: p.count + 1,
                    last: now,
                    ..p
                }
            }
            None => {
                let namespace = object
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_owned());
                let event = Event {
                    metadata: ObjectMeta {
                        // A name prefix may end in `-`, not `.`.
                        generate_name: Some(format!(
                            "{}-",
                            object.name.as_deref().unwrap_or(&self.controller)
                        )),
                        namespace: Some(namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    action: Some(note.action.to_owned()),
                    reason: Some(note.reason.to_owned()),
                    note: Some(message),
                    event_time: Some(time),
                    regarding: Some(object.clone()),
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    type_: Some(
                        match note.severity {
                            Severity::Normal => "Normal",
                            Severity::Warning => "Warning",
                        }
                        .to_owned(),
                    ),
                    ..Event::default()
                };
                let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
                let created = api.create(&PostParams::default(), &event).await?;
                Published {
                    name: created.metadata.name.unwrap_or_default(),
                    namespace,
                    count: 1,
                    last: now,
                }
            }
        };
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, published);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_problem_is_news_once() {
        let w = Note::warning(reasons::CSR_REFUSED, "Sign", "refused: why");
        assert!(w.is_news(&[]));
        assert!(!w.is_news(&["refused: why".to_owned()]));
        let n = Note::normal(reasons::CSR_SIGNED, "Sign", "refused: why");
        assert!(
            n.is_news(&["refused: why".to_owned()]),
            "normal events always are"
        );
    }
}
