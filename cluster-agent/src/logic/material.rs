//! The agent's own Secret, `federator-system/federator-cluster-ca`: the key material that never
//! leaves the cluster.
//!
//! | key | content |
//! |---|---|
//! | `pending-key.pem` | the key of the newest CSR (PKCS#8) |
//! | `pending-csr.pem` | the newest CSR, published in `status.csr` |
//! | `pending-generation` | the CSR generation it answers (decimal) |
//! | `installed-key.pem` | the key of the cluster CA in `cacerts` (PKCS#8) |
//! | `installed-chain.pem` | its signed chain: cluster CA first, then up to the root |
//! | `installed-generation` | the CSR generation it answered (decimal) |
//!
//! The pending trio is written **before** the CSR is published; the installed trio is written
//! after the hub's chain was validated and **before** `cacerts` is written, so `cacerts` is
//! always a projection of this Secret and of `spec.bundle`.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};

/// Key of the pending private key.
pub const PENDING_KEY: &str = "pending-key.pem";
/// Key of the pending CSR.
pub const PENDING_CSR: &str = "pending-csr.pem";
/// Key of the pending CSR generation.
pub const PENDING_GENERATION: &str = "pending-generation";
/// Key of the installed private key.
pub const INSTALLED_KEY: &str = "installed-key.pem";
/// Key of the installed chain.
pub const INSTALLED_CHAIN: &str = "installed-chain.pem";
/// Key of the installed CSR generation.
pub const INSTALLED_GENERATION: &str = "installed-generation";

/// A private key, PKCS#8 PEM: a `secrecy` secret (never in `Debug` output) that compares by
/// value.
#[derive(Clone, Debug)]
pub struct KeyPem(SecretString);

impl KeyPem {
    /// The PEM text, for writing it where it belongs.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for KeyPem {
    fn from(pem: String) -> Self {
        Self(pem.into())
    }
}

impl PartialEq for KeyPem {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for KeyPem {}

/// The newest key and CSR. `Debug` never shows the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The private key.
    pub key_pem: KeyPem,
    /// The CSR, PEM.
    pub csr_pem: String,
    /// The CSR generation it answers.
    pub generation: i64,
}

/// The cluster CA that was validated and promoted. `Debug` never shows the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledMaterial {
    /// The private key.
    pub key_pem: KeyPem,
    /// The signed chain, cluster CA first, PEM.
    pub chain_pem: String,
    /// The CSR generation it answered.
    pub generation: i64,
}

/// Everything the agent Secret holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentMaterial {
    /// The newest key and CSR, if any.
    pub pending: Option<Pending>,
    /// The promoted cluster CA, if any.
    pub installed: Option<InstalledMaterial>,
}

impl AgentMaterial {
    /// Reads the Secret's data. A trio that is incomplete or unreadable counts as absent, and
    /// is reported as a problem (a hand edit: the agent then starts that part over).
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let mut read = |keys| read_trio(data, keys, &mut problems);
        let pending = read([PENDING_KEY, PENDING_CSR, PENDING_GENERATION]).map(
            |(key, csr_pem, generation)| Pending {
                key_pem: key.into(),
                csr_pem,
                generation,
            },
        );
        let installed = read([INSTALLED_KEY, INSTALLED_CHAIN, INSTALLED_GENERATION]).map(
            |(key, chain_pem, generation)| InstalledMaterial {
                key_pem: key.into(),
                chain_pem,
                generation,
            },
        );
        (Self { pending, installed }, problems)
    }

    /// The Secret's data: exactly the keys of the trios present.
    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        let pending = self.pending.as_ref().map(|p| {
            [
                (PENDING_KEY, p.key_pem.expose()),
                (PENDING_CSR, &p.csr_pem),
                (PENDING_GENERATION, &p.generation.to_string()),
            ]
            .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
        });
        let installed = self.installed.as_ref().map(|i| {
            [
                (INSTALLED_KEY, i.key_pem.expose()),
                (INSTALLED_CHAIN, &i.chain_pem),
                (INSTALLED_GENERATION, &i.generation.to_string()),
            ]
            .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
        });
        pending.into_iter().chain(installed).flatten().collect()
    }

    /// Whether the pending CSR is the one installed (same key).
    pub fn pending_is_installed(&self) -> bool {
        match (&self.pending, &self.installed) {
            (Some(p), Some(i)) => p.key_pem == i.key_pem,
            _ => false,
        }
    }
}

fn read_trio(
    data: &BTreeMap<String, Vec<u8>>,
    [a, b, c]: [&str; 3],
    problems: &mut Vec<String>,
) -> Option<(String, String, i64)> {
    let present = [a, b, c].iter().filter(|k| data.contains_key(**k)).count();
    if present == 0 {
        return None;
    }
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .filter(|s| !s.trim().is_empty())
    };
    let generation = text(c).and_then(|s| s.trim().parse::<i64>().ok());
    match (text(a), text(b), generation) {
        (Some(x), Some(y), Some(g)) => Some((x, y, g)),
        _ => {
            problems.push(format!(
                "the agent Secret holds an incomplete or unreadable {a} / {b} / {c} set (edited by hand?); the agent starts that part over"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentMaterial {
        AgentMaterial {
            pending: Some(Pending {
                key_pem: "KEY2".to_owned().into(),
                csr_pem: "CSR2".into(),
                generation: 2,
            }),
            installed: Some(InstalledMaterial {
                key_pem: "KEY1".to_owned().into(),
                chain_pem: "CHAIN1".into(),
                generation: 1,
            }),
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        let (back, problems) = AgentMaterial::from_data(&m.to_data());
        assert_eq!(back, m);
        assert!(problems.is_empty());
        assert_eq!(m.to_data().len(), 6);
        assert!(!m.pending_is_installed());
        let (empty, problems) = AgentMaterial::from_data(&BTreeMap::new());
        assert_eq!(empty, AgentMaterial::default());
        assert!(problems.is_empty());
    }

    #[test]
    fn incomplete_trio_is_absent_and_reported() {
        let mut data = sample().to_data();
        data.remove(PENDING_CSR);
        data.insert(INSTALLED_GENERATION.into(), b"one".to_vec());
        let (m, problems) = AgentMaterial::from_data(&data);
        assert!(m.pending.is_none() && m.installed.is_none());
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn debug_hides_keys() {
        let dbg = format!("{:?}", sample());
        assert!(!dbg.contains("KEY1") && !dbg.contains("KEY2"), "{dbg}");
        assert!(dbg.contains("CSR2") && dbg.contains("CHAIN1"));
    }
}
