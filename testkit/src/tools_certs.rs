//! The openssl command sequence of Istio's `tools/certs` Makefiles (`common.mk` +
//! `Makefile.selfsigned.mk`): what users run without federator to make a root and a plug-in CA
//! per cluster. Every step is a process, as make runs it. The baseline of the `ca_issue` and
//! fleet benchmarks.
//!
//! Per cluster: write `intermediate.conf`; `genrsa` (or `genpkey` for EC); `req -new`;
//! `x509 -req -CA ... -extfile`; `cat ca-cert.pem root-cert.pem > cert-chain.pem`;
//! `cp root-cert.pem`.

use std::fs;
use std::path::Path;
use std::process::Command;

/// The key of the root and of each cluster CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// RSA 4096 (`genrsa`), the Makefiles' default.
    Rsa4096,
    /// ECDSA P-256 (`genpkey -algorithm EC`).
    EcdsaP256,
}

impl Key {
    /// The openssl arguments that write a key to `out`.
    pub fn keygen_args(self, out: &Path) -> Vec<String> {
        let out = out.to_string_lossy().into_owned();
        match self {
            Key::Rsa4096 => vec!["genrsa".into(), "-out".into(), out, "4096".into()],
            Key::EcdsaP256 => [
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ]
            .into_iter()
            .map(str::to_owned)
            .chain([out])
            .collect(),
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("openssl must be installed");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

const ROOT_CONF: &str = "[ req ]\nencrypt_key = no\nprompt = no\nutf8 = yes\ndefault_md = sha256\ndefault_bits = 4096\nreq_extensions = req_ext\nx509_extensions = req_ext\ndistinguished_name = req_dn\n[ req_ext ]\nsubjectKeyIdentifier = hash\nbasicConstraints = critical, CA:true\nkeyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign\n[ req_dn ]\nO = Istio\nCN = Root CA\n";

fn intermediate_conf(cluster: &str) -> String {
    format!(
        "[ req ]\nencrypt_key = no\nprompt = no\nutf8 = yes\ndefault_md = sha256\ndefault_bits = 4096\nreq_extensions = req_ext\nx509_extensions = req_ext\ndistinguished_name = req_dn\n[ req_ext ]\nsubjectKeyIdentifier = hash\nbasicConstraints = critical, CA:true, pathlen:0\nkeyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign\nsubjectAltName=@san\n[ san ]\nDNS.1 = istiod.istio-system.svc\n[ req_dn ]\nO = Istio\nCN = Intermediate CA\nL = {cluster}\n"
    )
}

/// `make root-ca`: `root-key.pem` and a self-signed `root-cert.pem` (10 years) in `dir`.
pub fn root(key: Key, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let conf = dir.join("root-ca.conf");
    fs::write(&conf, ROOT_CONF).unwrap();
    run(Command::new("openssl").args(key.keygen_args(&dir.join("root-key.pem"))));
    run(Command::new("openssl").args([
        "req",
        "-new",
        "-key",
        s(&dir.join("root-key.pem")),
        "-config",
        s(&conf),
        "-out",
        s(&dir.join("root-cert.csr")),
    ]));
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-days",
        "3650",
        "-signkey",
        s(&dir.join("root-key.pem")),
        "-extensions",
        "req_ext",
        "-extfile",
        s(&conf),
        "-in",
        s(&dir.join("root-cert.csr")),
        "-out",
        s(&dir.join("root-cert.pem")),
    ]));
}

/// `make <cluster>-cacerts`: in `out/<cluster>/`, the four files of Istio's `cacerts`
/// (`ca-key.pem`, `ca-cert.pem` signed by the root in `root_dir` for 2 years,
/// `cert-chain.pem`, `root-cert.pem`). Returns that directory.
pub fn cluster(key: Key, root_dir: &Path, out: &Path, cluster: &str) -> std::path::PathBuf {
    let d = out.join(cluster);
    fs::create_dir_all(&d).unwrap();
    let conf = d.join("intermediate.conf");
    fs::write(&conf, intermediate_conf(cluster)).unwrap();
    run(Command::new("openssl").args(key.keygen_args(&d.join("ca-key.pem"))));
    run(Command::new("openssl").args([
        "req",
        "-new",
        "-config",
        s(&conf),
        "-key",
        s(&d.join("ca-key.pem")),
        "-out",
        s(&d.join("cluster-ca.csr")),
    ]));
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-days",
        "730",
        "-CA",
        s(&root_dir.join("root-cert.pem")),
        "-CAkey",
        s(&root_dir.join("root-key.pem")),
        "-CAcreateserial",
        "-extensions",
        "req_ext",
        "-extfile",
        s(&conf),
        "-in",
        s(&d.join("cluster-ca.csr")),
        "-out",
        s(&d.join("ca-cert.pem")),
    ]));
    run(Command::new("sh").arg("-c").arg(format!(
        "cat {} {} > {}",
        s(&d.join("ca-cert.pem")),
        s(&root_dir.join("root-cert.pem")),
        s(&d.join("cert-chain.pem"))
    )));
    run(Command::new("cp")
        .arg(root_dir.join("root-cert.pem"))
        .arg(&d));
    d
}
