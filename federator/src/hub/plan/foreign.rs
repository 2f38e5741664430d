//! Pure decisions about foreign trust domains ([`ForeignTrustDomain`]): what a fetch of a
//! bundle endpoint makes of the status (the last good roots are kept when a fetch fails or is
//! refused, and the status says the domain is stale), when to fetch next (the bundle's refresh
//! hint, with backoff after failures), and what members get (the last good roots of every
//! domain: in the mesh config always, in `root-cert.pem` with `meshWide`).

use std::time::Duration;

use federator_api::condition::{self, reasons, types};
use federator_api::duration::GoDuration;
use federator_api::events::{Note, reasons as events};
use federator_api::fields;
use federator_api::foreign::{ForeignTrustDomain, ForeignTrustDomainStatus};
use federator_api::hub::RootStatus;
use federator_api::member::BundleEntry;
use federator_core::cert::{self, CertInfo};
use federator_core::spiffe::ForeignBundle;
use time::OffsetDateTime;

/// How a fetch ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A valid bundle for the domain.
    Fetched(ForeignBundle),
    /// No bundle: the endpoint could not be reached, was not authenticated, or served
    /// something that is not an acceptable bundle.
    Failed {
        /// The `Ready` condition's reason (`EndpointUnreachable`, `EndpointNotAuthenticated`,
        /// `BundleRefused`).
        reason: &'static str,
        /// What went wrong, for the status.
        message: String,
    },
}

/// Used when a bundle has no refresh hint (SPIRE's default too).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Fetches are at least this far apart, whatever the hint says.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
/// And at most this far.
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);

/// When to fetch again: after a success, the bundle's refresh hint (bounded); after
/// `failures` failures in a row, 5 s doubling, at most the refresh interval (SPIFFE
/// Federation §6.2: no aggressive retries; the last good bundle is kept meanwhile).
pub fn next_fetch(status: &ForeignTrustDomainStatus, failures: u32) -> Duration {
    let refresh = status
        .refresh_hint
        .as_ref()
        .map_or(DEFAULT_REFRESH, |d| d.get())
        .clamp(MIN_REFRESH, MAX_REFRESH);
    if failures == 0 {
        return refresh;
    }
    let backoff = Duration::from_secs(5u64 << failures.saturating_sub(1).min(12));
    backoff.min(refresh)
}

/// The status after a fetch, and the event to record, if any. `heartbeat`: how stale
/// `lastFetched` may get before an unchanged bundle rewrites it.
pub fn after_fetch(
    ftd: &ForeignTrustDomain,
    outcome: &Outcome,
    now: OffsetDateTime,
    heartbeat: Duration,
) -> (ForeignTrustDomainStatus, Option<Note>) {
    let previous = ftd.status.clone().unwrap_or_default();
    let generation = ftd.metadata.generation;
    let mut s = previous.clone();
    s.observed_generation = generation.unwrap_or_default();
    let td = &ftd.spec.trust_domain;
    match outcome {
        Outcome::Fetched(b) => {
            let roots_pem = cert::to_pem(b.x509_authorities.iter().map(Vec::as_slice));
            let changed = roots_pem != previous.roots_pem
                || b.sequence.and_then(|q| i64::try_from(q).ok()) != previous.sequence;
            s.roots_pem = roots_pem;
            s.roots = b
                .x509_authorities
                .iter()
                .filter_map(|der| {
                    let info = CertInfo::from_der(der).ok()?;
                    Some(RootStatus {
                        trust_domain: td.clone(),
                        sha256: info.sha256,
                        subject: info.subject,
                        not_after: fields::parse_time(&info.not_after)?,
                    })
                })
                .collect();
            s.jwt_authorities = i64::try_from(b.jwt_authorities.len()).unwrap_or(i64::MAX);
            s.sequence = b.sequence.and_then(|q| i64::try_from(q).ok());
            s.refresh_hint = b.refresh_hint.map(GoDuration::from);
            s.notes = b.skipped.clone();
            s.stale = false;
            s.error = String::new();
            s.failing_since = None;
            if changed || previous.last_changed.is_none() {
                s.last_changed = Some(fields::time(now));
            }
            let fetched_long_ago = previous
                .last_fetched
                .as_ref()
                .is_none_or(|t| (now - fields::offset(t)).unsigned_abs() >= heartbeat);
            if changed || fetched_long_ago || previous.stale {
                s.last_fetched = Some(fields::time(now));
            }
            s.conditions = condition::set(
                &previous.conditions,
                types::READY,
                true,
                reasons::FETCHED,
                &format!(
                    "{} X.509 root(s), sequence {}",
                    b.x509_authorities.len(),
                    s.sequence.map_or("unset".to_owned(), |q| q.to_string())
                ),
                &fields::time(now),
                generation,
            );
            let note = if previous.stale {
                Some(Note::normal(
                    events::FOREIGN_BUNDLE_RECOVERED,
                    "Fetch",
                    format!(
                        "the bundle endpoint of {td} answers again: {} root(s)",
                        b.x509_authorities.len()
                    ),
                ))
            } else if changed {
                Some(Note::normal(
                    events::FOREIGN_BUNDLE_UPDATED,
                    "Fetch",
                    format!(
                        "{td}: {} root(s), sequence {}",
                        b.x509_authorities.len(),
                        s.sequence.map_or("unset".to_owned(), |q| q.to_string())
                    ),
                ))
            } else {
                None
            };
            (s, note)
        }
        Outcome::Failed { reason, message } => {
            let kept = if previous.roots_pem.is_empty() {
                "no roots are distributed for it yet".to_owned()
            } else {
                format!(
                    "members keep its last good roots ({} root(s), sequence {})",
                    previous.roots.len(),
                    previous
                        .sequence
                        .map_or("unset".to_owned(), |q| q.to_string())
                )
            };
            s.stale = true;
            s.error = message.clone();
            if previous.failing_since.is_none() {
                s.failing_since = Some(fields::time(now));
            }
            s.conditions = condition::set(
                &previous.conditions,
                types::READY,
                false,
                reason,
                &format!("stale: {message}; {kept}"),
                &fields::time(now),
                generation,
            );
            let note = (previous.error != *message).then(|| {
                Note::warning(
                    events::FOREIGN_BUNDLE_FAILED,
                    "Fetch",
                    format!("{td}: {message}; {kept}"),
                )
            });
            (s, note)
        }
    }
}

/// What members get of the foreign trust domains: the last good roots of each (in name
/// order), and those trusted mesh-wide.
pub fn distribution(
    domains: &[std::sync::Arc<ForeignTrustDomain>],
) -> (Vec<BundleEntry>, Vec<BundleEntry>) {
    let mut sorted: Vec<&ForeignTrustDomain> = domains.iter().map(AsRef::as_ref).collect();
    sorted.sort_by(|a, b| a.spec.trust_domain.cmp(&b.spec.trust_domain));
    let mut all = Vec::new();
    let mut mesh_wide = Vec::new();
    for d in sorted {
        let Some(status) = &d.status else { continue };
        if status.roots_pem.is_empty() {
            continue;
        }
        let entry = BundleEntry {
            trust_domain: d.spec.trust_domain.clone(),
            roots_pem: status.roots_pem.clone(),
        };
        if d.spec.mesh_wide {
            mesh_wide.push(entry.clone());
        }
        all.push(entry);
    }
    (all, mesh_wide)
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_api::foreign::{BundleEndpointRef, EndpointProfile, ForeignTrustDomainSpec};
    use federator_core::identity::TrustDomain;

    fn t(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn root(cn: &str) -> Vec<u8> {
        let opts = federator_core::ca::RootOptions {
            common_name: cn.into(),
            ..Default::default()
        };
        federator_core::ca::IssuingCa::create_root(&opts, OffsetDateTime::now_utc())
            .unwrap()
            .cert_der()
            .to_vec()
    }

    fn ftd(status: Option<ForeignTrustDomainStatus>) -> ForeignTrustDomain {
        let mut d = ForeignTrustDomain::new(
            "spire.example",
            ForeignTrustDomainSpec {
                trust_domain: "spire.example".into(),
                bundle_endpoint: BundleEndpointRef {
                    url: "https://spire.example:8443".into(),
                    profile: EndpointProfile::HttpsWeb,
                    endpoint_spiffe_id: String::new(),
                },
                bootstrap_pem: String::new(),
                mesh_wide: false,
            },
        );
        d.metadata.generation = Some(1);
        d.status = status;
        d
    }

    fn fetched(roots: &[Vec<u8>], seq: u64) -> Outcome {
        Outcome::Fetched(ForeignBundle {
            trust_domain: TrustDomain::new("spire.example").unwrap(),
            x509_authorities: roots.to_vec(),
            jwt_authorities: vec!["k1".into()],
            sequence: Some(seq),
            refresh_hint: Some(Duration::from_secs(60)),
            skipped: vec![],
        })
    }

    #[test]
    fn a_failure_keeps_the_last_good_roots_and_says_stale_until_it_recovers() {
        let hb = Duration::from_secs(300);
        let r = root("spire root");
        let (good, note) = after_fetch(
            &ftd(None),
            &fetched(std::slice::from_ref(&r), 3),
            t("2026-01-01T00:00:00Z"),
            hb,
        );
        assert!(!good.stale && good.error.is_empty());
        assert_eq!(good.roots.len(), 1);
        assert_eq!(good.sequence, Some(3));
        assert_eq!(good.jwt_authorities, 1);
        assert_eq!(note.unwrap().reason, events::FOREIGN_BUNDLE_UPDATED);
        assert_eq!(next_fetch(&good, 0), Duration::from_secs(60));

        let down = Outcome::Failed {
            reason: reasons::ENDPOINT_UNREACHABLE,
            message: "connection refused".into(),
        };
        let (stale, note) = after_fetch(
            &ftd(Some(good.clone())),
            &down,
            t("2026-01-01T00:01:00Z"),
            hb,
        );
        assert!(stale.stale);
        assert_eq!(stale.roots_pem, good.roots_pem, "the last good roots stay");
        assert_eq!(
            stale.failing_since,
            Some(fields::time(t("2026-01-01T00:01:00Z")))
        );
        let ready = stale
            .conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::ENDPOINT_UNREACHABLE)
        );
        assert!(ready.message.contains("stale: connection refused; members keep its last good roots (1 root(s), sequence 3)"), "{}", ready.message);
        assert!(note.is_some());
        // The same failure again: no new event, the start of the failures kept, backoff grows.
        let (again, note) = after_fetch(
            &ftd(Some(stale.clone())),
            &down,
            t("2026-01-01T00:02:00Z"),
            hb,
        );
        assert!(note.is_none());
        assert_eq!(again.failing_since, stale.failing_since);
        assert_eq!(next_fetch(&again, 1), Duration::from_secs(5));
        assert_eq!(next_fetch(&again, 4), Duration::from_secs(40));
        assert_eq!(
            next_fetch(&again, 30),
            Duration::from_secs(60),
            "never slower than the hint"
        );

        let (back, note) = after_fetch(
            &ftd(Some(again)),
            &fetched(&[r], 3),
            t("2026-01-01T00:03:00Z"),
            hb,
        );
        assert!(!back.stale && back.failing_since.is_none() && back.error.is_empty());
        assert_eq!(note.unwrap().reason, events::FOREIGN_BUNDLE_RECOVERED);
    }

    #[test]
    fn an_unchanged_bundle_rewrites_nothing_until_the_heartbeat() {
        let hb = Duration::from_secs(300);
        let r = root("spire root");
        let (s1, _) = after_fetch(
            &ftd(None),
            &fetched(std::slice::from_ref(&r), 3),
            t("2026-01-01T00:00:00Z"),
            hb,
        );
        let (s2, note) = after_fetch(
            &ftd(Some(s1.clone())),
            &fetched(std::slice::from_ref(&r), 3),
            t("2026-01-01T00:01:00Z"),
            hb,
        );
        assert_eq!(s1, s2, "no write");
        assert!(note.is_none());
        let (s3, _) = after_fetch(
            &ftd(Some(s2)),
            &fetched(&[r], 3),
            t("2026-01-01T00:05:00Z"),
            hb,
        );
        assert_ne!(s3.last_fetched, s1.last_fetched);
        assert_eq!(s3.last_changed, s1.last_changed);
    }

    #[test]
    fn members_get_the_last_good_roots_and_mesh_wide_ones_for_root_cert() {
        let r = root("spire root");
        let (good, _) = after_fetch(
            &ftd(None),
            &fetched(&[r], 1),
            OffsetDateTime::now_utc(),
            Duration::from_secs(1),
        );
        let never = ftd(None);
        let mut wide = ftd(Some(good.clone()));
        wide.spec.trust_domain = "a.example".into();
        wide.spec.mesh_wide = true;
        let (all, mesh_wide) = distribution(&[
            std::sync::Arc::new(ftd(Some(good.clone()))),
            std::sync::Arc::new(never),
            std::sync::Arc::new(wide),
        ]);
        assert_eq!(
            all.iter()
                .map(|e| e.trust_domain.as_str())
                .collect::<Vec<_>>(),
            ["a.example", "spire.example"],
            "a domain never fetched gives nothing"
        );
        assert_eq!(mesh_wide.len(), 1);
        assert_eq!(mesh_wide[0].trust_domain, "a.example");
        assert_eq!(all[1].roots_pem, good.roots_pem);
    }
}
