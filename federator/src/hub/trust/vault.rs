//! The `vault` root backend: Vault / OpenBao PKI signs cluster CAs; the root key never leaves it.
//!
//! The hub checks every CSR under its own policy first, then forwards it to
//! `<mount>/issuer/<ref>/sign-intermediate` with the fields the policy decides (path length 0,
//! the cluster's subject, the trust domain's SPIFFE ID as URI SAN, the configured TTL) and
//! verifies what comes back before anyone installs it. The chain Vault returns is kept whole.
//!
//! Authentication: a token, AppRole, or Kubernetes (a ServiceAccount JWT that Vault checks with
//! a TokenReview). Tokens are renewed when renewable, and AppRole/Kubernetes logins are redone
//! before their lease ends. Every Vault error names the path and, for a denial, the capability
//! the policy lacks.
//!
//! About 400 lines: the client's login and renewal for three auth methods, signing with the
//! checks of its answer, and the newcomer bootstrap are one job — talking to Vault.

use std::time::{Duration, Instant};

use federator_core::cert::{self, CertInfo};
use federator_core::csr::cluster_ca_common_name;
use federator_core::policy::{self, IssuedCa};
use federator_core::verify;
use secrecy::ExposeSecret;
use tokio::sync::Mutex;
use tracing::info;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::signer::Ask;
use super::vault_config::{VaultAuth, VaultConfig};
use crate::{Error, Result};

struct Session {
    client: VaultClient,
    /// When the token must be renewed or replaced; `None` for tokens that never expire.
    refresh_at: Option<Instant>,
    renewable: bool,
}

/// A connected Vault signer.
pub struct VaultSigner {
    cfg: VaultConfig,
    session: Mutex<Session>,
    /// The issuing CA and the chain above it (DER), as Vault reports them.
    issuer_chain: Vec<Vec<u8>>,
    /// During a rotation, the issuer it replaces: it signs until every member trusts the new
    /// root ([`VaultSigner::keep_previous`]).
    previous: Option<PreviousIssuer>,
}

/// The issuer a rotation replaces: its reference (`None`: the mount's default) and chain.
struct PreviousIssuer {
    reference: Option<String>,
    chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for VaultSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSigner")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Turns a Vault error into one that names what was done, the path, and what to do. Every
/// Vault error is retried by `serve` (a denial may be fixed in Vault's policy, a sealed Vault
/// unsealed), so the message only says "retry" where waiting alone may help.
pub fn describe(
    cfg: &VaultConfig,
    e: ClientError,
    operation: &str,
    path: &str,
    capability: &str,
) -> Error {
    let message = match &e {
        ClientError::APIError { code, errors } => {
            let detail = errors.join("; ").replace('\n', " ").replace('\t', "");
            let detail = detail.trim();
            match code {
                403 => format!(
                    "Vault denied {operation} at {path}: permission denied; the token's policy needs the \"{capability}\" capability on path \"{path}\""
                ),
                503 if detail.contains("sealed") => format!(
                    "Vault at {} is sealed ({operation} at {path}); unseal it and federator will retry",
                    cfg.address
                ),
                500..=599 => {
                    format!("Vault failed {operation} at {path} ({code}): {detail}; retrying")
                }
                _ => format!("Vault refused {operation} at {path} ({code}): {detail}"),
            }
        }
        ClientError::RestClientError { source } => format!(
            "cannot reach Vault at {} ({operation} at {path}): {source}; federator will retry",
            cfg.address
        ),
        other => format!("Vault {operation} at {path}: {other}"),
    };
    Error::Vault {
        message,
        source: Box::new(e),
    }
}

fn new_client(cfg: &VaultConfig, token: &str) -> Result<VaultClient> {
    let mut settings = VaultClientSettingsBuilder::default();
    settings
        .address(&cfg.address)
        .token(token)
        .timeout(Some(Duration::from_secs(10)));
    if let Some(ns) = &cfg.namespace {
        settings.namespace(Some(ns.clone()));
    }
    if let Some(ca) = &cfg.ca_pem {
        // vaultrs reads CA certificates from files.
        let path =
            std::env::temp_dir().join(format!("federator-vault-ca-{}.pem", std::process::id()));
        std::fs::write(&path, ca).map_err(Error::io(&path))?;
        settings.ca_certs(vec![path.to_string_lossy().into_owned()]);
    }
    let settings = settings
        .build()
        .map_err(|e| Error::Usage(format!("invalid Vault settings ({}): {e}", cfg.address)))?;
    VaultClient::new(settings).map_err(|e| Error::Vault {
        message: format!("cannot configure a Vault client for {}: {e}", cfg.address),
        source: Box::new(e),
    })
}

/// Logs in (or adopts the token) and returns a session.
async fn login(cfg: &VaultConfig) -> Result<Session> {
    match &cfg.auth {
        VaultAuth::Token { token } => {
            let client = new_client(cfg, token.expose_secret())?;
            let me = vaultrs::token::lookup_self(&client)
                .await
                .map_err(|e| describe(cfg, e, "token lookup", "auth/token/lookup-self", "read"))?;
            let renewable = me.renewable.unwrap_or(false);
            let refresh_at =
                (me.ttl > 0).then(|| Instant::now() + Duration::from_secs(me.ttl * 2 / 3));
            Ok(Session {
                client,
                refresh_at,
                renewable,
            })
        }
        VaultAuth::AppRole {
            mount,
            role_id,
            secret_id,
        } => {
            let client = new_client(cfg, "")?;
            let auth =
                vaultrs::auth::approle::login(&client, mount, role_id, secret_id.expose_secret())
                    .await
                    .map_err(|e| {
                        describe(
                            cfg,
                            e,
                            "AppRole login",
                            &format!("auth/{mount}/login"),
                            "update",
                        )
                    })?;
            session_from(cfg, auth)
        }
        VaultAuth::Kubernetes {
            mount,
            role,
            jwt_file,
        } => {
            let jwt = std::fs::read_to_string(jwt_file).map_err(|e| {
                Error::Usage(format!(
                    "{}: cannot read the ServiceAccount token for Vault's Kubernetes auth: {e}",
                    jwt_file.display()
                ))
            })?;
            let client = new_client(cfg, "")?;
            let auth = vaultrs::auth::kubernetes::login(&client, mount, role, jwt.trim())
                .await
                .map_err(|e| {
                    describe(
                        cfg,
                        e,
                        "Kubernetes login",
                        &format!("auth/{mount}/login"),
                        "update",
                    )
                })?;
            session_from(cfg, auth)
        }
    }
}

fn session_from(cfg: &VaultConfig, auth: vaultrs::api::AuthInfo) -> Result<Session> {
    let client = new_client(cfg, &auth.client_token)?;
    let refresh_at = (auth.lease_duration > 0)
        .then(|| Instant::now() + Duration::from_secs(auth.lease_duration * 2 / 3));
    Ok(Session {
        client,
        refresh_at,
        renewable: auth.renewable,
    })
}

impl VaultSigner {
    /// Logs in and reads the issuer. Fails with a precise error when Vault is unreachable,
    /// sealed, or the credential lacks a permission.
    pub async fn connect(cfg: VaultConfig) -> Result<Self> {
        let session = login(&cfg).await?;
        let issuer_chain = read_issuer_chain(&cfg, &session.client, cfg.issuer.as_deref()).await?;
        Ok(Self {
            cfg,
            session: Mutex::new(session),
            issuer_chain,
            previous: None,
        })
    }

    /// Also reads the issuer a rotation replaces (`reference`, empty: the mount's default), to
    /// sign under it until every member trusts the new root. Kept only if its chain still
    /// ends at `expected_root` (DER, what the rotation recorded); returns whether it was.
    pub async fn keep_previous(&mut self, reference: &str, expected_root: &[u8]) -> Result<bool> {
        let reference = (!reference.is_empty()).then(|| reference.to_owned());
        let read = {
            let session = self.fresh_session().await?;
            read_issuer_chain(&self.cfg, &session.client, reference.as_deref()).await
        };
        let chain = match read {
            Ok(chain) => chain,
            // Gone from Vault (or no longer an issuer): nothing to keep. A denial, a sealed or
            // unreachable Vault is an error, retried, so that a passing fault does not make
            // the new root sign too early.
            Err(Error::Vault { source, .. })
                if matches!(
                    source.downcast_ref::<ClientError>(),
                    Some(ClientError::APIError { code, .. }) if (400..500).contains(code) && *code != 403
                ) =>
            {
                self.previous = None;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let kept = chain.last().map(Vec::as_slice) == Some(expected_root);
        self.previous = kept.then_some(PreviousIssuer { reference, chain });
        Ok(kept)
    }

    /// Whether the issuer a rotation replaces is held (to sign under until every member
    /// trusts the new root).
    pub fn holds_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// The issuer's certificate, then the chain above it up to the root (DER).
    pub fn issuer_chain(&self) -> &[Vec<u8>] {
        &self.issuer_chain
    }

    /// The settings it was connected with (the issuer it signs with among them).
    pub fn config(&self) -> &VaultConfig {
        &self.cfg
    }

    /// The root at the top of Vault's issuer chain (DER).
    pub fn root_der(&self) -> &[u8] {
        // `connect` guarantees a non-empty chain.
        self.issuer_chain
            .last()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Renews or replaces the token when due.
    async fn fresh_session(&self) -> Result<tokio::sync::MutexGuard<'_, Session>> {
        let mut s = self.session.lock().await;
        if s.refresh_at.is_some_and(|t| Instant::now() >= t) {
            let renewed = if s.renewable {
                match vaultrs::token::renew_self(&s.client, None).await {
                    Ok(auth) if auth.lease_duration > 0 => {
                        s.refresh_at =
                            Some(Instant::now() + Duration::from_secs(auth.lease_duration * 2 / 3));
                        info!("renewed the Vault token");
                        true
                    }
                    _ => false,
                }
            } else {
                false
            };
            if !renewed {
                *s = login(&self.cfg).await?;
                info!("logged in to Vault again");
            }
        }
        Ok(s)
    }

    /// Checks the CSR under the policy, has Vault sign it, and verifies the answer.
    pub async fn sign(&self, ask: &Ask<'_>) -> Result<IssuedCa> {
        let (policy, csr, request) = (ask.policy, ask.csr, ask.request);
        policy.check(csr, request)?;
        let csr_pem = cert_request_pem(&csr.der);
        // The issuer asked for: the one the rotation replaces while members do not all trust
        // the new root yet, else the current one.
        let previous = self.previous.as_ref().filter(|p| {
            ask.root.is_some_and(|fp| {
                p.chain.last().map(|r| cert::fingerprint(r)).as_deref() == Some(fp)
            })
        });
        let (reference, issuer_chain) = match previous {
            Some(p) => (p.reference.as_deref(), p.chain.as_slice()),
            None => {
                super::signer::check_root(ask.root, self.root_der())?;
                (self.cfg.issuer.as_deref(), self.issuer_chain.as_slice())
            }
        };
        let path = self.cfg.sign_path_of(reference);
        let org = cert::parse_der(&issuer_chain[0])?
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok().map(str::to_owned));
        let mut opts = vaultrs::api::pki::requests::SignIntermediateIssuerRequest::builder();
        opts.ttl(format!("{}s", policy.ttl.as_secs()))
            .max_path_length(0)
            .uri_sans(request.trust_domain.spiffe_uri())
            .locality(vec![request.cluster.to_string()])
            .exclude_cn_from_sans(true)
            .use_csr_values(false)
            .format("pem")
            .not_before_duration(300u64);
        if let Some(org) = org {
            opts.organization(vec![org]);
        }
        let common_name = cluster_ca_common_name(&request.cluster);
        let mut session = self.fresh_session().await?;
        let mut logged_in_again = false;
        let signed = loop {
            let result = vaultrs::pki::issuer::sign_intermediate(
                &session.client,
                &self.cfg.mount,
                &csr_pem,
                &common_name,
                reference,
                Some(&mut opts),
            )
            .await;
            // A token revoked or expired under us: log in again, once.
            let denied = matches!(&result, Err(ClientError::APIError { code: 403, .. }));
            if denied && !logged_in_again && !matches!(self.cfg.auth, VaultAuth::Token { .. }) {
                *session = login(&self.cfg).await?;
                logged_in_again = true;
                continue;
            }
            break result
                .map_err(|e| describe(&self.cfg, e, "signing a cluster CA", &path, "update"))?;
        };
        drop(session);

        // Vault's answer, whole: the cluster CA, then its chain to the root.
        let cert_der =
            cert::parse_pem_certificates(signed.certificate.as_bytes(), "Vault certificate")?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Refused("Vault returned no certificate".into()))?;
        let mut chain: Vec<Vec<u8>> = vec![cert_der.clone()];
        for c in std::iter::once(&signed.issuing_ca).chain(signed.ca_chain.iter()) {
            for der in cert::parse_pem_certificates(c.as_bytes(), "Vault CA chain")? {
                if !chain.contains(&der) {
                    chain.push(der);
                }
            }
        }
        let root = chain.last().cloned().unwrap_or_default();
        verify::verify_ca_path(&cert_der, &chain[1..], std::slice::from_ref(&root), ask.now)?;
        policy::check_issued(
            &cert_der,
            &csr.public_key_info,
            &request.trust_domain,
            ask.now,
        )?;
        Ok(IssuedCa {
            chain_pem: cert::to_pem(chain.iter().map(Vec::as_slice)),
            info: CertInfo::from_der(&cert_der)?,
            cert_der,
        })
    }
}

/// Reads an issuer (`None`: the mount's default): its certificate, then the chain above it up
/// to a self-signed root (DER).
async fn read_issuer_chain(
    cfg: &VaultConfig,
    client: &VaultClient,
    reference: Option<&str>,
) -> Result<Vec<Vec<u8>>> {
    let issuer = vaultrs::pki::issuer::read(client, &cfg.mount, reference)
        .await
        .map_err(|e| {
            describe(
                cfg,
                e,
                "reading the issuer",
                &format!(
                    "{}/issuer/{}/json",
                    cfg.mount,
                    reference.unwrap_or("default")
                ),
                "read",
            )
        })?;
    let mut issuer_chain =
        cert::parse_pem_certificates(issuer.certificate.as_bytes(), "Vault issuer")?;
    for c in &issuer.ca_chain {
        for der in cert::parse_pem_certificates(c.as_bytes(), "Vault CA chain")? {
            if !issuer_chain.contains(&der) {
                issuer_chain.push(der);
            }
        }
    }
    let top = issuer_chain
        .last()
        .ok_or_else(|| Error::Refused("Vault returned an empty issuer".into()))?;
    let top_cert = cert::parse_der(top)?;
    if top_cert.subject().as_raw() != top_cert.issuer().as_raw() {
        return Err(Error::Refused(format!(
            "Vault's issuer chain ends at {}, which is not a self-signed root; import the full chain into the issuer",
            top_cert.subject()
        )));
    }
    Ok(issuer_chain)
}

fn cert_request_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE REQUEST", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// `<mount>/root/rotate/internal`, which vaultrs does not have: a new internal root (and
/// issuer) next to the existing ones; the mount's default issuer does not change.
struct RotateRoot {
    mount: String,
    body: serde_json::Value,
}

impl rustify::Endpoint for RotateRoot {
    type Response = vaultrs::api::pki::responses::GenerateRootResponse;
    const REQUEST_BODY_TYPE: rustify::enums::RequestType = rustify::enums::RequestType::JSON;
    const RESPONSE_BODY_TYPE: rustify::enums::ResponseType = rustify::enums::ResponseType::JSON;

    fn path(&self) -> String {
        format!("{}/root/rotate/internal", self.mount)
    }

    fn method(&self) -> rustify::enums::RequestMethod {
        rustify::enums::RequestMethod::POST
    }

    fn body(&self) -> std::result::Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        serde_json::to_vec(&self.body)
            .map(Some)
            .map_err(|e| rustify::errors::ClientError::DataParseError { source: e.into() })
    }
}

/// For `rotate-root --vault-bootstrap`: has Vault generate a new internal root in the mount
/// (`<mount>/root/rotate/internal`: ECDSA P-256, 10 years, path length 1, the key stays in
/// Vault) named `name`, without making it the default issuer. Returns the new issuer's ID.
pub async fn generate_issuer(cfg: &VaultConfig, name: &str) -> Result<String> {
    let session = login(cfg).await?;
    let path = format!("{}/root/rotate/internal", cfg.mount);
    let endpoint = RotateRoot {
        mount: cfg.mount.clone(),
        body: serde_json::json!({
            "common_name": format!("federator root CA (Vault, {name})"),
            "organization": "federator",
            "issuer_name": name,
            "ttl": "87600h",
            "key_type": "ec",
            "key_bits": 256,
            "max_path_length": 1,
        }),
    };
    let generated = vaultrs::api::exec_with_result(&session.client, endpoint)
        .await
        .map_err(|e| describe(cfg, e, "generating a new root", &path, "update"))?;
    info!(issuer = %generated.issuer_id, "Vault generated a new root for the rotation");
    Ok(generated.issuer_id)
}

/// For a newcomer: enables the PKI mount (max lease TTL 10 years) if absent and generates an
/// internal root (ECDSA P-256) if the mount has no issuer yet. Needs a token with the rights
/// to do so (e.g. a dev server's root token).
pub async fn bootstrap(cfg: &VaultConfig) -> Result<Vec<String>> {
    let session = login(cfg).await?;
    let c = &session.client;
    let failed = |operation: &'static str, path: String, capability: &'static str| {
        move |e| describe(cfg, e, operation, &path, capability)
    };
    let mut done = Vec::new();
    let mounts = vaultrs::sys::mount::list(c).await.map_err(failed(
        "listing mounts",
        "sys/mounts".into(),
        "read",
    ))?;
    if !mounts.contains_key(&format!("{}/", cfg.mount)) {
        let mut opts = vaultrs::api::sys::requests::EnableEngineRequest::builder();
        opts.config(
            vaultrs::api::sys::requests::EnableEngineDataConfigBuilder::default()
                .max_lease_ttl("87600h")
                .build()
                .map_err(Error::encode("the PKI mount's settings"))?,
        );
        let path = format!("sys/mounts/{}", cfg.mount);
        vaultrs::sys::mount::enable(c, &cfg.mount, "pki", Some(&mut opts))
            .await
            .map_err(failed("enabling the PKI mount", path, "create"))?;
        done.push(format!(
            "enabled the pki engine at {}/ (max lease TTL 87600h)",
            cfg.mount
        ));
    }
    let has_issuer = vaultrs::pki::issuer::read(c, &cfg.mount, cfg.issuer.as_deref())
        .await
        .is_ok();
    if !has_issuer {
        let mut opts = vaultrs::api::pki::requests::GenerateRootRequest::builder();
        opts.common_name("federator root CA (Vault)")
            .organization(vec!["federator".to_owned()])
            .ttl("87600h")
            .key_type("ec")
            .key_bits(256u64)
            .max_path_length(1);
        let path = format!("{}/root/generate/internal", cfg.mount);
        vaultrs::pki::cert::ca::generate(c, &cfg.mount, "internal", Some(&mut opts))
            .await
            .map_err(failed("generating a root", path, "update"))?;
        done.push(format!(
            "generated an internal root in {}/ (the key stays in Vault)",
            cfg.mount
        ));
    }
    Ok(done)
}
