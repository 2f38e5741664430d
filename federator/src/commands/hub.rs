//! `federator init|join|leave|status|serve`: parse, connect, call [`crate::hub`], print.

use std::fmt::Write as _;
use std::path::Path;

use federator_core::ca::RootOptions;

use crate::cli::{
    AgentModeArg, InitArgs, JoinClusterArgs, LeaveClusterArgs, OutputFormat, RootKind, ServeArgs,
    StatusArgs,
};
use crate::hub::join::{AgentMode, JoinOptions};
use crate::hub::kube::{self as k, ClientSource};
use crate::hub::{init as hub_init, join as hub_join, serve as hub_serve, status as hub_status};
use crate::{Error, Result, fsutil, output};
use time::OffsetDateTime;

async fn hub_client(source: &ClientSource) -> Result<kube::Client> {
    let config = k::config_from(source).await?;
    let server = k::server_of(&config);
    let client = k::client(&config, "hub")?;
    k::check_reachable(&client, &server, "hub cluster").await?;
    Ok(client)
}

/// Reads a CA to import (`what`: "CA", "new CA") from its certificate file (the CA, then its
/// chain) and key file, and checks here that they are one CA that can sign cluster CAs, so
/// that an error names the files.
fn read_ca(cert: &Path, key: &Path, what: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let cert_pem = fsutil::read_input(
        cert,
        &format!("{what} certificate"),
        &format!("pass the PEM file of the {what} (and its chain)"),
    )?;
    let key_pem = fsutil::read_input(
        key,
        &format!("{what} key"),
        &format!("pass the PEM file of the {what}'s key"),
    )?;
    federator_core::ca::IssuingCa::import(&cert_pem, &key_pem, OffsetDateTime::now_utc()).map_err(
        |e| {
            Error::Usage(format!(
                "{} and {}: not a {what} federator can sign with: {e}",
                cert.display(),
                key.display()
            ))
        },
    )?;
    Ok((cert_pem, key_pem))
}

/// `federator init`
pub async fn init(source: &ClientSource, args: Box<InitArgs>) -> Result<()> {
    let args = *args;
    // Before the Vault settings are read: whatever they are, the combination is refused.
    if args.constrain_to_trust_domain && args.root == RootKind::Vault {
        return Err(Error::Usage(hub_init::VAULT_CONSTRAINT.into()));
    }
    let root = match args.root {
        RootKind::Local => hub_init::RootChoice::Local {
            trust_domain: args.trust_domain,
            options: RootOptions {
                key_algorithm: args.root_key_algorithm,
                ttl: args.root_ttl,
                organization: args.org,
                ..RootOptions::default()
            },
        },
        RootKind::Vault => hub_init::RootChoice::Vault {
            config: vault_config(&args.vault)?,
            bootstrap: args.vault.vault_bootstrap,
        },
        RootKind::Import => {
            let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
                return Err(Error::Usage("--root import needs --cert and --key".into()));
            };
            let (cert_pem, key_pem) = read_ca(cert, key, "CA")?;
            hub_init::RootChoice::Import { cert_pem, key_pem }
        }
    };
    let hub = hub_client(source).await?;
    let report = hub_init::init(
        &hub,
        hub_init::InitOptions {
            root,
            cluster_ca_ttl: args.cluster_ca_ttl,
            renew_at_percent: args.renew_at_percent,
            key_algorithm: args.key_algorithm,
            constrain_to_trust_domain: args.constrain_to_trust_domain,
        },
    )
    .await?;
    let mut out = String::new();
    for line in &report.bootstrap {
        let _ = writeln!(out, "vault: {line}");
    }
    out += if report.created {
        "federation initialised\n"
    } else {
        "federation already initialised; nothing changed\n"
    };
    for (td, fp) in &report.root_fingerprints {
        let _ = writeln!(out, "  root for {td}: sha256 {fp}");
    }
    out += "next: federator join cluster NAME --kubeconfig FILE [--trust-domain TD]\n";
    print!("{out}");
    Ok(())
}

/// `federator join cluster`
pub async fn join(source: &ClientSource, args: JoinClusterArgs) -> Result<()> {
    k::read_kubeconfig_file(&args.kubeconfig)?;
    let hub = hub_client(source).await?;
    let opts = JoinOptions {
        name: args.name.clone(),
        member: ClientSource {
            kubeconfig: Some(args.kubeconfig.clone()),
            context: args.context.clone(),
        },
        trust_domain: args.trust_domain.clone(),
        network: args.network.clone(),
        agent: match args.agent_mode {
            AgentModeArg::InCluster => AgentMode::InCluster {
                image: args.agent_image.clone(),
            },
            AgentModeArg::External => AgentMode::External {
                kubeconfig_out: args.agent_kubeconfig_out.clone(),
            },
        },
        hub_token_ttl: args.hub_token_ttl,
        agent_wait: args.wait,
        remote_secrets: args.remote_secrets,
        server: args.server.clone(),
    };
    let report = hub_join::join(&hub, &opts).await?;
    let mut out = format!(
        "cluster {} ({}) {} with trust domain {}\n",
        args.name,
        report.server,
        if report.registered {
            "joined"
        } else {
            "is a member"
        },
        args.trust_domain
    );
    if let Some(after) = report.agent_available_after {
        let _ = writeln!(
            out,
            "  agent Deployment {}/{} is available ({:.1}s, image {})",
            federator_api::names::NAMESPACE,
            federator_api::names::AGENT_DEPLOYMENT,
            after.as_secs_f64(),
            args.agent_image
        );
    }
    if report.new_credential {
        out += "  stored a new least-privilege credential for the hub\n";
    }
    if let Some(cmd) = report.agent_command {
        let _ = writeln!(out, "  start the agent: {cmd}");
    }
    print!("{out}");
    Ok(())
}

/// `federator rotate-root`: starts a rotation for the hub's backend, or aborts one.
pub async fn rotate_root(source: &ClientSource, args: crate::cli::RotateRootArgs) -> Result<()> {
    use federator_api::hub::RootType;
    let hub = hub_client(source).await?;
    let store = crate::hub::trust::store::RootStore::new(hub.clone());
    let fed = crate::hub::kube::federation(&hub).await?;
    let backend = fed.spec.root.type_;
    // A target for another backend is named first: it says more than a missing flag.
    let target = if args.cert.is_some() || args.key.is_some() {
        Some((RootType::Import, "--cert and --key rotate an imported CA"))
    } else if args.vault_issuer.is_some() || args.vault_bootstrap {
        Some((
            RootType::Vault,
            "--vault-issuer and --vault-bootstrap rotate a Vault issuer",
        ))
    } else {
        None
    };
    if let Some((wants, flags)) = target
        && wants != backend
    {
        return Err(Error::Usage(format!(
            "{flags}, but this hub's root backend is {backend}{}",
            if backend == RootType::Local {
                ": rotate a trust domain's root with --trust-domain TD"
            } else {
                ""
            }
        )));
    }
    let what = match (&args.trust_domain, backend) {
        (Some(td), RootType::Local) => format!("the root of {td}"),
        (None, RootType::Local) => {
            return Err(Error::Usage(
                "the local backend has a root per trust domain: name it with --trust-domain".into(),
            ));
        }
        (Some(td), _) => {
            return Err(Error::Usage(format!(
                "the {backend} backend has one issuer for every trust domain: leave out --trust-domain {td}"
            )));
        }
        (None, _) => "the issuer of every trust domain".to_owned(),
    };
    if args.abort {
        let fp = store.abort_rotation(args.trust_domain.as_ref()).await?;
        println!(
            "aborting the rotation of {what}: the original root (sha256 {fp}) signs again\n  `federator serve` moves every member back to it with both roots trusted, and drops the abandoned root once the rotation's drain period has passed after that; follow it with `federator status`"
        );
        return Ok(());
    }
    let must_outlive = must_outlive(&hub, &fed).await?;
    let fp = match backend {
        RootType::Local => {
            if args.cert.is_some() || args.vault_issuer.is_some() || args.vault_bootstrap {
                return Err(Error::Usage(
                    "the local backend makes its new roots itself: --cert, --vault-issuer and --vault-bootstrap are for the import and vault backends".into(),
                ));
            }
            let td = args.trust_domain.as_ref().ok_or_else(|| {
                Error::Usage("--trust-domain is needed with the local backend".into())
            })?;
            store
                .start_rotation(
                    td,
                    &crate::hub::trust::roots::local_root_options(&fed.spec),
                    args.drain,
                )
                .await?
        }
        RootType::Import => {
            let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
                return Err(Error::Usage(
                    "the import backend rotates to the CA you give: pass --cert NEW.pem (the CA, then its chain up to its root) and --key NEW.key".into(),
                ));
            };
            let (cert_pem, key_pem) = read_ca(cert, key, "new CA")?;
            store
                .start_import_rotation(&cert_pem, &key_pem, args.drain, must_outlive)
                .await?
        }
        RootType::Vault => rotate_vault(&store, &fed, &args, must_outlive).await?,
    };
    println!(
        "rotating {what}: new root sha256 {fp}\n  `federator serve` now has every member trust both roots, moves the members to the new root, and drops the old root {} after that; follow it with `federator status` (abort with `federator rotate-root --abort`)",
        federator_core::duration::format(args.drain)
    );
    Ok(())
}

/// `federator trust add|remove`
pub async fn trust(source: &ClientSource, cmd: crate::cli::TrustCommand) -> Result<()> {
    use crate::cli::{ProfileArg, TrustCommand};
    use crate::hub::foreign;
    let hub = hub_client(source).await?;
    match cmd {
        TrustCommand::Add(a) => {
            let bootstrap = match &a.bootstrap_bundle {
                Some(p) => Some(crate::fsutil::read_input(
                    p,
                    "--bootstrap-bundle",
                    "pass the file holding the domain's SPIFFE bundle or PEM roots",
                )?),
                None => None,
            };
            let req = foreign::AddRequest {
                trust_domain: a.domain.clone(),
                url: a.bundle_endpoint.clone(),
                profile: match a.profile {
                    ProfileArg::HttpsWeb => federator_api::foreign::EndpointProfile::HttpsWeb,
                    ProfileArg::HttpsSpiffe => federator_api::foreign::EndpointProfile::HttpsSpiffe,
                },
                endpoint_spiffe_id: a.endpoint_spiffe_id.clone(),
                bootstrap,
                mesh_wide: a.mesh_wide,
            };
            let added = foreign::add(&hub, &req, !a.no_fetch).await?;
            if let Some(b) = &added.fetched {
                println!(
                    "fetched {}: {} root(s){}",
                    a.bundle_endpoint,
                    b.x509_authorities.len(),
                    b.sequence
                        .map(|s| format!(", sequence {s}"))
                        .unwrap_or_default()
                );
            }
            println!(
                "trusting {} (ForeignTrustDomain {}): `federator serve` fetches {} ({}) and gives every member its roots{}; follow it with `federator status`",
                a.domain,
                added.name,
                a.bundle_endpoint,
                req.profile,
                if a.mesh_wide {
                    ", also in root-cert.pem"
                } else {
                    " in the mesh config"
                }
            );
        }
        TrustCommand::Remove(a) => {
            foreign::remove(&hub, &a.domain).await?;
            println!(
                "no longer trusting {}: `federator serve` removes its roots from every member",
                a.domain
            );
        }
    }
    Ok(())
}

/// Until when a new issuer must live: a cluster CA signed now (the Federation's lifetime),
/// and every member's installed one.
async fn must_outlive(
    hub: &kube::Client,
    fed: &federator_api::hub::Federation,
) -> Result<time::OffsetDateTime> {
    use federator_api::hub::MemberCluster;
    let now = time::OffsetDateTime::now_utc();
    let ttl =
        time::Duration::try_from(fed.spec.cluster_ca_ttl.get()).unwrap_or(time::Duration::MAX);
    let mut until = now.checked_add(ttl).unwrap_or(now);
    let members: kube::Api<MemberCluster> =
        kube::Api::namespaced(hub.clone(), federator_api::names::NAMESPACE);
    let list = members
        .list(&Default::default())
        .await
        .map_err(|e| Error::kube("list MemberClusters", e))?;
    for m in list.items {
        if let Some(t) = m.status.and_then(|s| s.ca_not_after) {
            until = until.max(federator_api::fields::offset(&t));
        }
    }
    Ok(until)
}

/// The Vault side of `rotate-root`: the new issuer (named, or generated by Vault), checked
/// with the hub's own credential before anything is recorded.
async fn rotate_vault(
    store: &crate::hub::trust::store::RootStore,
    fed: &federator_api::hub::Federation,
    args: &crate::cli::RotateRootArgs,
    must_outlive: time::OffsetDateTime,
) -> Result<String> {
    use crate::hub::plan::rotation::{TargetRules, check_target};
    use crate::hub::trust::roots::{Rotation, VaultRotation};
    use crate::hub::trust::vault::{VaultSigner, generate_issuer};
    use crate::hub::trust::vault_config::VaultAuth;
    if args.cert.is_some() {
        return Err(Error::Usage(
            "--cert and --key rotate an imported CA; with the vault backend pass --vault-issuer NEW or --vault-bootstrap".into(),
        ));
    }
    let (mut cfg, rotating) = store.vault_config(&fed.spec).await?;
    match (&mut cfg.auth, &args.vault_jwt_file) {
        (VaultAuth::Kubernetes { jwt_file, .. }, Some(f)) => {
            jwt_file.clone_from(f);
        }
        (VaultAuth::Kubernetes { jwt_file, .. }, None) if !jwt_file.exists() => {
            return Err(Error::Usage(format!(
                "the hub logs in to Vault with Kubernetes auth, reading its ServiceAccount token from {} (in its Pod), which does not exist here: pass --vault-jwt-file with a token of that ServiceAccount (e.g. `kubectl create token SA -n federator-system > token`)",
                jwt_file.display()
            )));
        }
        (_, Some(_)) => {
            return Err(Error::Usage(
                "--vault-jwt-file is for a hub that logs in to Vault with Kubernetes auth; this one does not".into(),
            ));
        }
        _ => {}
    }
    if rotating.is_some() {
        return Err(Error::Refused(
            "the issuer is already rotating; see `federator status` (or `federator rotate-root --abort`)".into(),
        ));
    }
    let current = VaultSigner::connect(cfg.clone()).await?;
    let now = time::OffsetDateTime::now_utc();
    let issuer = match (&args.vault_issuer, args.vault_bootstrap) {
        (Some(issuer), false) => issuer.clone(),
        (None, true) => {
            let name = format!("federator-{}", now.unix_timestamp());
            let id = generate_issuer(&cfg, &name).await?;
            println!(
                "vault: generated a new root in {}/ as issuer {name} ({id}); the key stays in Vault",
                cfg.mount
            );
            id
        }
        _ => {
            return Err(Error::Usage(
                "the vault backend rotates to another issuer of the PKI mount: pass --vault-issuer NAME-OR-ID, or --vault-bootstrap to have Vault generate one".into(),
            ));
        }
    };
    let target = VaultSigner::connect(crate::hub::trust::vault_config::VaultConfig {
        issuer: Some(issuer.clone()),
        ..cfg.clone()
    })
    .await?;
    let fp = check_target(
        target.issuer_chain(),
        &TargetRules {
            current_root: current.root_der(),
            must_outlive,
            now,
        },
    )?;
    store
        .start_vault_rotation(&VaultRotation {
            rotation: Rotation::new(args.drain, now),
            issuer,
            previous_issuer: cfg.issuer.clone().unwrap_or_default(),
            root_pem: federator_core::cert::to_pem([target.root_der()]),
            previous_root_pem: federator_core::cert::to_pem([current.root_der()]),
        })
        .await?;
    Ok(fp)
}

/// `federator renew cluster`: asks `serve` to re-issue the member's cluster CA (the
/// `MemberCluster` annotation names the serial to replace) and, with `--now`, waits until
/// the member runs on the new one.
pub async fn renew(source: &ClientSource, args: crate::cli::RenewClusterArgs) -> Result<()> {
    use federator_api::hub::MemberCluster;
    use federator_api::names;
    let hub = hub_client(source).await?;
    let api: kube::Api<MemberCluster> = kube::Api::namespaced(hub.clone(), names::NAMESPACE);
    let name = args.name.as_str();
    let member = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube("read the MemberCluster", e))?
        .ok_or_else(|| Error::Usage(format!("{name} is not a member (see `federator status`)")))?;
    let serial = member
        .status
        .as_ref()
        .map(|s| s.ca_serial.clone())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::Refused(format!(
                "{name} has no cluster CA installed yet: nothing to re-issue (see `federator status`)"
            ))
        })?;
    let patch = serde_json::json!({
        "metadata": { "annotations": { names::REISSUE_ANNOTATION: serial } }
    });
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::kube("annotate the MemberCluster", e))?;
    println!(
        "re-issue of {name}'s cluster CA {serial} requested: its agent makes a fresh key, `federator serve` signs it, and the old CA stops being used"
    );
    if !args.now {
        println!("  follow it with `federator status` (the serial and age change)");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let deadline = started + args.timeout;
    loop {
        let m = api
            .get(name)
            .await
            .map_err(|e| Error::kube("read the MemberCluster", e))?;
        let s = m.status.unwrap_or_default();
        let installed = federator_api::condition::is_true(
            &s.conditions,
            federator_api::condition::types::INSTALLED,
        );
        if installed
            && !s.ca_serial.is_empty()
            && !crate::hub::plan::member::same_serial(&s.ca_serial, &serial)
        {
            println!(
                "  {name} runs on cluster CA {} since {:.1}s (the key was made in the member)",
                s.ca_serial,
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::ProblemsFound(format!(
                "{name} does not run on a re-issued CA after {}: {}",
                federator_core::duration::format(args.timeout),
                if s.problems.is_empty() {
                    "is `federator serve` running, and the member's agent?".to_owned()
                } else {
                    s.problems.join("; ")
                }
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// `federator leave cluster`
pub async fn leave(source: &ClientSource, args: LeaveClusterArgs) -> Result<()> {
    let hub = hub_client(source).await?;
    let admin = args.kubeconfig.as_ref().map(|k| ClientSource {
        kubeconfig: Some(k.clone()),
        context: args.context.clone(),
    });
    let report = hub_join::leave(&hub, &args.name, admin.as_ref()).await?;
    if let Some((td, sharing)) = &report.shared_trust_domain {
        if args.rotate_trust_domain {
            let fp = crate::hub::trust::store::RootStore::new(hub.clone())
                .start_rotation(td, &local_root_options(&hub).await?, args.rotation_drain)
                .await?;
            println!(
                "rotating the root of {td} (new root sha256 {fp}) so that {}'s CA is trusted nowhere once it completes",
                args.name
            );
        } else {
            eprintln!(
                "warning: {} shared trust domain {td} (and its root) with {}; its cluster CA stays trusted until it expires. Run `federator rotate-root --trust-domain {td}` to cut it off now.",
                args.name,
                sharing.join(", ")
            );
        }
    }
    let mut out = String::new();
    if report.was_member {
        let _ = writeln!(
            out,
            "cluster {} left the federation{}",
            args.name,
            if report.credential_revoked {
                "; the hub's credential in it is revoked"
            } else {
                ""
            }
        );
    } else {
        let _ = writeln!(
            out,
            "cluster {} was no member; cleaned up what join (or an interrupted leave) left",
            args.name
        );
    }
    for r in &report.removed {
        let _ = writeln!(out, "  removed {r}");
    }
    if !report.left_behind.is_empty() {
        let _ = writeln!(
            out,
            "  what join installed stays in the cluster (remove it with `federator leave cluster {} --kubeconfig ADMIN-KUBECONFIG`):",
            args.name
        );
        for l in &report.left_behind {
            let _ = writeln!(out, "    {l}");
        }
    }
    let ns = federator_api::names::ISTIO_NAMESPACE;
    match &report.cacerts {
        Some(c) => {
            let _ = writeln!(
                out,
                "  {ns}/cacerts stays in place: istiod in {} keeps issuing for {} with its cluster CA{}, and its workloads keep trusting the roots in its root-cert.pem ({}) until you replace cacerts; the other members stop trusting {} once `federator serve` removes its root{}",
                args.name,
                c.trust_domain,
                c.ca_not_after
                    .as_deref()
                    .map(|t| format!(" (valid until {t})"))
                    .unwrap_or_default(),
                c.trusts.join(", "),
                c.trust_domain,
                if report.shared_trust_domain.is_some() {
                    " — not while other members share it (see above)"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(out, "  {ns}/cacerts (if any) stays in place");
        }
    }
    print!("{out}");
    if let Some(w) = report.warning {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// The PEERS cell of `federator status`: how many peers the member's istiod discovers through
/// federator's remote secrets, and whether that is the hub's current set.
fn peers_cell(remote: Option<&federator_api::hub::MemberRemoteSecrets>) -> String {
    match remote {
        None => "-".into(),
        Some(r) => format!(
            "{}{}",
            r.peers.len(),
            if r.current { "" } else { " (updating)" }
        ),
    }
}

/// `federator status`
pub async fn status(source: &ClientSource, args: StatusArgs) -> Result<()> {
    let hub = hub_client(source).await?;
    if args.watch {
        return watch_status(&hub, &args).await;
    }
    let report = hub_status::status(&hub, args.stale_after).await?;
    print!("{}", render_status(&report, args.output)?);
    if report.healthy {
        Ok(())
    } else {
        let bad: Vec<&str> = report
            .clusters
            .iter()
            .filter(|c| !c.healthy)
            .map(|c| c.name.as_str())
            .collect();
        Err(Error::ProblemsFound(format!(
            "unhealthy: {}",
            bad.join(", ")
        )))
    }
}

/// `federator status --watch`: renders again whenever the Federation or a MemberCluster
/// changes (a watch on each, not polling), until Ctrl-C. A table is redrawn in place on a
/// terminal; json and yaml print one document per change (yaml separated by `---`). A burst of
/// changes (a reconcile touching several members) renders once; a change that alters nothing
/// shown renders nothing.
async fn watch_status(hub: &kube::Client, args: &StatusArgs) -> Result<()> {
    use std::io::{IsTerminal, Write};

    use federator_api::hub::{Federation, MemberCluster};
    use federator_api::{names, plumbing};
    use futures::{FutureExt, StreamExt};
    use kube::api::Api;
    use kube::runtime::watcher;

    let changes = futures::stream::select(
        plumbing::changes_of(
            watcher(
                Api::<Federation>::namespaced(hub.clone(), names::NAMESPACE),
                plumbing::by_name(names::FEDERATION),
            ),
            "the Federation".to_owned(),
        ),
        plumbing::changes_of(
            watcher(
                Api::<MemberCluster>::namespaced(hub.clone(), names::NAMESPACE),
                watcher::Config::default(),
            ),
            "the MemberClusters".to_owned(),
        ),
    );
    let mut changes = std::pin::pin!(changes);
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let report = hub_status::status(hub, args.stale_after).await?;
        let text = render_status(&report, args.output)?;
        if text != last {
            let mut out = std::io::stdout().lock();
            let separator = match args.output {
                OutputFormat::Table if terminal => "\x1b[H\x1b[2J",
                OutputFormat::Table if !last.is_empty() => "\n",
                OutputFormat::Yaml => "---\n",
                _ => "",
            };
            // A closed stdout (`| head`) ends the watch.
            if write!(out, "{separator}{text}")
                .and_then(|()| out.flush())
                .is_err()
            {
                return Ok(());
            }
            last = text;
        }
        tokio::select! {
            change = changes.next() => {
                if change.is_none() {
                    return Err(Error::Unreachable("the watch on the hub ended".into()));
                }
            }
            _ = &mut ctrl_c => return Ok(()),
        }
        // Coalesce a burst of changes into one rendering.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        while let Some(Some(())) = changes.next().now_or_never() {}
    }
}

/// `federator status` output.
fn render_status(report: &hub_status::StatusReport, output: OutputFormat) -> Result<String> {
    Ok(match output {
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = report
                .clusters
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.trust_domain.clone(),
                        if c.healthy { "yes".into() } else { "NO".into() },
                        c.ca_serial.chars().take(23).collect(),
                        c.ca_age.clone(),
                        c.ca_not_after.clone(),
                        c.bundle_generation_acknowledged.to_string(),
                        if c.istiod_version.is_empty() {
                            c.istiod.clone()
                        } else {
                            format!("{} ({})", c.istiod, c.istiod_version)
                        },
                        peers_cell(c.remote_secrets.as_ref()),
                        c.last_contact.clone(),
                        c.problems.join("; "),
                    ]
                })
                .collect();
            let mut s = format!(
                "root backend: {}   bundle generation: {}   roots: {}\n",
                report.root_backend,
                report.bundle_generation,
                report
                    .roots
                    .iter()
                    .map(|r| format!(
                        "{} ({}…)",
                        r.trust_domain,
                        &r.sha256[..12.min(r.sha256.len())]
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for r in &report.rotations {
                s += &format!(
                    "rotating {}{}: {}{}{}\n",
                    if r.trust_domain == "*" {
                        "the issuer of every trust domain"
                    } else {
                        &r.trust_domain
                    },
                    if r.aborted {
                        " (aborted: back to the original root)"
                    } else {
                        ""
                    },
                    r.phase,
                    match &r.phase_since {
                        None => String::new(),
                        Some(t) => format!(" since {}", t.0),
                    },
                    match &r.removes_old_root_at {
                        None => String::new(),
                        Some(t) => format!(" (old root removed at {})", t.0),
                    }
                );
                for w in &r.waiting_for {
                    s += &format!("  waiting for {w}\n");
                }
            }
            s += &output::table(
                &[
                    "CLUSTER",
                    "TRUST DOMAIN",
                    "HEALTHY",
                    "CA SERIAL",
                    "CA AGE",
                    "CA NOT AFTER",
                    "BUNDLE",
                    "ISTIOD",
                    "PEERS",
                    "LAST CONTACT",
                    "PROBLEMS",
                ],
                &rows,
            );
            if !report.foreign.is_empty() {
                let rows: Vec<Vec<String>> = report
                    .foreign
                    .iter()
                    .map(|f| {
                        vec![
                            f.trust_domain.clone(),
                            f.bundle_endpoint.clone(),
                            format!(
                                "{}{}",
                                f.profile,
                                if f.mesh_wide { ", mesh-wide" } else { "" }
                            ),
                            match (f.ready, f.stale) {
                                (true, _) => "yes".into(),
                                (false, true) => "STALE".into(),
                                (false, false) => "NO".into(),
                            },
                            f.roots.to_string(),
                            f.sequence.map(|q| q.to_string()).unwrap_or_default(),
                            f.last_fetched.clone(),
                            f.message.clone(),
                        ]
                    })
                    .collect();
                s += "\n";
                s += &output::table(
                    &[
                        "FOREIGN TRUST DOMAIN",
                        "BUNDLE ENDPOINT",
                        "PROFILE",
                        "FRESH",
                        "ROOTS",
                        "SEQUENCE",
                        "LAST FETCHED",
                        "PROBLEM",
                    ],
                    &rows,
                );
            }
            s
        }
        other => output::structured(report, other)?,
    })
}

/// `federator doctor`
pub async fn doctor(args: crate::cli::DoctorArgs) -> Result<()> {
    let config = k::config_from(&ClientSource {
        kubeconfig: Some(args.kubeconfig.clone()),
        context: args.context.clone(),
    })
    .await?;
    let server = k::server_of(&config);
    let client = k::client(&config, "cluster")?;
    k::check_reachable(&client, &server, "cluster").await?;
    let observed =
        crate::doctor::observe(&client, args.trust_domain.as_ref().map(|t| t.as_str())).await?;
    let findings = crate::doctor::diagnose(&observed, time::OffsetDateTime::now_utc());
    let text = match args.output {
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = findings
                .iter()
                .map(|f| {
                    vec![
                        match f.level {
                            crate::doctor::Level::Ok => "ok".into(),
                            crate::doctor::Level::Warning => "WARNING".into(),
                            crate::doctor::Level::Problem => "PROBLEM".into(),
                        },
                        f.subject.to_owned(),
                        f.message.clone(),
                    ]
                })
                .collect();
            format!(
                "cluster {server}\n{}",
                output::table(&["", "WHAT", "FINDING"], &rows)
            )
        }
        other => output::structured(
            &serde_json::json!({ "server": server, "findings": findings }),
            other,
        )?,
    };
    print!("{text}");
    let problems = findings
        .iter()
        .filter(|f| f.level == crate::doctor::Level::Problem)
        .count();
    if problems == 0 {
        Ok(())
    } else {
        Err(Error::ProblemsFound(format!("{problems} problem(s) found")))
    }
}

/// `federator bundle`
pub async fn bundle(source: &ClientSource, args: crate::cli::BundleArgs) -> Result<()> {
    let hub = hub_client(source).await?;
    let (mut bundle, generation) = crate::hub::bundle::current(&hub).await?;
    if let Some(td) = &args.trust_domain {
        let others: Vec<_> = bundle
            .trust_domains()
            .filter(|t| *t != td)
            .cloned()
            .collect();
        for t in others {
            bundle.remove_trust_domain(&t);
        }
        if bundle.is_empty() {
            return Err(Error::Usage(format!("no member is in trust domain {td}")));
        }
    }
    match args.format {
        crate::cli::BundleFormat::Pem => print!("{}", bundle.to_pem()),
        crate::cli::BundleFormat::Spiffe => {
            let mut map = std::collections::BTreeMap::new();
            for td in bundle.trust_domains() {
                map.insert(td.to_string(), bundle.spiffe_bundle(td, generation)?);
            }
            print!("{}", output::structured(&map, OutputFormat::Json)?);
        }
    }
    Ok(())
}

/// `federator serve`
pub async fn serve(source: &ClientSource, args: ServeArgs) -> Result<()> {
    args.check().map_err(Error::Usage)?;
    let hub = hub_client(source).await?;
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "federator".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    hub_serve::serve(
        hub,
        hub_serve::ServeOptions {
            leader_elect: args.leader_elect,
            identity,
            heartbeat: args.heartbeat,
            reader_token_ttl: args.reader_token_ttl,
            reader_token_renew_after: args.reader_token_renew_after,
            metrics_addr: args.metrics_addr,
            bundle_endpoint: args.bundle_endpoint_addr.map(|addr| {
                hub_serve::bundle_endpoint::BundleEndpointOptions {
                    addr,
                    serving: match (
                        args.bundle_endpoint_profile,
                        args.bundle_endpoint_spiffe_id
                            .as_deref()
                            .and_then(|id| federator_core::identity::SpiffeId::parse(id).ok()),
                    ) {
                        (crate::cli::ProfileArg::HttpsSpiffe, Some(id)) => {
                            hub_serve::bundle_endpoint::Serving::Spiffe {
                                id,
                                ttl: args.bundle_endpoint_svid_ttl,
                            }
                        }
                        // `check` made sure the files are there for https_web.
                        _ => hub_serve::bundle_endpoint::Serving::Web {
                            cert: args.bundle_endpoint_cert.clone().unwrap_or_default(),
                            key: args.bundle_endpoint_key.clone().unwrap_or_default(),
                        },
                    },
                    refresh_hint: args.bundle_refresh_hint,
                }
            }),
        },
    )
    .await
}

/// A secret from a file, else from an environment variable; never from a flag.
fn secret_from(file: Option<&std::path::Path>, env: &str, what: &str) -> Result<String> {
    if let Some(path) = file {
        let bytes = fsutil::read_input(path, what, "pass the file that holds it")?;
        return Ok(String::from_utf8_lossy(&bytes).trim().to_owned());
    }
    std::env::var(env)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::Usage(format!(
                "{what} missing: put it in a file (see --help) or in ${env}"
            ))
        })
}

fn vault_config(v: &crate::cli::VaultArgs) -> Result<crate::hub::trust::vault_config::VaultConfig> {
    use crate::cli::VaultAuthKind;
    use crate::hub::trust::vault_config::{VaultAuth, VaultConfig};
    let address = v
        .vault_addr
        .clone()
        .ok_or_else(|| Error::Usage("--root vault needs --vault-addr (or $VAULT_ADDR)".into()))?;
    let mount = |default: &str| v.vault_auth_mount.clone().unwrap_or_else(|| default.into());
    let needs = |value: &Option<String>, what: &str| {
        value
            .clone()
            .ok_or_else(|| Error::Usage(format!("--vault-auth {what}")))
    };
    let auth = match v.vault_auth {
        VaultAuthKind::Token => VaultAuth::Token {
            token: secret_from(
                v.vault_token_file.as_deref(),
                "VAULT_TOKEN",
                "the Vault token",
            )?
            .into(),
        },
        VaultAuthKind::Approle => VaultAuth::AppRole {
            mount: mount("approle"),
            role_id: needs(&v.vault_role_id, "approle needs --vault-role-id")?,
            secret_id: secret_from(
                v.vault_secret_id_file.as_deref(),
                "VAULT_SECRET_ID",
                "the AppRole secret ID",
            )?
            .into(),
        },
        VaultAuthKind::Kubernetes => VaultAuth::Kubernetes {
            mount: mount("kubernetes"),
            role: needs(&v.vault_role, "kubernetes needs --vault-role")?,
            jwt_file: v.vault_jwt_file.clone(),
        },
    };
    let ca_pem = match &v.vault_ca_file {
        Some(path) => Some(
            String::from_utf8_lossy(&fsutil::read_input(
                path,
                "Vault CA bundle",
                "pass a PEM file",
            )?)
            .into_owned(),
        ),
        None => None,
    };
    Ok(VaultConfig {
        address,
        mount: v.vault_mount.clone(),
        issuer: v.vault_issuer.clone(),
        namespace: v.vault_namespace.clone(),
        auth,
        ca_pem,
    })
}

/// The local backend's root settings recorded in the Federation.
async fn local_root_options(hub: &kube::Client) -> Result<RootOptions> {
    let fed = crate::hub::kube::federation(hub).await?;
    Ok(crate::hub::trust::roots::local_root_options(&fed.spec))
}
