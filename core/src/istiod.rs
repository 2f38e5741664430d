//! What each istiod version does with `cacerts`: the per-version rules federator depends on.
//!
//! Pure: [`IstiodVersion`] parses the version an istiod Deployment runs (its image tag, or the
//! Helm chart's `app.kubernetes.io/version` label), and [`IstiodRules`] answers, for that
//! version, what istiod does with a change of its plug-in CA files. [`IstiodFacts`] is what
//! an istiod Deployment says about itself (version, `ISTIO_MULTIROOT_MESH`, workload
//! certificate TTL), read from its container images, environment and labels
//! ([`IstiodFacts::read`]). The cluster agent decides restarts with them; a `doctor` check can
//! reuse them unchanged. An unknown version gets the strictest rules of every supported
//! version, so a decision is never looser than the istiod that actually runs.
//!
//! The rules, each decided by a function of Istio's source (docs/istiod.md cites the lines per
//! version):
//!
//! | behaviour | versions | where |
//! |---|---|---|
//! | `cacerts` watched only when istiod *started* in plug-in mode; self-signed → plug-in needs a restart | all | `createIstioCA` (`pilot/pkg/bootstrap/istio_ca.go`) |
//! | a partial `cacerts` (some of the four files) is fatal at startup | 1.26.1+ | `createIstioCA` |
//! | a changed `root-cert.pem` is ignored unless `ISTIO_MULTIROOT_MESH=true` | all | `handleEvent` |
//! | with multi-root, old and new `root-cert.pem` must be raw-byte substrings of one another | ≤ 1.29 | `handleEvent` (`bytes.Contains`) |
//! | with multi-root, one certificate set must contain the other (order and encoding free) | 1.30+ | `handleEvent` → `pemBundleHasSubsetRelation` |
//! | workload certificates are clamped to the signing CA's NotAfter | 1.28.7+, 1.29.3+, 1.30+ | `genCertTemplateFromCSR` (`security/pkg/pki/util/generate_cert.go`) |

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use time::OffsetDateTime;

use crate::cert;

/// The environment variable that lets istiod hot-reload root changes.
pub const MULTIROOT_ENV: &str = "ISTIO_MULTIROOT_MESH";
/// The environment variable with istiod's default workload certificate TTL.
pub const WORKLOAD_TTL_ENV: &str = "DEFAULT_WORKLOAD_CERT_TTL";
/// istiod's default workload certificate TTL (and istio-agent's `SECRET_TTL`).
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// The label Istio's Helm chart puts on the istiod Deployment with the chart's app version.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// The name of istiod's container in Istio's Helm chart.
pub const DISCOVERY_CONTAINER: &str = "discovery";

/// An Istio release, as an image tag names it: `1.29.2`, `1.30.0-rc.0`, `1.31-dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstiodVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version; `None` for a development build such as `1.31-dev`.
    pub patch: Option<u32>,
    /// A pre-release (`alpha.0`, `beta.1`, `rc.0`, `dev`): older than the release it precedes.
    pub pre_release: Option<String>,
}

/// Words that make a tag suffix a pre-release rather than a build variant (`-distroless`,
/// `-debug`, a vendor's `-fips`).
const PRE_RELEASE_WORDS: [&str; 4] = ["alpha", "beta", "rc", "dev"];

impl IstiodVersion {
    /// A release version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch: Some(patch),
            pre_release: None,
        }
    }

    /// Parses a version or image tag: an optional `v`, `MAJOR.MINOR[.PATCH]`, then an optional
    /// `-suffix`. A suffix starting with `alpha`, `beta`, `rc` or `dev` is a pre-release; any
    /// other (`distroless`, `debug`, a vendor's) is a build variant of the release. `None` for
    /// anything else (`latest`, a commit hash).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let (numbers, suffix) = match text.split_once('-') {
            Some((n, s)) => (n, Some(s)),
            None => (text, None),
        };
        let mut parts = numbers.split('.');
        let number = |p: Option<&str>| -> Option<u32> {
            let p = p?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let major = number(parts.next())?;
        let minor = number(parts.next())?;
        let patch = match parts.next() {
            Some(p) => Some(number(Some(p))?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        let pre_release = suffix
            .filter(|s| PRE_RELEASE_WORDS.iter().any(|w| s.starts_with(w)))
            .map(str::to_owned);
        // `1.31-dev` has no patch and is a development build: a pre-release of 1.31.0.
        let pre_release = match (patch, pre_release) {
            (None, None) => Some("dev".to_owned()),
            (_, p) => p,
        };
        Some(Self {
            major,
            minor,
            patch,
            pre_release,
        })
    }

    /// The version in a container image reference: the tag of `hub/pilot:1.29.2-distroless`,
    /// also with a `@sha256:` digest after it. `None` without a tag that parses (a digest-only
    /// reference, `latest`).
    pub fn from_image(image: &str) -> Option<Self> {
        let without_digest = image.split('@').next().unwrap_or_default();
        // The tag follows the last ':' after the last '/' (a registry may carry a port).
        let name = without_digest.rsplit('/').next().unwrap_or_default();
        let (_, tag) = name.split_once(':')?;
        Self::parse(tag)
    }

    /// Whether this version is `major.minor.patch` or later. A pre-release is older than its
    /// release; a development build without a patch (`1.31-dev`) is older than `1.31.0`.
    pub fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        match (self.major, self.minor).cmp(&(major, minor)) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => match self.patch {
                None => false,
                Some(p) if p > patch => true,
                Some(p) if p < patch => false,
                Some(_) => self.pre_release.is_none(),
            },
        }
    }
}

impl fmt::Display for IstiodVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(p) = self.patch {
            write!(f, ".{p}")?;
        }
        if let Some(pre) = &self.pre_release {
            write!(f, "-{pre}")?;
        }
        Ok(())
    }
}

/// The text is not an Istio version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an Istio version (MAJOR.MINOR[.PATCH][-SUFFIX])")]
pub struct NotAVersion(String);

impl FromStr for IstiodVersion {
    type Err = NotAVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| NotAVersion(s.to_owned()))
    }
}

/// Written as its [`Display`](fmt::Display) text (`1.29.2`), which [`IstiodVersion::parse`]
/// reads back to the same value.
impl Serialize for IstiodVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IstiodVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// Whether an environment value is true the way Go's `strconv.ParseBool` reads it (istiod's
/// `env.Register` booleans).
fn go_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// Whether istiod runs with `ISTIO_MULTIROOT_MESH=true`, given its containers' environment
/// (name, literal value; a value from a reference is `None` and counts as unset).
pub fn multi_root<'a>(env: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> bool {
    env.into_iter()
        .any(|(name, value)| name == MULTIROOT_ENV && value.is_some_and(go_bool))
}

/// The workload certificate TTL istiod uses by default: `DEFAULT_WORKLOAD_CERT_TTL` when set
/// to a duration, else 24 h.
pub fn workload_ttl<'a>(env: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Duration {
    env.into_iter()
        .filter(|(name, _)| *name == WORKLOAD_TTL_ENV)
        .find_map(|(_, value)| value.and_then(|v| crate::duration::parse(v).ok()))
        .unwrap_or(DEFAULT_WORKLOAD_TTL)
}

/// The version istiod runs: the tag of the first container image that names one, else the
/// `app.kubernetes.io/version` label.
pub fn version_of<'a>(
    images: impl IntoIterator<Item = &'a str>,
    version_label: Option<&str>,
) -> Option<IstiodVersion> {
    images
        .into_iter()
        .find_map(IstiodVersion::from_image)
        .or_else(|| version_label.and_then(IstiodVersion::parse))
}

/// One container of an istiod Deployment's Pod template, as [`IstiodFacts::read`] needs it.
#[derive(Clone, Copy, Debug)]
pub struct Container<'a> {
    /// Its name (`discovery` is istiod; others may be sidecars).
    pub name: &'a str,
    /// Its image reference.
    pub image: Option<&'a str>,
    /// Its environment: name and literal value (`None`: set from a reference).
    pub env: &'a [(&'a str, Option<&'a str>)],
}

/// What an istiod Deployment says about the istiod it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstiodFacts {
    /// `ISTIO_MULTIROOT_MESH=true` on one of its containers.
    pub multi_root: bool,
    /// The version it runs, if known.
    pub version: Option<IstiodVersion>,
    /// Its default workload certificate TTL.
    pub workload_ttl: Duration,
}

impl IstiodFacts {
    /// Reads the Pod template's containers and the Deployment's `app.kubernetes.io/version`
    /// label: the version from the `discovery` container's image first (then any other's, then
    /// the label), the multi-root flag and workload TTL from any container's environment.
    pub fn read(containers: &[Container<'_>], version_label: Option<&str>) -> Self {
        let env = || containers.iter().flat_map(|c| c.env.iter().copied());
        let images = containers
            .iter()
            .filter(|c| c.name == DISCOVERY_CONTAINER)
            .chain(containers.iter().filter(|c| c.name != DISCOVERY_CONTAINER))
            .filter_map(|c| c.image);
        Self {
            multi_root: multi_root(env()),
            version: version_of(images, version_label),
            workload_ttl: workload_ttl(env()),
        }
    }

    /// The rules of its version (the strictest when unknown).
    pub fn rules(&self) -> IstiodRules {
        IstiodRules::for_version(self.version.clone())
    }

    /// The version for messages: `1.29.2`, or `of an unknown version`.
    pub fn version_text(&self) -> String {
        version_text(self.version.as_ref())
    }
}

fn version_text(version: Option<&IstiodVersion>) -> String {
    version.map_or_else(|| "of an unknown version".to_owned(), ToString::to_string)
}

/// A warning when this istiod version does not clamp workload certificates to the cluster CA
/// (before 1.28.7, 1.29.3, 1.30) and certificates issued before the renewal (`renew_after`;
/// `None`: none is planned) can outlive the installed cluster CA (`ca_not_after`).
pub fn leaf_outlives_ca_warning(
    facts: &IstiodFacts,
    ca_not_after: OffsetDateTime,
    renew_after: Option<OffsetDateTime>,
) -> Option<String> {
    if facts.rules().clamps_leaf_to_signer() {
        return None;
    }
    let ttl = time::Duration::try_from(facts.workload_ttl).ok()?;
    let last_issue = renew_after.unwrap_or(ca_not_after);
    if last_issue + ttl <= ca_not_after {
        return None;
    }
    Some(format!(
        "istiod {} does not clamp workload certificates to the cluster CA's NotAfter (1.28.7+, 1.29.3+ and 1.30+ do): certificates of {} issued after {} outlive the cluster CA (expires {}) and fail once it expires; use a cluster CA TTL that leaves at least the workload TTL at renewal",
        facts.version_text(),
        crate::duration::format(facts.workload_ttl),
        cert::rfc3339(ca_not_after - ttl),
        cert::rfc3339(ca_not_after),
    ))
}

/// How istiod compares an old and a new `root-cert.pem` with `ISTIO_MULTIROOT_MESH=true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootComparison {
    /// ≤ 1.29: `bytes.Contains(old, new) || bytes.Contains(new, old)`. A root added anywhere
    /// but at an end, a root removed from the middle, or the same roots in another order are
    /// refused.
    Substring,
    /// 1.30+: the DER sets of the `CERTIFICATE` blocks, one a superset of the other (neither
    /// empty).
    CertificateSet,
    /// The version is unknown: both rules must accept the change.
    Strictest,
}

impl fmt::Display for RootComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RootComparison::Substring => "raw-byte substring (istiod ≤ 1.29)",
            RootComparison::CertificateSet => "certificate-set subset (istiod 1.30+)",
            RootComparison::Strictest => "both the substring and the set rule (version unknown)",
        })
    }
}

/// What istiod does when its `cacerts` files change (its `handleEvent`), as far as
/// `root-cert.pem` decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootUpdate {
    /// The bytes are the same: istiod reloads the signing CA and keeps its roots.
    Unchanged,
    /// istiod logs `Updating new ROOT-CA` and takes the whole update.
    Accepted,
    /// istiod logs a warning and ignores the whole update, the signing CA included.
    Ignored(String),
}

/// The rules of one istiod version (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstiodRules {
    version: Option<IstiodVersion>,
}

impl IstiodRules {
    /// The rules of `version`; `None` (unknown) gets the strictest of every version.
    pub fn for_version(version: Option<IstiodVersion>) -> Self {
        Self { version }
    }

    /// The version these rules are for, if known.
    pub fn version(&self) -> Option<&IstiodVersion> {
        self.version.as_ref()
    }

    /// How a changed `root-cert.pem` is compared (with multi-root).
    pub fn root_comparison(&self) -> RootComparison {
        match &self.version {
            None => RootComparison::Strictest,
            Some(v) if v.at_least(1, 30, 0) => RootComparison::CertificateSet,
            Some(_) => RootComparison::Substring,
        }
    }

    /// Whether istiod clamps a workload certificate's NotAfter to its signing CA's
    /// (1.28.7+, 1.29.3+, 1.30+). Unknown: no (the stricter assumption).
    pub fn clamps_leaf_to_signer(&self) -> bool {
        self.version.as_ref().is_some_and(|v| {
            v.at_least(1, 30, 0)
                || (v.major == 1 && v.minor == 29 && v.at_least(1, 29, 3))
                || (v.major == 1 && v.minor == 28 && v.at_least(1, 28, 7))
        })
    }

    /// Whether a partial `cacerts` (some but not all four files) makes istiod fail to start
    /// (1.26.1+) rather than fall back to its self-signed CA. Unknown: yes.
    pub fn partial_bundle_is_fatal(&self) -> bool {
        self.version.as_ref().is_none_or(|v| v.at_least(1, 26, 1))
    }

    /// What istiod does when `root-cert.pem` goes from `old` to `new` (raw file bytes) while
    /// it runs in plug-in mode, with or without `ISTIO_MULTIROOT_MESH=true`.
    pub fn root_update(&self, multi_root: bool, old: &[u8], new: &[u8]) -> RootUpdate {
        if old == new {
            return RootUpdate::Unchanged;
        }
        if !multi_root {
            return RootUpdate::Ignored(
                "root-cert.pem changed and istiod runs without ISTIO_MULTIROOT_MESH=true (\"Multi root is disabled, updating new ROOT-CA not supported\")".into(),
            );
        }
        let substring = contains(old, new) || contains(new, old);
        let set = certificate_sets_nested(old, new);
        let comparison = self.root_comparison();
        let accepted = match comparison {
            RootComparison::Substring => substring,
            RootComparison::CertificateSet => set,
            RootComparison::Strictest => substring && set,
        };
        if accepted {
            return RootUpdate::Accepted;
        }
        let version = version_text(self.version.as_ref());
        let why = match (substring, set) {
            (false, true) => {
                "the old and new roots are one inside the other as sets, but neither text contains the other"
            }
            (true, false) => "the texts contain one another but the certificate sets do not",
            _ => "roots are added and removed at once",
        };
        RootUpdate::Ignored(format!(
            "istiod {version} compares root-cert.pem by {comparison} and would ignore this change: {why} (\"Updating new ROOT-CA not supported\")"
        ))
    }
}

/// Go's `bytes.Contains`: an empty needle is always contained.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// istiod 1.30+'s `pemBundleHasSubsetRelation`: the DER of every `CERTIFICATE` block, as
/// sets; true when neither is empty and one contains the other. Blocks of other types and
/// text between blocks are ignored, as Go's `pem.Decode` loop does.
fn certificate_sets_nested(a: &[u8], b: &[u8]) -> bool {
    let set = |text: &[u8]| -> BTreeSet<Vec<u8>> {
        pem::parse_many(text)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect()
    };
    let (a, b) = (set(a), set(b));
    !a.is_empty() && !b.is_empty() && (a.is_superset(&b) || b.is_superset(&a))
}

/// The DER certificates of a `root-cert.pem` as a set of SHA-256 fingerprints (what istiod
/// publishes in `istio-ca-root-cert` is compared with what was installed this way).
pub fn root_fingerprints(pem_text: &[u8]) -> Option<BTreeSet<String>> {
    let ders = cert::parse_pem_certificates(pem_text, "root-cert.pem").ok()?;
    Some(ders.iter().map(|d| cert::fingerprint(d)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> IstiodVersion {
        IstiodVersion::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    fn root(name: &str) -> String {
        federator_testkit::pki::root(name).cert_pem()
    }

    fn facts(version: Option<&str>) -> IstiodFacts {
        IstiodFacts {
            multi_root: true,
            version: version.map(v),
            workload_ttl: DEFAULT_WORKLOAD_TTL,
        }
    }

    #[test]
    fn versions_are_written_as_text_and_read_back() {
        for text in ["1.29.2", "1.30.0-rc.0", "1.31-dev"] {
            let json = serde_json::to_value(v(text)).unwrap();
            assert_eq!(json, serde_json::json!(text));
            assert_eq!(
                serde_json::from_value::<IstiodVersion>(json).unwrap(),
                v(text)
            );
        }
        let bad = serde_json::from_value::<IstiodVersion>(serde_json::json!("latest"));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("not an Istio version"),
            "an image tag that names no version is refused"
        );
    }

    #[test]
    fn parses_tags_images_and_labels() {
        assert_eq!(v("1.29.2"), IstiodVersion::new(1, 29, 2));
        assert_eq!(v("v1.27.9"), IstiodVersion::new(1, 27, 9));
        assert_eq!(v("1.29.2-distroless"), IstiodVersion::new(1, 29, 2));
        assert_eq!(v("1.28.3-fips"), IstiodVersion::new(1, 28, 3));
        let rc = v("1.30.0-rc.0");
        assert_eq!(rc.pre_release.as_deref(), Some("rc.0"));
        let dev = v("1.31-dev");
        assert_eq!((dev.patch, dev.pre_release.as_deref()), (None, Some("dev")));
        for bad in ["latest", "", "1", "1.x.2", "1.2.3.4", "abc123", "1..2"] {
            assert_eq!(IstiodVersion::parse(bad), None, "{bad}");
        }
        let img = IstiodVersion::from_image;
        assert_eq!(
            img("docker.io/istio/pilot:1.29.2"),
            Some(IstiodVersion::new(1, 29, 2))
        );
        assert_eq!(
            img("registry.local:5000/istio/pilot:1.27.9-distroless@sha256:abcd"),
            Some(IstiodVersion::new(1, 27, 9))
        );
        assert_eq!(img("registry.local:5000/istio/pilot@sha256:abcd"), None);
        assert_eq!(img("istio/pilot"), None);
        assert_eq!(img("istio/pilot:latest"), None);
        assert_eq!(v("1.31.1").to_string(), "1.31.1");
        assert_eq!(v("1.30.0-rc.0").to_string(), "1.30.0-rc.0");
        assert_eq!(v("1.31-dev").to_string(), "1.31-dev");
    }

    #[test]
    fn orders_releases_pre_releases_and_dev_builds() {
        assert!(v("1.30.0").at_least(1, 30, 0));
        assert!(v("1.31.1").at_least(1, 30, 0));
        assert!(v("2.0.0").at_least(1, 30, 0));
        assert!(!v("1.29.9").at_least(1, 30, 0));
        assert!(!v("1.30.0-rc.0").at_least(1, 30, 0));
        assert!(v("1.30.1-rc.0").at_least(1, 30, 0));
        assert!(!v("1.30-dev").at_least(1, 30, 0));
        assert!(v("1.31-dev").at_least(1, 30, 0));
    }

    #[test]
    fn rules_per_version() {
        let r = |s: &str| IstiodRules::for_version(Some(v(s)));
        for old in [
            "1.26.8",
            "1.27.9",
            "1.28.3",
            "1.29.2",
            "1.29.6",
            "1.30.0-rc.0",
        ] {
            assert_eq!(r(old).root_comparison(), RootComparison::Substring, "{old}");
        }
        for new in ["1.30.0", "1.30.3", "1.31.0", "1.31.1"] {
            assert_eq!(
                r(new).root_comparison(),
                RootComparison::CertificateSet,
                "{new}"
            );
        }
        let unknown = IstiodRules::for_version(None);
        assert_eq!(unknown.root_comparison(), RootComparison::Strictest);
        // Leaf clamping: backported to 1.28.7 and 1.29.3.
        for (s, clamps) in [
            ("1.26.8", false),
            ("1.27.9", false),
            ("1.28.3", false),
            ("1.28.7", true),
            ("1.29.2", false),
            ("1.29.3", true),
            ("1.30.0", true),
            ("1.31.1", true),
        ] {
            assert_eq!(r(s).clamps_leaf_to_signer(), clamps, "{s}");
        }
        assert!(!unknown.clamps_leaf_to_signer());
        assert!(!r("1.26.0").partial_bundle_is_fatal());
        assert!(r("1.26.1").partial_bundle_is_fatal());
        assert!(r("1.27.9").partial_bundle_is_fatal());
        assert!(unknown.partial_bundle_is_fatal());
    }

    #[test]
    fn root_updates_follow_each_versions_comparison() {
        let (a, b, c) = (root("a"), root("b"), root("c"));
        let old_rules = IstiodRules::for_version(Some(v("1.29.2")));
        let new_rules = IstiodRules::for_version(Some(v("1.31.1")));
        let unknown = IstiodRules::for_version(None);
        let all = [&old_rules, &new_rules, &unknown];
        let accepted =
            |r: &IstiodRules, o: &str, n: &str| r.root_update(true, o.as_bytes(), n.as_bytes());
        let ab = format!("{a}{b}");
        let abc = format!("{a}{b}{c}");
        // Same bytes: every version, with or without multi-root.
        for r in all {
            assert_eq!(
                r.root_update(false, ab.as_bytes(), ab.as_bytes()),
                RootUpdate::Unchanged
            );
            assert!(matches!(
                r.root_update(false, a.as_bytes(), ab.as_bytes()),
                RootUpdate::Ignored(why) if why.contains("ISTIO_MULTIROOT_MESH")
            ));
            // Appending a root, dropping the first or the last: a substring either way.
            assert_eq!(accepted(r, &ab, &abc), RootUpdate::Accepted);
            assert_eq!(accepted(r, &abc, &format!("{b}{c}")), RootUpdate::Accepted);
            assert_eq!(accepted(r, &abc, &ab), RootUpdate::Accepted);
            // Adding and removing at once: nobody.
            assert!(matches!(
                accepted(r, &ab, &format!("{a}{c}")),
                RootUpdate::Ignored(_)
            ));
        }
        // Dropping a root from the middle, inserting one in the middle, reordering: only the
        // set comparison of 1.30+ takes them.
        let ac = format!("{a}{c}");
        let ba = format!("{b}{a}");
        for (o, n) in [(&abc, &ac), (&ac, &abc), (&ab, &ba)] {
            assert_eq!(accepted(&new_rules, o, n), RootUpdate::Accepted);
            match accepted(&old_rules, o, n) {
                RootUpdate::Ignored(why) => {
                    assert!(why.contains("1.29.2") && why.contains("substring"), "{why}")
                }
                other => panic!("{other:?}"),
            }
            assert!(
                matches!(accepted(&unknown, o, n), RootUpdate::Ignored(why) if why.contains("unknown"))
            );
        }
        // 1.30+ ignores text between blocks and duplicates; the substring rule does not care
        // about sets at all.
        let noisy = format!("# comment\n{a}{a}{b}");
        assert_eq!(accepted(&new_rules, &ab, &noisy), RootUpdate::Accepted);
        // An empty new file: Go's bytes.Contains(old, "") is true (istiod then fails to verify
        // the bundle); the set rule refuses an empty set.
        assert_eq!(accepted(&old_rules, &ab, ""), RootUpdate::Accepted);
        assert!(matches!(
            accepted(&new_rules, &ab, ""),
            RootUpdate::Ignored(_)
        ));
    }

    #[test]
    fn root_fingerprints_are_a_set() {
        let (a, b) = (root("a"), root("b"));
        assert_eq!(
            root_fingerprints(format!("{a}{b}").as_bytes()),
            root_fingerprints(format!("{b}{a}").as_bytes())
        );
        assert_ne!(
            root_fingerprints(a.as_bytes()),
            root_fingerprints(format!("{a}{b}").as_bytes())
        );
        assert_eq!(root_fingerprints(b"junk"), None);
    }

    #[test]
    fn reads_the_multiroot_flag_like_go() {
        assert!(multi_root([("ISTIO_MULTIROOT_MESH", Some("true"))]));
        assert!(multi_root([
            ("A", None),
            ("ISTIO_MULTIROOT_MESH", Some("1"))
        ]));
        assert!(!multi_root([("ISTIO_MULTIROOT_MESH", Some("false"))]));
        assert!(!multi_root([("ISTIO_MULTIROOT_MESH", Some("yes"))]));
        assert!(!multi_root([("ISTIO_MULTIROOT_MESH", None)]));
        assert!(!multi_root([]));
    }

    #[test]
    fn reads_version_and_ttl_from_the_deployment() {
        assert_eq!(
            version_of(["docker.io/istio/pilot:1.27.9-distroless"], Some("1.29.2")),
            IstiodVersion::parse("1.27.9")
        );
        assert_eq!(
            version_of(["gcr.io/istio-release/pilot@sha256:00"], Some("1.29.2")),
            IstiodVersion::parse("1.29.2")
        );
        assert_eq!(
            version_of(["busybox", "istio/pilot:1.31.1"], None),
            IstiodVersion::parse("1.31.1")
        );
        assert_eq!(version_of(["istio/pilot:latest"], None), None);
        assert_eq!(workload_ttl([]), DEFAULT_WORKLOAD_TTL);
        assert_eq!(
            workload_ttl([("DEFAULT_WORKLOAD_CERT_TTL", Some("1h"))]),
            Duration::from_secs(3600)
        );
        assert_eq!(
            workload_ttl([("DEFAULT_WORKLOAD_CERT_TTL", Some("soon"))]),
            DEFAULT_WORKLOAD_TTL
        );
    }

    #[test]
    fn facts_come_from_the_discovery_container_first() {
        let sidecar_env = [("DEFAULT_WORKLOAD_CERT_TTL", Some("2h"))];
        let istiod_env = [("ISTIO_MULTIROOT_MESH", Some("true"))];
        let containers = [
            Container {
                name: "proxy",
                image: Some("istio/proxyv2:1.29.2"),
                env: &sidecar_env,
            },
            Container {
                name: DISCOVERY_CONTAINER,
                image: Some("istio/pilot:1.27.9"),
                env: &istiod_env,
            },
        ];
        let f = IstiodFacts::read(&containers, Some("1.31.1"));
        assert_eq!(
            f,
            IstiodFacts {
                multi_root: true,
                version: Some(v("1.27.9")),
                workload_ttl: Duration::from_secs(7200),
            }
        );
        assert_eq!(f.rules().root_comparison(), RootComparison::Substring);
        assert_eq!(f.version_text(), "1.27.9");
        // No image names a version: the Helm chart's label; neither: unknown.
        let untagged = [Container {
            name: DISCOVERY_CONTAINER,
            image: Some("istio/pilot@sha256:00"),
            env: &[],
        }];
        assert_eq!(
            IstiodFacts::read(&untagged, Some("1.29.2")).version,
            Some(v("1.29.2"))
        );
        let unknown = IstiodFacts::read(&untagged, None);
        assert_eq!((unknown.version, unknown.multi_root), (None, false));
        assert_eq!(facts(None).version_text(), "of an unknown version");
        assert_eq!(
            facts(None).rules().root_comparison(),
            RootComparison::Strictest
        );
    }

    #[test]
    fn warns_when_workload_certificates_can_outlive_the_cluster_ca() {
        let not_after = time::macros::datetime!(2027-01-10 00:00 UTC);
        let early = Some(time::macros::datetime!(2027-01-01 00:00 UTC));
        let late = Some(time::macros::datetime!(2027-01-09 12:00 UTC));
        let old = facts(Some("1.29.2"));
        assert_eq!(leaf_outlives_ca_warning(&old, not_after, early), None);
        let w = leaf_outlives_ca_warning(&old, not_after, late).unwrap();
        assert!(w.contains("1.29.2") && w.contains("24h"), "{w}");
        assert_eq!(
            leaf_outlives_ca_warning(&facts(Some("1.29.3")), not_after, late),
            None
        );
        assert!(leaf_outlives_ca_warning(&facts(None), not_after, late).is_some());
        assert!(leaf_outlives_ca_warning(&old, not_after, None).is_some());
    }
}
