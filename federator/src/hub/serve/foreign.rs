//! The foreign trust domain controller: a kube-runtime `Controller` on the
//! [`ForeignTrustDomain`]s. One reconcile fetches the domain's bundle endpoint
//! ([`crate::hub::foreign::fetch`]), decides the status ([`plan::foreign::after_fetch`]:
//! the last good roots are kept when a fetch fails), writes it when it differs, records an
//! event on a change, and comes back after the bundle's refresh hint (or with backoff after a
//! failure). The federation controller watches the same objects and hands their last good
//! roots to every member.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use federator_api::foreign::ForeignTrustDomain;
use federator_api::names;
use federator_api::plumbing;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::{BACKOFF, Shared};
use crate::hub::plan::foreign::{self as plan, Outcome};
use crate::{Error, Result};

struct Context {
    shared: Arc<Shared>,
    /// Failed fetches in a row, per object.
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs the controller until the hub's watch ends.
pub async fn run(shared: Arc<Shared>) -> Result<()> {
    let api: Api<ForeignTrustDomain> = Api::namespaced(shared.client.clone(), names::NAMESPACE);
    let ctx = Arc::new(Context {
        shared,
        failures: Mutex::new(HashMap::new()),
    });
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(kube::runtime::controller::Error::QueueError(e)) = result {
                warn!(error = %e, "watch on the ForeignTrustDomains failed; retrying with backoff");
            }
        })
        .await;
    Err(Error::Unreachable(
        "the ForeignTrustDomain watch ended".into(),
    ))
}

fn error_policy(_d: Arc<ForeignTrustDomain>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(%error, "foreign trust domain sync failed");
    Action::requeue(BACKOFF.start * 5)
}

async fn reconcile(d: Arc<ForeignTrustDomain>, ctx: Arc<Context>) -> Result<Action> {
    let name = d.name_any();
    let last_roots = d.status.as_ref().map_or("", |s| s.roots_pem.as_str());
    let outcome = crate::hub::foreign::fetch(&d.spec, last_roots).await;
    let failures = {
        let mut f = super::lock(&ctx.failures);
        let n = f.entry(name.clone()).or_default();
        *n = match outcome {
            Outcome::Fetched(_) => 0,
            Outcome::Failed { .. } => n.saturating_add(1),
        };
        *n
    };
    if let Outcome::Failed { message, .. } = &outcome {
        warn!(trust_domain = %d.spec.trust_domain, error = %message, "foreign bundle fetch failed");
    }
    let (status, note) = plan::after_fetch(
        &d,
        &outcome,
        OffsetDateTime::now_utc(),
        ctx.shared.opts.heartbeat,
    );
    if d.status.as_ref() != Some(&status) {
        let api: Api<ForeignTrustDomain> =
            Api::namespaced(ctx.shared.client.clone(), names::NAMESPACE);
        plumbing::apply_status(&api, &name, &status, names::HUB_FIELD_MANAGER)
            .await
            .map_err(|e| Error::kube("update a ForeignTrustDomain status", e))?;
    }
    if let Some(note) = note {
        info!(trust_domain = %d.spec.trust_domain, "{}", note.message);
        ctx.shared.events.publish(&d.object_ref(&()), &note).await;
    }
    Ok(Action::requeue(plan::next_fetch(&status, failures)))
}
