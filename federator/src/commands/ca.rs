//! `federator ca init|issue|inspect`: the offline, file-based CA tools.
//!
//! A drop-in for Istio's `tools/certs` Makefiles: `ca init` makes a root, `ca issue` makes a
//! cluster's `cacerts` directory ready for
//! `kubectl create secret generic cacerts -n istio-system --from-file=DIR/NAME`, and
//! `ca inspect` checks such a directory the way istiod will load it. `--root` also reads a
//! tools/certs root directory (an RSA `root-key.pem` in PKCS#1 is fine).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use federator_core::bundle::TrustBundle;
use federator_core::ca::{IssuingCa, RootOptions};
use federator_core::cacerts::{self, CaCerts, Inspection};
use federator_core::cert::{self, CertInfo};
use federator_core::csr::{CsrInfo, generate_cluster_csr};
use federator_core::policy::{ClusterCaRequest, SigningPolicy};
use time::OffsetDateTime;

use crate::cli::{CaCommand, CaInitArgs, CaInspectArgs, CaIssueArgs, OutputFormat};
use crate::fsutil::{self, FileSpec};
use crate::output;
use crate::{Error, Result};

/// Root certificate file name, as in tools/certs.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// Root key file name, as in tools/certs.
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// Runs a `ca` subcommand.
pub fn run(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Init(args) => init(&args).map(|msg| print!("{msg}")),
        CaCommand::Issue(args) => issue(&args).map(|msg| print!("{msg}")),
        CaCommand::Inspect(args) => inspect(&args),
    }
}

/// `ca init`: returns the message to print.
pub fn init(args: &CaInitArgs) -> Result<String> {
    let opts = RootOptions {
        key_algorithm: args.key_algorithm,
        ttl: args.ttl,
        organization: args.org.clone(),
        common_name: args.common_name.clone(),
        path_len: args.path_len,
    };
    let root = IssuingCa::create_root(&opts, OffsetDateTime::now_utc())?;
    let mut files = BTreeMap::new();
    files.insert(ROOT_CERT_FILE.to_owned(), FileSpec::public(root.cert_pem()));
    files.insert(
        ROOT_KEY_FILE.to_owned(),
        FileSpec::secret(root.key().to_pkcs8_pem()),
    );
    fsutil::write_files_atomically(&args.out, &files, false)?;
    let info = root.info()?;
    Ok(format!(
        "root CA written to {dir}/{ROOT_CERT_FILE} and {dir}/{ROOT_KEY_FILE} (0600)\n  subject:  {}\n  key:      {}\n  expires:  {}\n  sha256:   {}\nnext: federator ca issue --root {dir} --cluster NAME --out DIR\n",
        info.subject,
        info.key,
        info.not_after,
        info.sha256,
        dir = args.out.display(),
    ))
}

/// Loads the issuing CA from a root directory.
pub fn load_root(dir: &Path) -> Result<IssuingCa> {
    let hint = format!(
        "create a root with `federator ca init --out {}` or point --root at the directory holding {ROOT_CERT_FILE} and {ROOT_KEY_FILE}",
        dir.display()
    );
    let cert = fsutil::read_input(&dir.join(ROOT_CERT_FILE), "root certificate", &hint)?;
    let key = fsutil::read_input(&dir.join(ROOT_KEY_FILE), "root key", &hint)?;
    IssuingCa::import(&cert, &key, OffsetDateTime::now_utc())
        .map_err(|e| Error::Usage(format!("{}: {e}", dir.display())))
}

/// `ca issue`: returns the message to print.
pub fn issue(args: &CaIssueArgs) -> Result<String> {
    let now = OffsetDateTime::now_utc();
    let root = load_root(&args.root)?;
    let request = ClusterCaRequest {
        cluster: args.cluster.clone(),
        trust_domain: args.trust_domain.clone(),
    };
    let (key, csr_text) = match &args.csr {
        Some(path) => {
            let text =
                fsutil::read_input(path, "CSR", "pass the path of a PEM certificate request")?;
            (None, text)
        }
        None => {
            let (key, csr) =
                generate_cluster_csr(&request.cluster, &request.trust_domain, args.key_algorithm)?;
            (Some(key), csr.into_bytes())
        }
    };
    let csr = CsrInfo::parse(&csr_text)?;
    let policy = SigningPolicy {
        ttl: args.ttl,
        constrain_to_trust_domain: args.constrain_to_trust_domain,
    };
    let issued = policy.sign(&root, &csr, &request, now)?;
    let mut bundle = TrustBundle::new();
    bundle.add(&request.trust_domain, root.root_der().to_vec())?;

    let target = args.out.join(request.cluster.as_str());
    let mut files = BTreeMap::new();
    files.insert(
        cacerts::CA_CERT.to_owned(),
        FileSpec::public(cert::to_pem([issued.cert_der.as_slice()])),
    );
    files.insert(
        cacerts::CERT_CHAIN.to_owned(),
        FileSpec::public(issued.chain_pem.clone()),
    );
    files.insert(
        cacerts::ROOT_CERT.to_owned(),
        FileSpec::public(bundle.to_pem()),
    );
    if let Some(key) = &key {
        let material = CaCerts::assemble(&issued.chain_pem, key, &bundle)?;
        files.insert(
            cacerts::CA_KEY.to_owned(),
            FileSpec::secret(material.ca_key),
        );
    }
    fsutil::write_dir_atomically(&target, &files, args.overwrite)?;

    let info = &issued.info;
    let mut msg = format!(
        "cluster CA for {} written to {}\n  subject:       {}\n  trust domain:  {}{}\n  serial:        {}\n  expires:       {}\n",
        request.cluster,
        target.display(),
        info.subject,
        request.trust_domain,
        if policy.constrain_to_trust_domain {
            " (URI name constraint: only its identities)"
        } else {
            ""
        },
        info.serial,
        info.not_after
    );
    if key.is_some() {
        let _ = writeln!(
            msg,
            "install: kubectl create secret generic cacerts -n istio-system --from-file={}",
            target.display()
        );
    } else {
        let _ = writeln!(
            msg,
            "no key written (--csr): add the CSR's private key as {}/{} before creating the Secret",
            target.display(),
            cacerts::CA_KEY
        );
    }
    Ok(msg)
}

/// `ca inspect`: prints the report; fails when a problem was found.
pub fn inspect(args: &CaInspectArgs) -> Result<()> {
    let files = fsutil::read_dir_files(&args.dir)?;
    let report = cacerts::inspect(&files, OffsetDateTime::now_utc());
    let text = match args.output {
        OutputFormat::Table => render_inspection(&report),
        other => output::structured(&report, other)?,
    };
    print!("{text}");
    if report.is_ok() {
        Ok(())
    } else {
        Err(Error::ProblemsFound(format!(
            "{}: {} problem(s) found",
            args.dir.display(),
            report.problems.len()
        )))
    }
}

/// The human-readable form of an inspection.
pub fn render_inspection(r: &Inspection) -> String {
    let mut s = String::new();
    if let Some(ca) = &r.ca {
        let _ = writeln!(s, "Signing CA ({})", cacerts::CA_CERT);
        let _ = writeln!(s, "  subject:       {}", ca.subject);
        let _ = writeln!(s, "  issuer:        {}", ca.issuer);
        let _ = writeln!(s, "  serial:        {}", ca.serial);
        let _ = writeln!(s, "  valid:         {} to {}", ca.not_before, ca.not_after);
        let _ = writeln!(
            s,
            "  key:           {}",
            r.key.as_deref().unwrap_or(&ca.key)
        );
        let _ = writeln!(
            s,
            "  trust domain:  {}",
            r.trust_domain.as_deref().unwrap_or("(not recorded)")
        );
        let _ = writeln!(
            s,
            "  constraints:   CA:{} pathlen:{} usage:{}",
            ca.is_ca,
            ca.path_len
                .map(|p| p.to_string())
                .unwrap_or_else(|| "none".into()),
            ca.key_usage.join(",")
        );
        if let Some(nc) = &ca.name_constraint {
            let _ = writeln!(
                s,
                "  names:         URI constrained to {nc} (sidecar meshes only: ztunnel rejects it)"
            );
        }
    }
    let list = |s: &mut String, title: &str, certs: &[CertInfo]| {
        let _ = writeln!(s, "{title}");
        let rows: Vec<Vec<String>> = certs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                vec![
                    (i + 1).to_string(),
                    c.subject.clone(),
                    c.not_after.clone(),
                    c.sha256[..16].to_owned(),
                ]
            })
            .collect();
        for line in output::table(&["#", "SUBJECT", "NOT AFTER", "SHA256"], &rows).lines() {
            let _ = writeln!(s, "  {line}");
        }
    };
    if !r.chain.is_empty() {
        list(
            &mut s,
            &format!("Chain ({})", cacerts::CERT_CHAIN),
            &r.chain,
        );
    }
    if !r.roots.is_empty() {
        list(&mut s, &format!("Roots ({})", cacerts::ROOT_CERT), &r.roots);
    }
    if let Some(id) = &r.workload_check {
        let by = if r.ca.as_ref().is_some_and(|c| c.name_constraint.is_some()) {
            "federator's chain rules and the URI name constraint; rustls-webpki refuses URI name constraints"
        } else {
            "rustls-webpki"
        };
        let _ = writeln!(
            s,
            "Workload check: a certificate for {id} minted from this material verifies against {} ({by})",
            cacerts::ROOT_CERT
        );
    }
    if r.problems.is_empty() {
        let _ = writeln!(s, "Problems: none (istiod will load this material)");
    } else {
        let _ = writeln!(s, "Problems:");
        for p in &r.problems {
            let _ = writeln!(s, "  - {}: {}", p.file, p.message);
        }
    }
    s
}
