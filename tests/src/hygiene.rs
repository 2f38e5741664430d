//! Secret hygiene, checked after every end-to-end test: no private key may be anywhere but
//! where it belongs. When a [`crate::Federation`] drops at the end of a test that passed, every
//! log file of the test (the hub's and agents' at debug level, the control planes', istiod's,
//! the nodes' container logs) and every object of every running cluster (every listable
//! resource the API server has, Secrets and ConfigMaps decoded) is searched for
//!
//! * PEM private keys (`… PRIVATE KEY-----`), as text and base64-encoded (as in a kubeconfig's
//!   `client-key-data` or a Secret's data), and
//! * the material of every private key found where it belongs (a line of its base64 and a run
//!   of its DER in hex), so that a key logged or copied in another form is caught too.
//!
//! Private keys belong only in the Secrets listed in [`KEY_HOMES`] and in TLS Secrets
//! (`kubernetes.io/tls`, e.g. a serving certificate the user supplies). A hit fails the test,
//! naming the file and line or the object.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use federator_api::names;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{Discovery, verbs};

/// Where private keys belong, as `(namespace, Secret)`: the agent's own CA key and Istio's
/// plug-in CA (`ca-key.pem`) in each member, the hub's roots (local or imported keys) in the
/// hub cluster, and istiod's self-signed CA (`istio-ca-secret`, created by an istiod that
/// started before `cacerts` existed).
pub const KEY_HOMES: &[(&str, &str)] = &[
    (names::NAMESPACE, names::AGENT_KEY_SECRET),
    (names::ISTIO_NAMESPACE, names::CACERTS_SECRET),
    (names::NAMESPACE, names::ROOTS_SECRET),
    (names::ISTIO_NAMESPACE, "istio-ca-secret"),
];

/// What to look for.
struct Needles {
    /// Searched everywhere outside the key homes.
    strings: BTreeSet<String>,
}

impl Needles {
    fn new() -> Self {
        let mut strings = BTreeSet::new();
        strings.insert("PRIVATE KEY-----".to_owned());
        for label in ["", "EC ", "RSA ", "ENCRYPTED "] {
            let header = format!("-----BEGIN {label}PRIVATE KEY-----");
            // Whole 3-byte groups only: their base64 does not depend on what follows.
            let whole = &header.as_bytes()[..header.len() / 3 * 3];
            strings.insert(STANDARD.encode(whole));
        }
        Needles { strings }
    }

    /// Adds the material of the private keys in a PEM document; how many it had.
    fn add_keys_of(&mut self, pem_text: &[u8]) -> usize {
        let mut count = 0;
        let Ok(docs) = federator_core::cert::parse_pem_blocks(pem_text, "a Secret") else {
            return 0;
        };
        for doc in docs.iter().filter(|d| d.tag().ends_with("PRIVATE KEY")) {
            let der = doc.contents();
            if der.len() < 48 {
                continue;
            }
            // Past the common DER prefix of a key structure: bytes unique to this key.
            let middle = &der[der.len() / 2 - 12..der.len() / 2 + 12];
            strings_insert_hex(&mut self.strings, middle);
            let b64 = STANDARD.encode(der);
            let mid = b64.len() / 2;
            self.strings.insert(b64[mid - 24..mid + 24].to_owned());
            count += 1;
        }
        count
    }

    fn hits(&self, haystack: &str) -> Vec<&str> {
        self.strings
            .iter()
            .filter(|n| haystack.contains(n.as_str()))
            .map(String::as_str)
            .collect()
    }
}

fn strings_insert_hex(set: &mut BTreeSet<String>, bytes: &[u8]) {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    set.insert(hex);
}

/// Every `*.log` file under `dir`.
fn log_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => log_files(&path, out),
            Ok(t) if t.is_file() && path.extension().is_some_and(|x| x == "log") => out.push(path),
            _ => {}
        }
    }
}

/// Every object of every listable resource of a cluster, as text to search (Secrets' and
/// ConfigMaps' data decoded), and the text of the Secrets where keys belong.
async fn objects(client: &kube::Client) -> Result<(Vec<(String, String)>, Vec<Vec<u8>>), String> {
    let mut found = Vec::new();
    let mut homes = Vec::new();
    for s in Api::<Secret>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list Secrets: {e}"))?
    {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        let mut text = serde_json::to_string(&s.metadata).unwrap_or_default();
        for (k, v) in s.data.iter().flatten() {
            text.push_str(&format!("\n{k}: {}", String::from_utf8_lossy(&v.0)));
        }
        for (k, v) in s.string_data.iter().flatten() {
            text.push_str(&format!("\n{k}: {v}"));
        }
        let tls = s.type_.as_deref() == Some("kubernetes.io/tls");
        if tls || KEY_HOMES.contains(&(ns.as_str(), name.as_str())) {
            homes.extend(s.data.iter().flatten().map(|(_, v)| v.0.clone()));
        } else {
            found.push((format!("Secret {ns}/{name}"), text));
        }
    }
    for c in Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list ConfigMaps: {e}"))?
    {
        let mut text = serde_json::to_string(&c).unwrap_or_default();
        for (k, v) in c.binary_data.iter().flatten() {
            text.push_str(&format!("\n{k}: {}", String::from_utf8_lossy(&v.0)));
        }
        let ns = c.metadata.namespace.unwrap_or_default();
        let name = c.metadata.name.unwrap_or_default();
        found.push((format!("ConfigMap {ns}/{name}"), text));
    }
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| format!("API discovery: {e}"))?;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST)
                || ar.kind == "Secret"
                || ar.kind == "ConfigMap"
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let list = match api.list(&ListParams::default()).await {
                Ok(l) => l,
                // An aggregated API whose server is gone, or a kind that cannot be listed
                // cluster-wide: nothing stored there to scan.
                Err(kube::Error::Api(e)) if [404, 405, 503].contains(&e.code) => continue,
                Err(e) => return Err(format!("list {}: {e}", ar.plural)),
            };
            for o in list {
                let what = format!(
                    "{} {}/{}",
                    ar.kind,
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap_or_default()
                );
                found.push((what, serde_json::to_string(&o).unwrap_or_default()));
            }
        }
    }
    Ok((found, homes))
}

/// What a scan looked at, and what it found.
#[derive(Debug, Default)]
pub struct Report {
    /// Objects searched (outside the key homes).
    pub objects: usize,
    /// Log files and lines searched.
    pub log_files: usize,
    pub log_lines: usize,
    /// Private keys found where they belong, whose material was searched for too.
    pub keys_at_home: usize,
    /// Every place a private key was found where it does not belong (or a cluster that could
    /// not be scanned); empty when clean.
    pub problems: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "secret hygiene: {} objects, {} log files ({} lines), the material of {} keys where \
             they belong: {}",
            self.objects,
            self.log_files,
            self.log_lines,
            self.keys_at_home,
            if self.problems.is_empty() {
                "clean".to_owned()
            } else {
                format!("{} problems", self.problems.len())
            }
        )
    }
}

/// Scans the logs under `dir` and the objects of `clusters` (their clients).
pub async fn scan(dir: &Path, clusters: &[(String, kube::Client)]) -> Report {
    let mut needles = Needles::new();
    let mut places = Vec::new();
    let mut problems = Vec::new();
    let mut report = Report::default();
    for (cluster, client) in clusters {
        match objects(client).await {
            Ok((found, homes)) => {
                for h in &homes {
                    report.keys_at_home += needles.add_keys_of(h);
                }
                places.extend(
                    found
                        .into_iter()
                        .map(|(w, t)| (format!("{cluster}: {w}"), t)),
                );
            }
            Err(e) => problems.push(format!("{cluster}: cannot scan its objects: {e}")),
        }
    }
    report.objects = places.len();
    for (what, text) in &places {
        let hits = needles.hits(text);
        if !hits.is_empty() {
            problems.push(format!("private key material in {what} ({hits:?})"));
        }
    }
    let mut files = Vec::new();
    log_files(dir, &mut files);
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        report.log_files += 1;
        for (i, line) in text.lines().enumerate() {
            report.log_lines += 1;
            let hits = needles.hits(line);
            if !hits.is_empty() {
                problems.push(format!(
                    "private key material in {}:{} ({hits:?})",
                    f.display(),
                    i + 1
                ));
            }
        }
    }
    report.problems = problems;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_key_as_pem_base64_and_its_own_material() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem_text = key.serialize_pem();
        let mut n = Needles::new();
        assert!(!n.hits(&pem_text).is_empty(), "PEM armour");
        let b64 = STANDARD.encode(pem_text.as_bytes());
        assert!(
            !n.hits(&format!("client-key-data: {b64}")).is_empty(),
            "base64 PEM"
        );
        n.add_keys_of(pem_text.as_bytes());
        let der = key.serialize_der();
        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!n.hits(&format!("key bytes {hex}")).is_empty(), "hex DER");
        let body = STANDARD.encode(&der);
        assert!(
            !n.hits(&format!("key={body}")).is_empty(),
            "bare base64 DER"
        );
        let other = rcgen::KeyPair::generate().unwrap();
        assert!(n.hits(&STANDARD.encode(other.serialize_der())).is_empty());
        assert!(
            n.hits("-----BEGIN CERTIFICATE-----\nMIIB...\n").is_empty(),
            "certificates are not keys"
        );
    }
}
