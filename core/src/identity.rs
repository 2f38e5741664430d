//! Names: member cluster names, SPIFFE trust domains and SPIFFE IDs.
//!
//! The rules follow the SPIFFE ID specification (§2.1, §2.2): a trust domain is lowercase
//! letters, digits, `.`, `-` and `_`; a path is `/`-separated non-empty segments of letters,
//! digits, `.`, `-` and `_`, never `.` or `..`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A SPIFFE trust domain such as `cluster.local` or `prod.example.com`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses and validates a trust domain name.
    pub fn new(name: &str) -> Result<Self> {
        let bad = |why: &str| Error::Invalid(format!("invalid trust domain {name:?}: {why}"));
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > 255 {
            return Err(bad("it is longer than 255 characters"));
        }
        if name.contains("://") {
            return Err(bad("give the bare name, without a scheme"));
        }
        if let Some(c) = name.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(bad(&format!(
                "character {c:?} is not allowed (use lowercase letters, digits, '.', '-', '_')"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name, e.g. `cluster.local`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself, `spiffe://<name>`, which federator records in
    /// the URI SAN of every cluster CA it issues.
    pub fn spiffe_uri(&self) -> String {
        format!("spiffe://{}", self.0)
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        Self(DEFAULT_TRUST_DOMAIN.to_owned())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(&s)
    }
}

impl From<TrustDomain> for String {
    fn from(td: TrustDomain) -> String {
        td.0
    }
}

/// A SPIFFE ID: `spiffe://<trust domain>[/<path>]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    path: String,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(uri: &str) -> Result<Self> {
        let bad = |why: &str| Error::Invalid(format!("invalid SPIFFE ID {uri:?}: {why}"));
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("it must start with spiffe://"))?;
        if rest.contains(['?', '#']) {
            return Err(bad("query and fragment are not allowed"));
        }
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if td.contains([':', '@']) {
            return Err(bad("port and user info are not allowed"));
        }
        let trust_domain = TrustDomain::new(td).map_err(|e| bad(&e.to_string()))?;
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return Err(bad("empty path segment (or trailing '/')"));
                }
                if segment == "." || segment == ".." {
                    return Err(bad("'.' and '..' path segments are not allowed"));
                }
                if let Some(c) = segment
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
                {
                    return Err(bad(&format!("character {c:?} is not allowed in the path")));
                }
            }
        }
        Ok(Self {
            trust_domain,
            path: path.to_owned(),
        })
    }

    /// The Istio workload identity `spiffe://<td>/ns/<namespace>/sa/<service account>`.
    pub fn workload(
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self> {
        Self::parse(&format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// The trust domain part.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path part, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

/// The name of a member cluster: a DNS-1123 label (it is used in Kubernetes object names).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

impl ClusterName {
    /// Parses and validates a cluster name.
    pub fn new(name: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "invalid cluster name {name:?}: {why} (use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
            ))
        };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > 63 {
            return Err(bad("it is too long"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(bad("it has a character that is not allowed"));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(bad("it starts or ends with '-'"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClusterName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for ClusterName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(&s)
    }
}

impl From<ClusterName> for String {
    fn from(n: ClusterName) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domains() {
        assert!(TrustDomain::new("cluster.local").is_ok());
        assert!(TrustDomain::new("prod_1.example-x.com").is_ok());
        for bad in [
            "",
            "Cluster.local",
            "spiffe://x",
            "a b",
            "x:80",
            &"a".repeat(256),
        ] {
            assert!(TrustDomain::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            TrustDomain::default().spiffe_uri(),
            "spiffe://cluster.local"
        );
    }

    #[test]
    fn spiffe_ids() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
        assert_eq!(id.trust_domain().as_str(), "cluster.local");
        assert_eq!(id.path(), "/ns/default/sa/web");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/web");
        assert_eq!(SpiffeId::parse("spiffe://td").unwrap().path(), "");
        for bad in [
            "http://td/x",
            "spiffe://TD/x",
            "spiffe://td/",
            "spiffe://td//x",
            "spiffe://td/./x",
            "spiffe://td/../x",
            "spiffe://td/x?y",
            "spiffe://td:443/x",
            "spiffe://td/x y",
            "spiffe:///x",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cluster_names() {
        assert!(ClusterName::new("cluster-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(ClusterName::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
