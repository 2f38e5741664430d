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

/// The newest key and CSR. `Debug` never shows the key.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The private key, PKCS#8 PEM.
    pub key_pem: SecretString,
    /// The CSR, PEM.
    pub csr_pem: String,
    /// The CSR generation it answers.
    pub generation: i64,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        same_key(&self.key_pem, &other.key_pem)
            && self.csr_pem == other.csr_pem
            && self.generation == other.generation
    }
}

impl Eq for Pending {}

/// The cluster CA that was validated and promoted. `Debug` never shows the key.
#[derive(Clone, Debug)]
pub struct InstalledMaterial {
    /// The private key, PKCS#8 PEM.
    pub key_pem: SecretString,
    /// The signed chain, cluster CA first, PEM.
    pub chain_pem: String,
    /// The CSR generation it answered.
    pub generation: i64,
}

impl PartialEq for InstalledMaterial {
    fn eq(&self, other: &Self) -> bool {
        same_key(&self.key_pem, &other.key_pem)
            && self.chain_pem == other.chain_pem
            && self.generation == other.generation
    }
}

impl Eq for InstalledMaterial {}

/// Whether two keys are the same key.
pub fn same_key(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
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
        let pending = read_trio(
            data,
            [PENDING_KEY, PENDING_CSR, PENDING_GENERATION],
            &mut problems,
        )
        .map(|(key_pem, csr_pem, generation)| Pending {
            key_pem: key_pem.into(),
            csr_pem,
            generation,
        });
        let installed = read_trio(
            data,
            [INSTALLED_KEY, INSTALLED_CHAIN, INSTALLED_GENERATION],
            &mut problems,
        )
        .map(|(key_pem, chain_pem, generation)| InstalledMaterial {
            key_pem: key_pem.into(),
            chain_pem,
            generation,
        });
        (Self { pending, installed }, problems)
    }

    /// The Secret's data: exactly the keys of the trios present.
    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        if let Some(p) = &self.pending {
            out.insert(
                PENDING_KEY.to_owned(),
                p.key_pem.expose_secret().as_bytes().to_vec(),
            );
            out.insert(PENDING_CSR.to_owned(), p.csr_pem.as_bytes().to_vec());
            out.insert(
                PENDING_GENERATION.to_owned(),
                p.generation.to_string().into_bytes(),
            );
        }
        if let Some(i) = &self.installed {
            out.insert(
                INSTALLED_KEY.to_owned(),
                i.key_pem.expose_secret().as_bytes().to_vec(),
            );
            out.insert(INSTALLED_CHAIN.to_owned(), i.chain_pem.as_bytes().to_vec());
            out.insert(
                INSTALLED_GENERATION.to_owned(),
                i.generation.to_string().into_bytes(),
            );
        }
        out
    }

    /// Whether the pending CSR is the one installed (same key).
    pub fn pending_is_installed(&self) -> bool {
        match (&self.pending, &self.installed) {
            (Some(p), Some(i)) => same_key(&p.key_pem, &i.key_pem),
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
