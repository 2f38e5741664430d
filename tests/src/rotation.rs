//! One step every backend's rotation test runs in every phase: hold a rotation there, SIGKILL
//! the hub, restart it, check it resumed where it was, abort, and check every member is back
//! on the old root with trust between every pair throughout.

use std::time::{Duration, Instant};

use federator_api::hub::{RotationPhase, RotationStatus};

use crate::{Federation, follow_rotation, wait_for};

/// What a rotation drains in the phases held before draining (the abort drains too).
const SHORT_DRAIN: &str = "3s";
/// The drain when the rotation is held in `draining`: long enough for a hub restart and an
/// abort before it ends, even on a loaded machine.
const HOLD_DRAIN: Duration = Duration::from_secs(15);

/// A rotation started for [`sigkill_and_abort_in`].
pub struct Rotation<'a> {
    /// `federator rotate-root` arguments that start it, without `--drain`.
    pub start: &'a [&'a str],
    /// Extra `rotate-root --abort` arguments (`--trust-domain TD` for `local`).
    pub abort: &'a [&'a str],
    /// The rotation's `trustDomain` (`*` for `import` and `vault`).
    pub scope: &'a str,
    /// Every member and its trust domain.
    pub members: &'a [(&'a str, &'a str)],
    /// The member whose agent is frozen to hold `trusting-new-root` or `re-signing`; in the
    /// rotated scope.
    pub frozen: &'a str,
    /// The SHA-256 of the root every member is on before, and returns to.
    pub old_root: &'a str,
}

/// Starts `rotation`, holds it in `phase`, SIGKILLs and restarts the hub there, checks the new
/// process found the same phase with the same start (and drain deadline), aborts, and waits
/// until the rotation has gone and every member in its scope chains to the old root again. Trust between
/// every pair of members is checked throughout. Returns the aborted rotation's new root.
///
/// `trusting-new-root` is held by freezing the agent of `frozen` before the rotation starts;
/// `re-signing` by freezing it right after it trusted both roots (before it publishes a CSR
/// for the new one), once the others are re-signed; `draining` by a drain of 15 s.
pub async fn sigkill_and_abort_in(
    fed: &mut Federation,
    phase: RotationPhase,
    rotation: &Rotation<'_>,
) -> String {
    let Rotation {
        start,
        abort,
        scope,
        members,
        frozen,
        old_root,
    } = *rotation;
    let names: Vec<&str> = members
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| in_scope(members, m, scope))
        .collect();
    let others: Vec<&str> = names.iter().copied().filter(|m| *m != frozen).collect();
    let drain = match phase {
        RotationPhase::Draining => format!("{}s", HOLD_DRAIN.as_secs()),
        _ => SHORT_DRAIN.to_owned(),
    };
    if phase == RotationPhase::TrustingNewRoot {
        fed.agent_process(frozen).pause();
    }
    let mut args = vec!["rotate-root"];
    args.extend(start);
    args.extend(["--drain", &drain]);
    fed.federator_ok(&args);
    let started = Instant::now();
    if phase == RotationPhase::ReSigning {
        wait_for(
            &format!("{frozen} to trust the new root"),
            Duration::from_secs(30),
            || async {
                let r = current(fed).await?;
                let waits = r.waiting_for.iter().any(|w| w.member == frozen);
                (r.phase != RotationPhase::TrustingNewRoot || !waits).then_some(())
            },
        )
        .await;
        fed.agent_process(frozen).pause();
    }
    let held = wait_for(
        &format!("the rotation to be held in {phase}"),
        Duration::from_secs(30),
        || async {
            let r = current(fed).await?;
            let only_frozen =
                r.waiting_for.iter().all(|w| w.member == frozen) && !r.waiting_for.is_empty();
            (r.phase == phase && (phase == RotationPhase::Draining || only_frozen)).then_some(r)
        },
    )
    .await;
    let new_root = held.sha256.clone();
    assert_ne!(new_root, old_root, "{held:?}");
    if phase == RotationPhase::ReSigning {
        wait_chains_to(fed, &others, &new_root, "re-signed under the new root").await;
    }

    fed.serve.as_mut().unwrap().kill();
    fed.start_serve(&[]);
    let series = format!(r#"federator_rotation_phase{{trust_domain="{scope}",phase="{phase}"}} 1"#);
    wait_for(
        &format!("the restarted hub to find the rotation in {phase}"),
        Duration::from_secs(30),
        || async { fed.hub_metrics().await?.contains(&series).then_some(()) },
    )
    .await;
    let resumed = current(fed).await.unwrap();
    assert_eq!(
        (
            resumed.phase,
            &resumed.phase_since,
            &resumed.removes_old_root_at
        ),
        (held.phase, &held.phase_since, &held.removes_old_root_at),
        "resumed where it was"
    );
    if phase == RotationPhase::Draining {
        assert!(
            started.elapsed() < HOLD_DRAIN,
            "the hub restart took the whole drain ({:?}): nothing left to abort",
            started.elapsed()
        );
    }

    let mut args = vec!["rotate-root", "--abort"];
    args.extend(abort);
    let out = fed.federator_ok(&args);
    assert!(out.contains(old_root), "{out}");
    if phase != RotationPhase::Draining {
        let why = format!("back under the old root while {frozen} is frozen");
        wait_chains_to(fed, &others, old_root, &why).await;
        fed.agent_process(frozen).resume();
    }
    let (phases, _) = follow_rotation(fed, members, None).await;
    assert!(phases.contains("draining"), "{phases:?}");
    fed.wait_all_on_root(&names, old_root).await;
    new_root
}

/// Waits until the cluster CA of each of `members` chains to `root` (`why` says what that means).
async fn wait_chains_to(fed: &Federation, members: &[&str], root: &str, why: &str) {
    for m in members {
        wait_for(&format!("{m} {why}"), Duration::from_secs(30), || async {
            (fed.chain_root(m).await == root).then_some(())
        })
        .await;
    }
}

async fn current(fed: &Federation) -> Option<RotationStatus> {
    fed.federation_status().await.rotations.into_iter().next()
}

fn in_scope(members: &[(&str, &str)], member: &str, scope: &str) -> bool {
    scope == "*" || members.iter().any(|(m, td)| *m == member && *td == scope)
}
