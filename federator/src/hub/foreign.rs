//! Foreign SPIFFE trust domains: fetching a bundle endpoint (SPIFFE Federation §5) and the
//! `federator trust add|remove` commands that manage the [`ForeignTrustDomain`] objects.
//!
//! A fetch is one HTTPS `GET` of the configured URL, authenticated as its profile says
//! (SPIFFE Federation §5.2): `https_web` checks the server certificate against the system's CA
//! certificates (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the OS store) and the URL's host;
//! `https_spiffe` checks that the server presents an X509-SVID for the endpoint SPIFFE ID that
//! verifies against that ID's trust domain bundle: the domain's last fetched bundle when the
//! endpoint is in the domain it serves (as SPIRE's is), else the bootstrap bundle. No
//! redirect is followed, the answer must be 2xx within [`TIMEOUT`], and at most
//! [`MAX_BUNDLE_BYTES`] are read; the document is then checked by
//! [`federator_core::spiffe::parse_bundle`] for the configured trust domain. Every failure is an
//! [`Outcome::Failed`] with the condition reason the status shows.

use std::sync::Arc;
use std::time::Duration;

use federator_api::condition::reasons;
use federator_api::foreign::{
    BundleEndpointRef, EndpointProfile, ForeignTrustDomain, ForeignTrustDomainSpec,
};
use federator_api::names;
use federator_core::identity::TrustDomain;
use federator_core::spiffe::{MAX_BUNDLE_BYTES, parse_bundle};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use super::plan::foreign::Outcome;
use crate::{Error, Result};

/// How long a fetch may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS client configuration of `https_web`: the system's CA certificates.
fn web_tls() -> std::result::Result<rustls::ClientConfig, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(format!(
            "no system CA certificates to authenticate an https_web endpoint with (set SSL_CERT_FILE){}",
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        ));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| e.to_string())
}

/// The TLS client configuration of `https_spiffe` (SPIFFE Federation §5.2.2): the server's
/// X509-SVID must be for the endpoint SPIFFE ID and verify against the bundle of that ID's
/// trust domain, `last_roots_pem` (the last good fetch) when it is the domain the endpoint
/// serves, the bootstrap bundle otherwise or before the first fetch. No DNS name is checked.
fn spiffe_tls(
    spec: &ForeignTrustDomainSpec,
    last_roots_pem: &str,
) -> std::result::Result<rustls::ClientConfig, String> {
    let wanted = &spec.bundle_endpoint.endpoint_spiffe_id;
    let id = federator_core::identity::SpiffeId::parse(wanted)
        .map_err(|e| format!("endpointSpiffeId {wanted:?}: {e}"))?;
    let (pem, which) =
        if id.trust_domain().as_str() == spec.trust_domain && !last_roots_pem.trim().is_empty() {
            (last_roots_pem, "the last fetched bundle")
        } else {
            (spec.bootstrap_pem.as_str(), "the bootstrap bundle")
        };
    if pem.trim().is_empty() {
        return Err(format!(
            "no bundle of {} to authenticate the endpoint's X509-SVID with; `federator trust add` it again with --bootstrap-bundle (the domain's current bundle)",
            id.trust_domain()
        ));
    }
    let roots: Vec<rustls::pki_types::CertificateDer<'static>> =
        federator_core::cert::parse_pem_certificates(pem.as_bytes(), which)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(Into::into)
            .collect();
    let verifier = federator_api::spiffe_tls::SpiffeVerifier::new(&roots)
        .map_err(|e| format!("{which}: {e}"))?
        .expect_peers([wanted.clone()]);
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_no_client_auth())
}

/// The whole chain of an error's messages.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = s.source();
    }
    out
}

fn failed(reason: &'static str, message: String) -> Outcome {
    Outcome::Failed { reason, message }
}

/// Fetches and checks the bundle of `spec`'s trust domain from its endpoint; `last_roots_pem`:
/// the roots of the last good fetch (`https_spiffe` authenticates the endpoint with them).
pub async fn fetch(spec: &ForeignTrustDomainSpec, last_roots_pem: &str) -> Outcome {
    let td = match TrustDomain::new(&spec.trust_domain) {
        Ok(td) => td,
        Err(e) => return failed(reasons::BUNDLE_REFUSED, format!("trust domain: {e}")),
    };
    let ep = &spec.bundle_endpoint;
    let tls = match ep.profile {
        EndpointProfile::HttpsWeb => web_tls(),
        EndpointProfile::HttpsSpiffe => spiffe_tls(spec, last_roots_pem),
    };
    let tls = match tls {
        Ok(t) => t,
        Err(m) => return failed(reasons::ENDPOINT_NOT_AUTHENTICATED, m),
    };
    let client = match reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => return failed(reasons::ENDPOINT_UNREACHABLE, chain(&e)),
    };
    let mut response = match client.get(&ep.url).send().await {
        Ok(r) => r,
        Err(e) => {
            let m = chain(&e);
            let reason = if m.contains("certificate")
                || m.contains("InvalidCertificate")
                || m.contains("ApplicationVerificationFailure")
            {
                reasons::ENDPOINT_NOT_AUTHENTICATED
            } else {
                reasons::ENDPOINT_UNREACHABLE
            };
            return failed(reason, format!("GET {}: {m}", ep.url));
        }
    };
    if !response.status().is_success() {
        return failed(
            reasons::ENDPOINT_UNREACHABLE,
            format!("GET {}: HTTP {}", ep.url, response.status()),
        );
    }
    let too_large = |size: usize| {
        failed(
            reasons::BUNDLE_REFUSED,
            format!(
                "GET {}: the document is {size} bytes or more; a SPIFFE bundle is refused above {MAX_BUNDLE_BYTES} bytes",
                ep.url
            ),
        )
    };
    if let Some(len) = response.content_length()
        && len > MAX_BUNDLE_BYTES as u64
    {
        return too_large(usize::try_from(len).unwrap_or(usize::MAX));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BUNDLE_BYTES {
                    return too_large(body.len());
                }
            }
            Ok(None) => break,
            Err(e) => {
                return failed(
                    reasons::ENDPOINT_UNREACHABLE,
                    format!("GET {}: {}", ep.url, chain(&e)),
                );
            }
        }
    }
    match parse_bundle(&body, &td) {
        Ok(b) => Outcome::Fetched(b),
        Err(e) => failed(
            reasons::BUNDLE_REFUSED,
            format!("{} is not an acceptable SPIFFE bundle of {td}: {e}", ep.url),
        ),
    }
}

/// `federator trust add`: what to create.
#[derive(Clone, Debug)]
pub struct AddRequest {
    /// The foreign trust domain.
    pub trust_domain: String,
    /// Its bundle endpoint URL.
    pub url: String,
    /// The endpoint's profile.
    pub profile: EndpointProfile,
    /// With `https_spiffe`: the endpoint's SPIFFE ID.
    pub endpoint_spiffe_id: Option<String>,
    /// Trust anchors for the first `https_spiffe` fetch (a SPIFFE bundle or PEM).
    pub bootstrap: Option<Vec<u8>>,
    /// Also trust its roots in every member's `root-cert.pem`.
    pub mesh_wide: bool,
}

/// Checks `req` and builds the object's spec (pure).
pub fn spec_for(req: &AddRequest, own: &[TrustDomain]) -> Result<ForeignTrustDomainSpec> {
    let td = TrustDomain::new(&req.trust_domain)
        .map_err(|e| Error::Usage(format!("trust domain {:?}: {e}", req.trust_domain)))?;
    if own.contains(&td) {
        return Err(Error::Usage(format!(
            "{td} is a trust domain of this federation; a foreign trust domain must be another one"
        )));
    }
    let rest = req.url.strip_prefix("https://").ok_or_else(|| {
        Error::Usage(format!(
            "--bundle-endpoint {}: a bundle endpoint URL is https:// (SPIFFE Federation §5)",
            req.url
        ))
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(Error::Usage(format!(
            "--bundle-endpoint {}: needs a host and no user info",
            req.url
        )));
    }
    let endpoint_id = match (req.profile, &req.endpoint_spiffe_id) {
        (EndpointProfile::HttpsSpiffe, Some(id)) => Some(
            federator_core::identity::SpiffeId::parse(id)
                .map_err(|e| Error::Usage(format!("--endpoint-spiffe-id {id}: {e}")))?,
        ),
        (EndpointProfile::HttpsSpiffe, None) => {
            return Err(Error::Usage(
                "--profile https_spiffe needs --endpoint-spiffe-id (the SPIFFE ID the endpoint's server presents)".into(),
            ));
        }
        (EndpointProfile::HttpsWeb, Some(_)) => {
            return Err(Error::Usage(
                "--endpoint-spiffe-id is for --profile https_spiffe; https_web checks the server's Web PKI certificate".into(),
            ));
        }
        (EndpointProfile::HttpsWeb, None) => None,
    };
    let bootstrap_pem = match (&req.bootstrap, &endpoint_id) {
        (None, None) => String::new(),
        (None, Some(id)) => {
            return Err(Error::Usage(format!(
                "--profile https_spiffe needs --bootstrap-bundle: the current bundle of {} (SPIRE: `spire-server bundle show -format spiffe`), to authenticate the endpoint's X509-SVID the first time",
                id.trust_domain()
            )));
        }
        (Some(_), None) => {
            return Err(Error::Usage(
                "--bootstrap-bundle is for --profile https_spiffe; https_web checks the server's Web PKI certificate".into(),
            ));
        }
        (Some(bytes), Some(id)) => {
            let anchors = federator_core::spiffe::parse_anchors(bytes, id.trust_domain())
                .map_err(|e| Error::Usage(format!("--bootstrap-bundle: {e}")))?;
            federator_core::cert::to_pem(anchors.iter().map(Vec::as_slice))
        }
    };
    let endpoint_spiffe_id = endpoint_id.map(|id| id.to_string()).unwrap_or_default();
    Ok(ForeignTrustDomainSpec {
        trust_domain: td.to_string(),
        bundle_endpoint: BundleEndpointRef {
            url: req.url.clone(),
            profile: req.profile,
            endpoint_spiffe_id,
        },
        bootstrap_pem,
        mesh_wide: req.mesh_wide,
    })
}

/// What `federator trust add` did.
#[derive(Clone, Debug)]
pub struct Added {
    /// The ForeignTrustDomain object's name.
    pub name: String,
    /// The bundle fetched before writing (none with `--no-fetch`).
    pub fetched: Option<federator_core::spiffe::ForeignBundle>,
}

/// Why a fetch made before writing refused the domain: the status reason and message, and that
/// nothing was written.
fn refused_before_writing(td: &str, reason: &str, message: &str) -> Error {
    Error::Refused(format!(
        "{reason}: {message}; nothing was written for {td}. Fix the URL or the endpoint, or pass --no-fetch when only the hub (not this machine) can reach it"
    ))
}

/// `federator trust add`: checks the request, fetches the endpoint once from here (unless
/// `fetch_first` is false) and only then creates or updates the domain's object
/// (server-side apply). A refused request or fetch writes nothing.
pub async fn add(hub: &Client, req: &AddRequest, fetch_first: bool) -> Result<Added> {
    let own = super::bundle::own_trust_domains(hub).await?;
    let spec = spec_for(req, &own)?;
    let fetched = if fetch_first {
        match fetch(&spec, "").await {
            Outcome::Fetched(b) => Some(b),
            Outcome::Failed { reason, message } => {
                return Err(refused_before_writing(&spec.trust_domain, reason, &message));
            }
        }
    } else {
        None
    };
    let name = names::foreign_trust_domain(&spec.trust_domain);
    let obj = ForeignTrustDomain::new(&name, spec);
    let api: Api<ForeignTrustDomain> = Api::namespaced(hub.clone(), names::NAMESPACE);
    api.patch(
        &name,
        &PatchParams::apply(names::HUB_FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .map_err(|e| Error::kube(&format!("apply ForeignTrustDomain {name}"), e))?;
    Ok(Added { name, fetched })
}

/// `federator trust remove`: deletes the domain's object; `serve` then removes its roots
/// from every member. A domain that is not trusted is a usage error naming those that are.
pub async fn remove(hub: &Client, trust_domain: &str) -> Result<()> {
    let name = names::foreign_trust_domain(trust_domain);
    let api: Api<ForeignTrustDomain> = Api::namespaced(hub.clone(), names::NAMESPACE);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let trusted: Vec<String> = api
                .list(&Default::default())
                .await
                .map_err(|e| Error::kube("list ForeignTrustDomains", e))?
                .items
                .into_iter()
                .map(|f| f.spec.trust_domain)
                .collect();
            Err(not_trusted(trust_domain, &trusted))
        }
        Err(e) => Err(Error::kube(&format!("delete ForeignTrustDomain {name}"), e)),
    }
}

/// The error of removing a domain that is not trusted (pure).
fn not_trusted(trust_domain: &str, trusted: &[String]) -> Error {
    Error::Usage(format!(
        "{trust_domain} is not a trusted foreign trust domain: nothing removed ({})",
        if trusted.is_empty() {
            "none is trusted".to_owned()
        } else {
            format!("trusted: {}", trusted.join(", "))
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(url: &str, profile: EndpointProfile, id: Option<&str>) -> AddRequest {
        AddRequest {
            trust_domain: "spire.example".into(),
            url: url.into(),
            profile,
            endpoint_spiffe_id: id.map(Into::into),
            bootstrap: None,
            mesh_wide: false,
        }
    }

    #[test]
    fn add_refuses_what_cannot_work() {
        let own = [TrustDomain::new("east.example").unwrap()];
        let web = EndpointProfile::HttpsWeb;
        let ok = spec_for(&req("https://spire.example:8443/", web, None), &own).unwrap();
        assert_eq!(ok.bundle_endpoint.profile, web);
        for (r, says) in [
            (req("http://spire.example/", web, None), "https://"),
            (req("https://u@spire.example/", web, None), "no user info"),
            (req("https:///x", web, None), "needs a host"),
            (
                req("https://s/", EndpointProfile::HttpsSpiffe, None),
                "needs --endpoint-spiffe-id",
            ),
            (
                req("https://s/", web, Some("spiffe://spire.example/x")),
                "is for --profile https_spiffe",
            ),
            (
                req(
                    "https://s/",
                    EndpointProfile::HttpsSpiffe,
                    Some("spiffe://spire.example/spire/server"),
                ),
                "needs --bootstrap-bundle: the current bundle of spire.example",
            ),
            (
                AddRequest {
                    bootstrap: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
                    ..req("https://s/", web, None)
                },
                "--bootstrap-bundle is for --profile https_spiffe",
            ),
            (
                AddRequest {
                    bootstrap: Some(b"not a bundle".to_vec()),
                    ..req(
                        "https://s/",
                        EndpointProfile::HttpsSpiffe,
                        Some("spiffe://spire.example/spire/server"),
                    )
                },
                "--bootstrap-bundle: ",
            ),
            (
                AddRequest {
                    trust_domain: "east.example".into(),
                    ..req("https://s/", web, None)
                },
                "a trust domain of this federation",
            ),
            (
                AddRequest {
                    trust_domain: "Not A Domain".into(),
                    ..req("https://s/", web, None)
                },
                "trust domain",
            ),
        ] {
            let err = spec_for(&r, &own).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn https_spiffe_authenticates_with_the_last_fetch_or_the_bootstrap_bundle() {
        let root = |td: &str| {
            federator_core::ca::IssuingCa::create_root(
                &federator_core::ca::RootOptions {
                    common_name: format!("{td} root"),
                    ..Default::default()
                },
                time::OffsetDateTime::now_utc(),
            )
            .unwrap()
            .cert_pem()
        };
        let mut spec = ForeignTrustDomainSpec {
            trust_domain: "spire.example".into(),
            bundle_endpoint: BundleEndpointRef {
                url: "https://127.0.0.1:1/".into(),
                profile: EndpointProfile::HttpsSpiffe,
                endpoint_spiffe_id: "spiffe://spire.example/spire/server".into(),
            },
            bootstrap_pem: String::new(),
            mesh_wide: false,
        };
        let err = spiffe_tls(&spec, "").unwrap_err();
        assert!(err.contains("no bundle of spire.example"), "{err}");
        assert!(err.contains("--bootstrap-bundle"), "{err}");
        // The last fetched roots are enough, and so is a bootstrap bundle alone.
        assert!(spiffe_tls(&spec, &root("spire.example")).is_ok());
        spec.bootstrap_pem = root("spire.example");
        assert!(spiffe_tls(&spec, "").is_ok());
        // An endpoint in another trust domain is authenticated with the bootstrap bundle
        // only (the fetched roots are the served domain's, not the endpoint's).
        spec.bundle_endpoint.endpoint_spiffe_id = "spiffe://other.example/endpoint".into();
        spec.bootstrap_pem = String::new();
        let err = spiffe_tls(&spec, &root("spire.example")).unwrap_err();
        assert!(err.contains("no bundle of other.example"), "{err}");
    }

    #[test]
    fn removing_an_unknown_domain_names_the_trusted_ones() {
        let err = not_trusted("x.example", &["spire.example".into(), "b.example".into()]);
        assert_eq!(err.exit_code(), 2);
        let m = err.to_string();
        assert!(
            m.contains("x.example is not a trusted foreign trust domain"),
            "{m}"
        );
        assert!(m.contains("trusted: spire.example, b.example"), "{m}");
        assert!(
            not_trusted("x.example", &[])
                .to_string()
                .contains("none is trusted")
        );
    }

    #[test]
    fn a_refused_first_fetch_says_why_and_that_nothing_was_written() {
        let err = refused_before_writing(
            "spire.example",
            reasons::BUNDLE_REFUSED,
            "https://s/ is not an acceptable SPIFFE bundle of spire.example: not JSON",
        );
        assert_eq!(err.exit_code(), 2);
        let m = err.to_string();
        assert!(m.starts_with("BundleRefused: https://s/ is not"), "{m}");
        assert!(m.contains("nothing was written for spire.example"), "{m}");
        assert!(m.contains("--no-fetch"), "{m}");
    }
}
