//! Step 4: whether istiod can hot-reload a `cacerts` change or must be restarted, for the
//! istiod version the Deployment runs.
//!
//! istiod (see `docs/istio-plugin-ca.md`) watches its `cacerts` directory only when it started
//! in plug-in mode, i.e. with all four files present and no `istio-generated` key. In plug-in
//! mode it ignores a whole update whose `root-cert.pem` bytes changed unless it runs with
//! `ISTIO_MULTIROOT_MESH=true` and its version's comparison accepts the change: ≤ 1.29 wants
//! the old text inside the new one or the reverse, 1.30+ one certificate set inside the other
//! ([`federator_core::istiod::IstiodRules::root_update`]; docs/istiod.md cites the source).
//! So a restart is needed exactly when:
//!
//! * `cacerts` did not exist, was incomplete or held `istio-generated` before the write
//!   (istiod runs its self-signed CA, with no file watcher, or failed to start), or
//! * `root-cert.pem` changed in a way the running version ignores (no multi-root, or a change
//!   its comparison refuses: roots added and removed at once, and on ≤ 1.29 also a root
//!   dropped from the middle or the same roots in another order).
//!
//! An unknown version gets the strictest rules of every version. What the Deployment says
//! about istiod (version, multi-root, workload TTL) is read by
//! [`federator_core::istiod::IstiodFacts`], which a `doctor` can use too.

use std::collections::BTreeMap;

use federator_api::member::{IstiodState, IstiodStatus};
use federator_core::bundle::BundleChange;
use federator_core::cacerts::{FILES, ISTIO_GENERATED, ROOT_CERT};
use federator_core::cert;
use federator_core::istiod::{IstiodFacts, MULTIROOT_ENV, RootUpdate, root_fingerprints};

/// `absent`: no istiod Deployment.
pub const ABSENT: IstiodState = IstiodState::Absent;
/// `hot-reload`: istiod picks the change up itself.
pub const HOT_RELOAD: IstiodState = IstiodState::HotReload;
/// `restarted`: the agent asked for a rolling restart.
pub const RESTARTED: IstiodState = IstiodState::Restarted;

/// The restart decision for one `cacerts` write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartDecision {
    /// Whether istiod must be restarted to take the new material.
    pub restart: bool,
    /// Why, in a sentence.
    pub reason: String,
}

/// Decides, for a write replacing `before` (the Secret's data; `None`: it did not exist) by
/// material whose `root-cert.pem` is `new_root_pem`, for the istiod of `facts`.
pub fn restart_decision(
    before: Option<&BTreeMap<String, Vec<u8>>>,
    new_root_pem: &str,
    facts: &IstiodFacts,
) -> RestartDecision {
    let restart = |reason: String| RestartDecision {
        restart: true,
        reason,
    };
    let hot = |reason: String| RestartDecision {
        restart: false,
        reason,
    };
    let Some(before) = before else {
        return restart(
            "cacerts did not exist: istiod runs its self-signed CA and does not watch for a plug-in CA".into(),
        );
    };
    if before.contains_key(ISTIO_GENERATED) {
        return restart(format!(
            "cacerts held the {ISTIO_GENERATED} key: istiod used it as its self-signed CA store and does not watch it"
        ));
    }
    if let Some(missing) = FILES
        .iter()
        .find(|f| before.get(**f).is_none_or(|v| v.is_empty()))
    {
        let what = if facts.rules().partial_bundle_is_fatal() {
            "istiod failed to start (an incomplete signing CA bundle is fatal)"
        } else {
            "istiod did not start in plug-in mode"
        };
        return restart(format!(
            "cacerts was incomplete ({missing} missing): {what}"
        ));
    }
    let old_root = before.get(ROOT_CERT).map(Vec::as_slice).unwrap_or_default();
    let rules = facts.rules();
    let version = facts.version_text();
    match rules.root_update(facts.multi_root, old_root, new_root_pem.as_bytes()) {
        RootUpdate::Unchanged => {
            hot("root-cert.pem unchanged: istiod hot-reloads the cluster CA".into())
        }
        RootUpdate::Ignored(why) => restart(format!("{why}; a restart loads it")),
        RootUpdate::Accepted => {
            let old = cert::parse_pem_certificates(old_root, ROOT_CERT).unwrap_or_default();
            let new = cert::parse_pem_certificates(new_root_pem.as_bytes(), ROOT_CERT)
                .unwrap_or_default();
            let how = match BundleChange::between(&old, &new) {
                BundleChange::PureAdd { added } => {
                    format!("gains {} root(s) (pure add)", added.len())
                }
                BundleChange::PureRemove { removed } => {
                    format!("loses {} root(s) (pure remove)", removed.len())
                }
                BundleChange::Unchanged | BundleChange::Mixed { .. } => {
                    "holds the same roots in other bytes".to_owned()
                }
            };
            hot(format!(
                "root-cert.pem {how}: istiod {version} hot-reloads it ({MULTIROOT_ENV}=true, {})",
                rules.root_comparison()
            ))
        }
    }
}

/// What istiod publishes in its `istio-ca-root-cert` ConfigMap in `istio-system`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// Its `root-cert.pem`.
    Roots(Vec<u8>),
    /// No such ConfigMap (or key) yet: istiod has not published anything.
    Nothing,
    /// The agent may not read it (a Role from before this check; `federator join` again
    /// updates it), or reading failed: what istiod took is unknown.
    Unreadable(String),
}

/// The bundle generation istiod publishes: `bundle_generation` when its `istio-ca-root-cert`
/// holds exactly the roots of `desired_root_pem` (what `spec.bundle` makes `root-cert.pem`),
/// else the generation last seen (`previous`, 0 if none). `None` when it cannot be read: the
/// hub then counts the bundle in `cacerts` alone, as it does without an istiod.
pub fn published_generation(
    published: &Published,
    desired_root_pem: Option<&str>,
    bundle_generation: i64,
    previous: Option<i64>,
) -> Option<i64> {
    let matches = match (published, desired_root_pem) {
        (Published::Unreadable(_), _) => return None,
        (Published::Roots(p), Some(d)) => {
            let p = root_fingerprints(p);
            p.is_some() && p == root_fingerprints(d.as_bytes())
        }
        _ => false,
    };
    Some(if matches {
        bundle_generation
    } else {
        previous.unwrap_or(0).min(bundle_generation)
    })
}

/// What happened to istiod in one reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IstiodEvent {
    /// Nothing was written and nothing restarted.
    Quiet,
    /// `cacerts` was written; istiod hot-reloads it.
    HotReload(String),
    /// A restart was requested (now or to complete an interrupted one).
    Restarted(String),
}

/// What the agent read of istiod in one reconcile, besides what it did.
#[derive(Clone, Debug, Default)]
pub struct IstiodObservation {
    /// The Deployment's facts; `None`: no istiod Deployment.
    pub facts: Option<IstiodFacts>,
    /// [`published_generation`].
    pub published_generation: Option<i64>,
    /// [`federator_core::istiod::leaf_outlives_ca_warning`] and the like.
    pub warnings: Vec<String>,
}

/// `status.istiod`, given what was observed, what happened and the previous report. At steady
/// state it repeats the previous report, so the status does not change.
pub fn istiod_status(
    observed: &IstiodObservation,
    event: &IstiodEvent,
    previous: Option<&IstiodStatus>,
) -> IstiodStatus {
    let Some(facts) = &observed.facts else {
        return IstiodStatus {
            state: ABSENT,
            multi_root: false,
            version: None,
            published_bundle_generation: None,
            message: "no Deployment istio-system/istiod: nothing to restart; istiod loads cacerts when it starts".into(),
            warnings: Vec::new(),
        };
    };
    let (state, message) = match event {
        IstiodEvent::Restarted(why) => (RESTARTED, format!("restart requested: {why}")),
        IstiodEvent::HotReload(why) => (HOT_RELOAD, why.clone()),
        IstiodEvent::Quiet => match previous {
            Some(p) if p.state != ABSENT => (p.state, p.message.clone()),
            _ => (
                HOT_RELOAD,
                "cacerts is up to date: istiod loads it at startup and hot-reloads later changes it can take".into(),
            ),
        },
    };
    IstiodStatus {
        state,
        multi_root: facts.multi_root,
        version: facts.version.clone(),
        published_bundle_generation: observed.published_generation,
        message,
        warnings: observed.warnings.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::testutil::root_ca;
    use federator_core::istiod::{DEFAULT_WORKLOAD_TTL, IstiodVersion};

    fn files(root_pem: &str) -> BTreeMap<String, Vec<u8>> {
        FILES
            .iter()
            .map(|f| {
                let v = if *f == ROOT_CERT { root_pem } else { "x" };
                ((*f).to_owned(), v.as_bytes().to_vec())
            })
            .collect()
    }

    fn facts(version: Option<&str>, multi_root: bool) -> IstiodFacts {
        IstiodFacts {
            multi_root,
            version: version.map(|v| IstiodVersion::parse(v).unwrap()),
            workload_ttl: DEFAULT_WORKLOAD_TTL,
        }
    }

    #[test]
    fn restarts_when_istiod_is_not_in_plug_in_mode() {
        let a = root_ca("a").cert_pem();
        for f in [
            facts(Some("1.31.1"), true),
            facts(Some("1.26.8"), false),
            facts(None, true),
        ] {
            assert!(restart_decision(None, &a, &f).restart);
            let mut generated = files(&a);
            generated.insert(ISTIO_GENERATED.into(), b"".to_vec());
            assert!(restart_decision(Some(&generated), &a, &f).restart);
            let mut partial = files(&a);
            partial.remove("ca-key.pem");
            let d = restart_decision(Some(&partial), &a, &f);
            assert!(
                d.restart && d.reason.contains("ca-key.pem") && d.reason.contains("fatal"),
                "{d:?}"
            );
        }
    }

    #[test]
    fn root_changes_follow_the_running_version() {
        let a = root_ca("a").cert_pem();
        let b = root_ca("b").cert_pem();
        let c = root_ca("c").cert_pem();
        let (ab, abc, ac, ba) = (
            format!("{a}{b}"),
            format!("{a}{b}{c}"),
            format!("{a}{c}"),
            format!("{b}{a}"),
        );
        let old = facts(Some("1.29.2"), true);
        let new = facts(Some("1.31.1"), true);
        let unknown = facts(None, true);
        let d = |before: &str, after: &str, f: &IstiodFacts| {
            restart_decision(Some(&files(before)), after, f)
        };
        for f in [&old, &new, &unknown] {
            // Same bytes: hot reload, with or without multi-root.
            assert!(!d(&a, &a, f).restart);
            assert!(
                !d(
                    &a,
                    &a,
                    &IstiodFacts {
                        multi_root: false,
                        ..f.clone()
                    }
                )
                .restart
            );
            // Appending a root and dropping the first or last one: every version.
            let add = d(&ab, &abc, f);
            assert!(!add.restart && add.reason.contains("pure add"), "{add:?}");
            assert!(!d(&abc, &format!("{b}{c}"), f).restart);
            assert!(!d(&abc, &ab, f).restart);
            // Without multi-root: a restart.
            let off = IstiodFacts {
                multi_root: false,
                ..f.clone()
            };
            let r = d(&a, &ab, &off);
            assert!(
                r.restart && r.reason.contains("ISTIO_MULTIROOT_MESH"),
                "{r:?}"
            );
            // Adding and removing at once: a restart everywhere.
            assert!(d(&ab, &ac, f).restart);
            // Garbage before.
            assert!(d("junk", &a, f).restart);
        }
        // Dropping a middle root, inserting one in the middle, reordering: hot on 1.31.1 only.
        for (before, after) in [(&abc, &ac), (&ac, &abc), (&ab, &ba)] {
            assert!(
                !d(before, after, &new).restart,
                "1.31.1 {before} -> {after}"
            );
            let r = d(before, after, &old);
            assert!(
                r.restart && r.reason.contains("1.29.2") && r.reason.contains("substring"),
                "{r:?}"
            );
            assert!(d(before, after, &unknown).restart);
        }
    }

    #[test]
    fn published_generation_needs_the_same_roots() {
        let a = root_ca("a").cert_pem();
        let b = root_ca("b").cert_pem();
        let ab = format!("{a}{b}");
        let ba = format!("{b}{a}");
        let roots = |pem: &str| Published::Roots(pem.as_bytes().to_vec());
        // The same roots in another order: istiod publishes this generation.
        assert_eq!(
            published_generation(&roots(&ba), Some(&ab), 5, Some(3)),
            Some(5)
        );
        // Other roots: the last generation seen.
        assert_eq!(
            published_generation(&roots(&a), Some(&ab), 5, Some(3)),
            Some(3)
        );
        assert_eq!(
            published_generation(&Published::Nothing, Some(&ab), 5, None),
            Some(0)
        );
        assert_eq!(
            published_generation(&roots("junk"), Some(&ab), 5, Some(3)),
            Some(3)
        );
        assert_eq!(published_generation(&roots(&ab), None, 5, Some(3)), Some(3));
        // A generation from an older spec never exceeds the current one.
        assert_eq!(
            published_generation(&Published::Nothing, Some(&ab), 2, Some(3)),
            Some(2)
        );
        // Unreadable: unknown, not 0 (the hub would wait forever).
        assert_eq!(
            published_generation(&Published::Unreadable("403".into()), Some(&ab), 5, Some(3)),
            None
        );
    }

    #[test]
    fn status_is_stable_when_nothing_happens() {
        let absent = IstiodObservation::default();
        assert_eq!(
            istiod_status(&absent, &IstiodEvent::Quiet, None).state,
            ABSENT
        );
        assert_eq!(
            istiod_status(&absent, &IstiodEvent::Quiet, None).published_bundle_generation,
            None
        );
        let seen = |multi: bool, published: i64| IstiodObservation {
            facts: Some(facts(Some("1.27.9"), multi)),
            published_generation: Some(published),
            warnings: Vec::new(),
        };
        let r = istiod_status(&seen(true, 1), &IstiodEvent::Restarted("why".into()), None);
        assert_eq!(
            (r.state, r.multi_root, r.version.clone()),
            (RESTARTED, true, IstiodVersion::parse("1.27.9"))
        );
        assert_eq!(r.published_bundle_generation, Some(1));
        let again = istiod_status(&seen(true, 1), &IstiodEvent::Quiet, Some(&r));
        assert_eq!(again, r);
        let published = istiod_status(&seen(true, 2), &IstiodEvent::Quiet, Some(&r));
        assert_eq!(
            (published.state, published.published_bundle_generation),
            (RESTARTED, Some(2))
        );
        let flag_off = istiod_status(&seen(false, 1), &IstiodEvent::Quiet, Some(&r));
        assert_eq!((flag_off.state, flag_off.multi_root), (RESTARTED, false));
        let was_absent = istiod_status(&absent, &IstiodEvent::Quiet, None);
        let appeared = istiod_status(&seen(false, 0), &IstiodEvent::Quiet, Some(&was_absent));
        assert_eq!(appeared.state, HOT_RELOAD);
        let hot = istiod_status(
            &seen(true, 2),
            &IstiodEvent::HotReload("x".into()),
            Some(&r),
        );
        assert_eq!((hot.state, hot.message.as_str()), (HOT_RELOAD, "x"));
    }
}
