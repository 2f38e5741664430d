//! Step 4: whether istiod can hot-reload a `cacerts` change or must be restarted.
//!
//! istiod (see `docs/istio-plugin-ca.md`) watches its `cacerts` directory
//! only when it started in plug-in mode, i.e. with all four files present and no
//! `istio-generated` key. In plug-in mode it ignores a whole update whose `root-cert.pem`
//! bytes changed unless it runs with `ISTIO_MULTIROOT_MESH=true` and the root set only grew or
//! only shrank. So a restart is needed exactly when:
//!
//! * `cacerts` did not exist, was incomplete or held `istio-generated` before the write
//!   (istiod runs its self-signed CA, with no file watcher), or
//! * `root-cert.pem` changed and istiod lacks `ISTIO_MULTIROOT_MESH=true`, or the change
//!   adds and removes roots at once.

use std::collections::BTreeMap;

use federator_api::member::{IstiodState, IstiodStatus};
use federator_core::bundle::BundleChange;
use federator_core::cacerts::{FILES, ISTIO_GENERATED, ROOT_CERT};
use federator_core::cert;

/// `absent`: no istiod Deployment.
pub const ABSENT: IstiodState = IstiodState::Absent;
/// `hot-reload`: istiod picks the change up itself.
pub const HOT_RELOAD: IstiodState = IstiodState::HotReload;
/// `restarted`: the agent asked for a rolling restart.
pub const RESTARTED: IstiodState = IstiodState::Restarted;

/// The environment variable that lets istiod hot-reload root changes.
pub const MULTIROOT_ENV: &str = "ISTIO_MULTIROOT_MESH";

/// Whether an environment value is true the way Go's `strconv.ParseBool` reads it (istiod's
/// `env.Register` booleans).
pub fn go_bool(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Whether any of the `(name, value)` environment entries of istiod's containers sets
/// `ISTIO_MULTIROOT_MESH` to true.
pub fn multi_root<'a>(env: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> bool {
    env.into_iter()
        .any(|(name, value)| name == MULTIROOT_ENV && value.is_some_and(go_bool))
}

/// The restart decision for one `cacerts` write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartDecision {
    /// Whether istiod must be restarted to take the new material.
    pub restart: bool,
    /// Why, in a sentence.
    pub reason: String,
}

/// Decides, for a write replacing `before` (the Secret's data; `None`: it did not exist) by
/// material whose `root-cert.pem` is `new_root_pem`.
pub fn restart_decision(
    before: Option<&BTreeMap<String, Vec<u8>>>,
    new_root_pem: &str,
    multi_root: bool,
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
        return restart(format!(
            "cacerts was incomplete ({missing} missing): istiod did not start in plug-in mode"
        ));
    }
    let old_root = before.get(ROOT_CERT).map(Vec::as_slice).unwrap_or_default();
    if old_root == new_root_pem.as_bytes() {
        return hot("root-cert.pem unchanged: istiod hot-reloads the cluster CA".into());
    }
    if !multi_root {
        return restart(format!(
            "root-cert.pem changed and istiod runs without {MULTIROOT_ENV}=true, so it would ignore the update"
        ));
    }
    let Ok(old) = cert::parse_pem_certificates(old_root, ROOT_CERT) else {
        return restart(
            "the old root-cert.pem was unreadable: istiod cannot take the new roots as a pure add or remove".into(),
        );
    };
    let new = cert::parse_pem_certificates(new_root_pem.as_bytes(), ROOT_CERT).unwrap_or_default();
    match BundleChange::between(&old, &new) {
        BundleChange::Mixed { added, removed } => restart(format!(
            "root-cert.pem adds {} and removes {} root(s) at once, which istiod does not hot-reload",
            added.len(),
            removed.len()
        )),
        BundleChange::PureAdd { added } => hot(format!(
            "root-cert.pem gains {} root(s) (pure add): istiod hot-reloads it ({MULTIROOT_ENV}=true)",
            added.len()
        )),
        BundleChange::PureRemove { removed } => hot(format!(
            "root-cert.pem loses {} root(s) (pure remove): istiod hot-reloads it ({MULTIROOT_ENV}=true)",
            removed.len()
        )),
        BundleChange::Unchanged => hot(format!(
            "root-cert.pem holds the same roots in other bytes: istiod hot-reloads it ({MULTIROOT_ENV}=true)"
        )),
    }
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

/// `status.istiod`, given the Deployment (`None`: absent; `Some(multi_root)`), what happened
/// and the previous report. At steady state it repeats the previous report, so the status
/// does not change.
pub fn istiod_status(
    deployment: Option<bool>,
    event: &IstiodEvent,
    previous: Option<&IstiodStatus>,
) -> IstiodStatus {
    let Some(multi_root) = deployment else {
        return IstiodStatus {
            state: ABSENT,
            multi_root: false,
            message: "no Deployment istio-system/istiod: nothing to restart; istiod loads cacerts when it starts".into(),
        };
    };
    let (state, message) = match event {
        IstiodEvent::Restarted(why) => (RESTARTED, format!("restart requested: {why}")),
        IstiodEvent::HotReload(why) => (HOT_RELOAD, why.clone()),
        IstiodEvent::Quiet => match previous {
            Some(p) if p.state != ABSENT => {
                return IstiodStatus {
                    multi_root,
                    ..p.clone()
                };
            }
            _ => (
                HOT_RELOAD,
                "cacerts is up to date: istiod loads it at startup and hot-reloads later changes it can take".into(),
            ),
        },
    };
    IstiodStatus {
        state,
        multi_root,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::testutil::root_ca;

    fn files(root_pem: &str) -> BTreeMap<String, Vec<u8>> {
        FILES
            .iter()
            .map(|f| {
                let v = if *f == ROOT_CERT { root_pem } else { "x" };
                ((*f).to_owned(), v.as_bytes().to_vec())
            })
            .collect()
    }

    #[test]
    fn reads_the_multiroot_flag_like_go() {
        assert!(multi_root([("ISTIO_MULTIROOT_MESH", Some("true"))]));
        assert!(multi_root([
            ("A", None),
            ("ISTIO_MULTIROOT_MESH", Some("1"))
        ]));
        assert!(!multi_root([("ISTIO_MULTIROOT_MESH", Some("false"))]));
        assert!(!multi_root([("ISTIO_MULTIROOT_MESH", Some("yes"))]));
        assert!(!multi_root([("ISTIO_MULTIROOT_MESH", None)]));
        assert!(!multi_root([]));
    }

    #[test]
    fn restarts_when_istiod_is_not_in_plug_in_mode() {
        let a = root_ca("a").cert_pem();
        for multi in [false, true] {
            assert!(restart_decision(None, &a, multi).restart);
            let mut generated = files(&a);
            generated.insert(ISTIO_GENERATED.into(), b"".to_vec());
            assert!(restart_decision(Some(&generated), &a, multi).restart);
            let mut partial = files(&a);
            partial.remove("ca-key.pem");
            let d = restart_decision(Some(&partial), &a, multi);
            assert!(d.restart && d.reason.contains("ca-key.pem"), "{d:?}");
        }
    }

    #[test]
    fn root_changes_need_multiroot_and_a_pure_add_or_remove() {
        let a = root_ca("a").cert_pem();
        let b = root_ca("b").cert_pem();
        let c = root_ca("c").cert_pem();
        let ab = format!("{a}{b}");
        let ac = format!("{a}{c}");
        // Same bytes: hot reload, with or without multi-root.
        for multi in [false, true] {
            assert!(!restart_decision(Some(&files(&a)), &a, multi).restart);
        }
        // Pure add / pure remove.
        assert!(restart_decision(Some(&files(&a)), &ab, false).restart);
        assert!(!restart_decision(Some(&files(&a)), &ab, true).restart);
        assert!(!restart_decision(Some(&files(&ab)), &a, true).restart);
        assert!(restart_decision(Some(&files(&ab)), &a, false).restart);
        // Mixed.
        let d = restart_decision(Some(&files(&ab)), &ac, true);
        assert!(d.restart && d.reason.contains("at once"), "{d:?}");
        // Garbage before.
        assert!(restart_decision(Some(&files("junk")), &a, true).restart);
        // Same set, other bytes (order).
        let ba = format!("{b}{a}");
        assert!(!restart_decision(Some(&files(&ab)), &ba, true).restart);
        assert!(restart_decision(Some(&files(&ab)), &ba, false).restart);
    }

    #[test]
    fn status_is_stable_when_nothing_happens() {
        assert_eq!(istiod_status(None, &IstiodEvent::Quiet, None).state, ABSENT);
        let r = istiod_status(Some(true), &IstiodEvent::Restarted("why".into()), None);
        assert_eq!((r.state, r.multi_root), (RESTARTED, true));
        let again = istiod_status(Some(true), &IstiodEvent::Quiet, Some(&r));
        assert_eq!(again, r);
        let flag_off = istiod_status(Some(false), &IstiodEvent::Quiet, Some(&r));
        assert_eq!((flag_off.state, flag_off.multi_root), (RESTARTED, false));
        let absent = istiod_status(None, &IstiodEvent::Quiet, None);
        let appeared = istiod_status(Some(false), &IstiodEvent::Quiet, Some(&absent));
        assert_eq!(appeared.state, HOT_RELOAD);
        let hot = istiod_status(Some(true), &IstiodEvent::HotReload("x".into()), Some(&r));
        assert_eq!((hot.state, hot.message.as_str()), (HOT_RELOAD, "x"));
    }
}
