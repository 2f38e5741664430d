//! OCI image archives built from local binaries, without Docker or a registry.
//!
//! [`build`] writes one archive per [`ImageSpec`]: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) in a tar file, with one uncompressed layer, plus a Docker
//! `manifest.json`, so `ctr images import`, `kind load image-archive`, `podman load`,
//! `docker load` and `skopeo copy oci-archive:…` all take it. The manifest in `index.json`
//! carries the annotation `io.containerd.image.name` (the name containerd imports it under)
//! and `org.opencontainers.image.ref.name`.
//!
//! The root file system ([`ImageSpec::base`]) is the equivalent of the Dockerfile's
//! `gcr.io/distroless/cc-debian12:nonroot` for our binaries, made from this machine's Debian 12
//! files: the shared libraries the binary links against (from `ldd`, with the host's symlink
//! layout, e.g. `/lib -> usr/lib`), the CA bundle `/etc/ssl/certs/ca-certificates.crt`,
//! `/etc/passwd` and `/etc/group` with `root`, `nobody` and `nonroot` (65532), an
//! `/etc/nsswitch.conf`, `/tmp` (1777) and `/home/nonroot` (owned by 65532). The image config
//! sets the same `User`, `WorkingDir` and `Env` (`PATH`, `SSL_CERT_FILE`) as distroless, and
//! the Dockerfile's `Entrypoint`. Not included (our binaries use none of them): a shell,
//! `tzdata`, `libssl`, `libstdc++`.
//!
//! Archives are deterministic: every time stamp is 0 and entries are sorted, so the same
//! inputs give the same image digest.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The user distroless' `nonroot` images run as (and the Dockerfile's `USER`).
pub const NONROOT: u32 = 65532;
/// `PATH` in distroless images.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The CA bundle path (Debian's `ca-certificates`), also `SSL_CERT_FILE`.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One entry of the root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir { mode: u32, uid: u32, gid: u32 },
    /// A file, its content read from `source` when the archive is written.
    File {
        source: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A file with the given content.
    Content {
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A symbolic link to `target`.
    Symlink { target: PathBuf },
}

/// What to put into one image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The image reference containerd imports it as, e.g.
    /// `localhost/federator/cluster-agent:0.1.0`.
    pub name: String,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd` (default arguments).
    pub cmd: Vec<String>,
    /// `User`, e.g. `65532:65532`.
    pub user: String,
    /// `WorkingDir`.
    pub workdir: String,
    /// `Env`.
    pub env: Vec<String>,
    /// Labels of the image config.
    pub labels: BTreeMap<String, String>,
    /// The root file system, by absolute path inside the image.
    pub files: BTreeMap<PathBuf, Entry>,
}

impl ImageSpec {
    /// The distroless-equivalent base (see the module docs) with `binary` at
    /// `/usr/local/bin/<name>` as the entrypoint, its shared libraries, and user `nonroot`.
    pub fn base(name: &str, binary: &Path) -> Result<Self> {
        let file_name = binary
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Image(format!("{}: not a file", binary.display())))?;
        let target = PathBuf::from("/usr/local/bin").join(&file_name);
        let mut spec = ImageSpec {
            name: name.to_owned(),
            entrypoint: vec![target.to_string_lossy().into_owned()],
            cmd: Vec::new(),
            user: format!("{NONROOT}:{NONROOT}"),
            workdir: "/home/nonroot".into(),
            env: vec![PATH_ENV.into(), format!("SSL_CERT_FILE={CA_BUNDLE}")],
            labels: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        spec.dir("/", 0o755, 0);
        spec.dir("/tmp", 0o1777, 0);
        spec.dir("/home/nonroot", 0o700, NONROOT);
        spec.content(
            "/etc/passwd",
            b"root:x:0:0:root:/root:/sbin/nologin\n\
              nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
              nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        );
        spec.content(
            "/etc/group",
            b"root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n",
        );
        spec.content(
            "/etc/nsswitch.conf",
            b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
        );
        if Path::new(CA_BUNDLE).is_file() {
            spec.copy(CA_BUNDLE, Path::new(CA_BUNDLE), 0o644)?;
        }
        spec.copy(&target.to_string_lossy(), binary, 0o755)?;
        spec.add_shared_libraries(binary)?;
        let base = base_description();
        spec.labels
            .insert("org.opencontainers.image.base.name".into(), base.clone());
        spec.content(
            "/etc/os-release",
            format!(
                "PRETTY_NAME=\"federator image base ({base})\"\nNAME=\"federator image base\"\nID=federator-base\n"
            )
            .as_bytes(),
        );
        Ok(spec)
    }

    /// Runs the image as `uid:gid` (and makes `/home/nonroot` theirs if that is the workdir).
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = format!("{uid}:{gid}");
        self
    }

    /// Sets the working directory (created, owned by root, if missing).
    pub fn workdir(mut self, dir: &str) -> Self {
        self.workdir = dir.to_owned();
        if !self.files.contains_key(Path::new(dir)) {
            self.dir(dir, 0o755, 0);
        }
        self
    }

    /// Replaces the entrypoint.
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.entrypoint = args.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a directory (and its missing parents, owned by root).
    pub fn dir(&mut self, path: &str, mode: u32, owner: u32) {
        self.parents(Path::new(path));
        self.files.insert(
            PathBuf::from(path),
            Entry::Dir {
                mode,
                uid: owner,
                gid: owner,
            },
        );
    }

    /// Adds a file with `data`, owned by root, mode 0644.
    pub fn content(&mut self, path: &str, data: &[u8]) {
        self.parents(Path::new(path));
        self.files.insert(
            PathBuf::from(path),
            Entry::Content {
                data: data.to_vec(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        );
    }

    /// Adds a copy of the host file `source` at `path`, owned by root.
    pub fn copy(&mut self, path: &str, source: &Path, mode: u32) -> Result<()> {
        if !source.is_file() {
            return Err(Error::Image(format!("{}: no such file", source.display())));
        }
        self.parents(Path::new(path));
        self.files.insert(
            PathBuf::from(path),
            Entry::File {
                source: source.to_owned(),
                mode,
                uid: 0,
                gid: 0,
            },
        );
        Ok(())
    }

    fn parents(&mut self, path: &Path) {
        let mut p = path.parent();
        while let Some(dir) = p {
            self.files.entry(dir.to_owned()).or_insert(Entry::Dir {
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
            p = dir.parent();
        }
    }

    /// Adds the shared libraries `binary` needs (per `ldd`), reproducing the host's symlinks
    /// on the way (`/lib64 -> usr/lib64`, `ld-linux-x86-64.so.2 -> …`), so the dynamic loader
    /// finds them at the same paths as on the host.
    fn add_shared_libraries(&mut self, binary: &Path) -> Result<()> {
        let out = std::process::Command::new("ldd")
            .arg(binary)
            .output()
            .map_err(|e| Error::Image(format!("run ldd {}: {e}", binary.display())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        for lib in parse_ldd(&text) {
            self.add_host_path(&lib, 0)?;
        }
        Ok(())
    }

    /// Adds host path `path` as it is on the host: each symlink along the way as a symlink,
    /// the file at the end as a copy.
    fn add_host_path(&mut self, path: &Path, depth: u32) -> Result<()> {
        if depth > 16 {
            return Err(Error::Image(format!(
                "{}: too many levels of symlinks",
                path.display()
            )));
        }
        // Walk the components so symlinked directories (/lib -> usr/lib) become symlinks.
        let mut current = PathBuf::from("/");
        let comps: Vec<Component<'_>> = path.components().collect();
        for (i, comp) in comps.iter().enumerate() {
            let Component::Normal(name) = comp else {
                continue;
            };
            let next = current.join(name);
            let meta = std::fs::symlink_metadata(&next)
                .map_err(|e| Error::Image(format!("{}: {e}", next.display())))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&next)
                    .map_err(|e| Error::Image(format!("{}: {e}", next.display())))?;
                self.parents(&next);
                self.files.insert(
                    next.clone(),
                    Entry::Symlink {
                        target: target.clone(),
                    },
                );
                let resolved = if target.is_absolute() {
                    target
                } else {
                    current.join(target)
                };
                let rest: PathBuf = comps[i + 1..].iter().collect();
                return self.add_host_path(&normalize(&resolved.join(rest)), depth + 1);
            }
            if i + 1 == comps.len() {
                let mode = {
                    use std::os::unix::fs::PermissionsExt;
                    meta.permissions().mode() & 0o7777
                };
                return self.copy(&next.to_string_lossy(), &next, mode);
            }
            current = next;
        }
        Ok(())
    }
}

/// `a/./b/../c` → `a/c` (lexically; used on paths built from symlink targets).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// The absolute library paths in `ldd` output (the vDSO and "not a dynamic executable" give
/// none).
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// "Debian 12 files: libc6 2.36-9+deb12u14, …" from dpkg, or a plain description without it.
fn base_description() -> String {
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| "host".into());
    let versions: Vec<String> = ["libc6", "libgcc-s1", "ca-certificates"]
        .iter()
        .filter_map(|pkg| {
            let out = std::process::Command::new("dpkg-query")
                .args(["-W", "-f", "${Version}", pkg])
                .output()
                .ok()?;
            (out.status.success() && !out.stdout.is_empty())
                .then(|| format!("{pkg} {}", String::from_utf8_lossy(&out.stdout)))
        })
        .collect();
    if versions.is_empty() {
        format!("files from {os}")
    } else {
        format!("files from {os}: {}", versions.join(", "))
    }
}

/// What [`build`] wrote.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The image reference inside.
    pub name: String,
    /// The archive.
    pub path: PathBuf,
    /// The manifest digest (`sha256:…`), what containerd shows as the image's digest.
    pub digest: String,
    /// Size of the archive, bytes.
    pub size: u64,
}

impl Archive {
    /// Reads the name and manifest digest of an archive [`build`] (or any OCI image layout
    /// archive with an `io.containerd.image.name` annotation) wrote.
    pub fn read(path: &Path) -> Result<Archive> {
        let bad = |why: String| Error::Image(format!("{}: {why}", path.display()));
        let file = std::fs::File::open(path).map_err(Error::io("open", path))?;
        let size = file.metadata().map_err(Error::io("stat", path))?.len();
        let mut tar = tar::Archive::new(file);
        for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
            let entry = entry.map_err(|e| bad(e.to_string()))?;
            if entry.path().ok().as_deref() != Some(Path::new("index.json")) {
                continue;
            }
            let index: serde_json::Value =
                serde_json::from_reader(entry).map_err(|e| bad(format!("index.json: {e}")))?;
            let m = &index["manifests"][0];
            let name = m["annotations"]["io.containerd.image.name"]
                .as_str()
                .ok_or_else(
                    || bad("index.json names no image (io.containerd.image.name)".into()),
                )?;
            let digest = m["digest"]
                .as_str()
                .ok_or_else(|| bad("index.json has no manifest digest".into()))?;
            return Ok(Archive {
                name: name.to_owned(),
                path: path.to_owned(),
                digest: digest.to_owned(),
                size,
            });
        }
        Err(bad("no index.json: not an OCI image layout archive".into()))
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex_lower(&Sha256::digest(data))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A tar header with everything but the path (set when the entry is appended); time 0.
fn header(size: u64, mode: u32, uid: u32, gid: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(0);
    h
}

/// Writes the layer tar of `spec` to `out` and returns its SHA-256 (hex) and size.
fn write_layer(spec: &ImageSpec, out: &Path) -> Result<(String, u64)> {
    let file = std::fs::File::create(out).map_err(Error::io("create", out))?;
    let hashing = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hasher: Sha256::new(),
        written: 0,
    };
    let mut builder = tar::Builder::new(hashing);
    builder.mode(tar::HeaderMode::Deterministic);
    let io = |e: std::io::Error| Error::Image(format!("write layer {}: {e}", out.display()));
    for (path, entry) in &spec.files {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let name = if rel.as_os_str().is_empty() {
            PathBuf::from("./")
        } else {
            PathBuf::from("./").join(rel)
        };
        match entry {
            Entry::Dir { mode, uid, gid } => {
                let mut h = header(0, *mode, *uid, *gid, tar::EntryType::Directory);
                builder
                    .append_data(&mut h, &name, std::io::empty())
                    .map_err(io)?;
            }
            Entry::Content {
                data,
                mode,
                uid,
                gid,
            } => {
                let mut h = header(
                    data.len() as u64,
                    *mode,
                    *uid,
                    *gid,
                    tar::EntryType::Regular,
                );
                builder
                    .append_data(&mut h, &name, data.as_slice())
                    .map_err(io)?;
            }
            Entry::File {
                source,
                mode,
                uid,
                gid,
            } => {
                let f = std::fs::File::open(source).map_err(Error::io("open", source))?;
                let len = f.metadata().map_err(Error::io("stat", source))?.len();
                let mut h = header(len, *mode, *uid, *gid, tar::EntryType::Regular);
                builder.append_data(&mut h, &name, f).map_err(io)?;
            }
            Entry::Symlink { target } => {
                let mut h = header(0, 0o777, 0, 0, tar::EntryType::Symlink);
                builder.append_link(&mut h, &name, target).map_err(io)?;
            }
        }
    }
    let mut hashing = builder.into_inner().map_err(io)?;
    hashing.flush().map_err(io)?;
    Ok((hex_lower(&hashing.hasher.finalize_reset()), hashing.written))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The `GOARCH`-style name of this machine's architecture, as OCI configs use it.
pub fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes the image archive for `spec` to `out` (atomically: a temporary file is renamed).
pub fn build(spec: &ImageSpec, out: &Path) -> Result<Archive> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
    let work = tempfile::Builder::new()
        .prefix(".image-")
        .tempdir_in(parent)
        .map_err(Error::io("create", parent))?;
    let layer_path = work.path().join("layer.tar");
    let (layer_digest, layer_size) = write_layer(spec, &layer_path)?;

    let mut config = json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "config": {
            "User": spec.user,
            "Env": spec.env,
            "Entrypoint": spec.entrypoint,
            "WorkingDir": spec.workdir,
            "Labels": spec.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created_by": "testbed::image (federator)"}],
    });
    if !spec.cmd.is_empty() {
        config["config"]["Cmd"] = json!(spec.cmd);
    }
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = sha256_hex(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config_bytes.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer_size,
        }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = sha256_hex(&manifest_bytes);
    let tag = spec
        .name
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest_bytes.len(),
            "platform": {"architecture": oci_architecture(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": spec.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let docker_manifest = json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [spec.name],
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }]);

    let tmp = work.path().join("image.tar");
    {
        let file = std::fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(file));
        let io = |e: std::io::Error| Error::Image(format!("write {}: {e}", out.display()));
        let mut add = |name: &str, data: &[u8]| -> Result<()> {
            let mut h = header(data.len() as u64, 0o644, 0, 0, tar::EntryType::Regular);
            b.append_data(&mut h, name, data).map_err(io)
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add("index.json", &serde_json::to_vec(&index)?)?;
        add("manifest.json", &serde_json::to_vec(&docker_manifest)?)?;
        add(&format!("blobs/sha256/{config_digest}"), &config_bytes)?;
        add(&format!("blobs/sha256/{manifest_digest}"), &manifest_bytes)?;
        let layer = std::fs::File::open(&layer_path).map_err(Error::io("open", &layer_path))?;
        let mut h = header(layer_size, 0o644, 0, 0, tar::EntryType::Regular);
        b.append_data(&mut h, format!("blobs/sha256/{layer_digest}"), layer)
            .map_err(io)?;
        let mut w = b.into_inner().map_err(io)?;
        w.flush().map_err(io)?;
    }
    std::fs::rename(&tmp, out).map_err(Error::io("rename", out))?;
    let size = std::fs::metadata(out)
        .map_err(Error::io("stat", out))?
        .len();
    Ok(Archive {
        name: spec.name.clone(),
        path: out.to_owned(),
        digest: format!("sha256:{manifest_digest}"),
        size,
    })
}

/// Bumped when the archives [`build`] writes change, so cached ones are rebuilt.
const BUILDER_VERSION: u32 = 1;

/// The archive for `spec` at `out`, built unless `out` already holds one made from the same
/// inputs (recorded in `<out>.key`: the builder version, the image name and entrypoint, and the
/// size and modification time of every copied file).
pub fn build_cached(spec: &ImageSpec, out: &Path) -> Result<Archive> {
    let mut key = format!(
        "builder {BUILDER_VERSION}\nname {}\nentrypoint {:?}\nuser {}\n",
        spec.name, spec.entrypoint, spec.user
    );
    for (path, entry) in &spec.files {
        if let Entry::File { source, .. } = entry {
            let m = std::fs::metadata(source).map_err(Error::io("stat", source))?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            key.push_str(&format!(
                "{} {} {} {mtime}\n",
                path.display(),
                source.display(),
                m.len()
            ));
        }
    }
    let key_path = PathBuf::from(format!("{}.key", out.display()));
    if let Ok(stored) = std::fs::read_to_string(&key_path)
        && let Some((digest, stored_key)) = stored.split_once('\n')
        && stored_key == key
        && let Ok(m) = std::fs::metadata(out)
    {
        return Ok(Archive {
            name: spec.name.clone(),
            path: out.to_owned(),
            digest: digest.to_owned(),
            size: m.len(),
        });
    }
    let archive = build(spec, out)?;
    let tmp = key_path.with_extension("key.tmp");
    std::fs::write(&tmp, format!("{}\n{key}", archive.digest)).map_err(Error::io("write", &tmp))?;
    std::fs::rename(&tmp, &key_path).map_err(Error::io("rename", &key_path))?;
    Ok(archive)
}

/// The project's images, from the binaries in `bin_dir` (e.g. `target/release`): `cluster-agent`
/// as [`federator_api::names::AGENT_IMAGE`] and `federator` as
/// [`federator_api::names::FEDERATOR_IMAGE`], like the Dockerfile's two targets, written to
/// `out_dir` as `cluster-agent-<version>.oci.tar` and `federator-<version>.oci.tar`.
pub fn project_images(bin_dir: &Path, out_dir: &Path) -> Result<Vec<Archive>> {
    let version = env!("CARGO_PKG_VERSION");
    let mut out = Vec::new();
    for (binary, name) in [
        ("cluster-agent", federator_api::names::AGENT_IMAGE),
        ("federator", federator_api::names::FEDERATOR_IMAGE),
    ] {
        let path = bin_dir.join(binary);
        if !path.is_file() {
            return Err(Error::Image(format!(
                "{} not found: build it first (cargo build -p {binary}), the image is made from it",
                path.display()
            )));
        }
        let spec = ImageSpec::base(name, &path)?;
        out.push(build_cached(
            &spec,
            &out_dir.join(format!("{binary}-{version}.oci.tar")),
        )?);
    }
    Ok(out)
}

/// The directory of the running executable's sibling binaries: `target/<profile>/` for a
/// binary there and for a test in `target/<profile>/deps/`.
pub fn own_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::Image(format!("current exe: {e}")))?;
    let mut dir = exe
        .parent()
        .map(Path::to_owned)
        .ok_or_else(|| Error::Image("the executable has no directory".into()))?;
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The image istiod `version` runs from in a node: `pilot-discovery` at `/usr/local/bin`, as
/// in Istio's own image, as user 1337 (Istio's), working directory `/`; cached next to the
/// binaries.
pub fn istiod_image(binaries: &crate::Binaries, version: &str) -> Result<Archive> {
    let bin = binaries.pilot_discovery(version)?;
    let spec = ImageSpec::base(&istiod_image_name(version), &bin)?
        .user(1337, 1337)
        .workdir("/");
    build_cached(
        &spec,
        &binaries
            .image_cache()
            .join(format!("pilot-discovery-{version}.oci.tar")),
    )
}

/// The name of the istiod image: `localhost/federator-testbed/pilot-discovery:<version>` (the
/// tag is the Istio version, as in Istio's own `istio/pilot:<version>`, so the agent reads
/// istiod's version from it the same way).
pub fn istiod_image_name(version: &str) -> String {
    format!("localhost/federator-testbed/pilot-discovery:{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    /// The archive is an OCI image layout whose blobs are named by their SHA-256, with the
    /// config and layer the spec describes; the same inputs give the same digest.
    #[test]
    fn writes_a_content_addressed_oci_layout() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tool");
        std::fs::write(&bin, b"#!/bin/true\n").unwrap();
        let mut spec = ImageSpec::base("localhost/test/tool:1", &bin).unwrap();
        spec.content("/etc/hello", b"hi");
        let a = build(&spec, &dir.path().join("a.tar")).unwrap();
        let b = build(&spec, &dir.path().join("b.tar")).unwrap();
        assert_eq!(a.digest, b.digest, "deterministic");
        assert_eq!(
            Archive::read(&a.path).unwrap().name,
            "localhost/test/tool:1"
        );

        let mut blobs = BTreeMap::new();
        let mut index = None;
        let mut tar = tar::Archive::new(std::fs::File::open(&a.path).unwrap());
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            if let Some(digest) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256_hex(&data), digest, "{path} is content-addressed");
                blobs.insert(digest.to_owned(), data);
            } else if path == "index.json" {
                index = Some(serde_json::from_slice::<serde_json::Value>(&data).unwrap());
            }
        }
        let index = index.unwrap();
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "localhost/test/tool:1"
        );
        let manifest: serde_json::Value = serde_json::from_slice(
            &blobs[m["digest"].as_str().unwrap().trim_start_matches("sha256:")],
        )
        .unwrap();
        let config: serde_json::Value = serde_json::from_slice(
            &blobs[manifest["config"]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")],
        )
        .unwrap();
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/tool");
        assert_eq!(config["config"]["WorkingDir"], "/home/nonroot");
        let layer = &blobs[manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")];
        let mut files = BTreeMap::new();
        for e in tar::Archive::new(layer.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            files.insert(
                e.path().unwrap().to_string_lossy().into_owned(),
                (h.mode().unwrap(), h.uid().unwrap(), h.mtime().unwrap()),
            );
        }
        assert_eq!(files["usr/local/bin/tool"].0, 0o755);
        assert_eq!(files["home/nonroot"].1, u64::from(NONROOT));
        assert_eq!(files["tmp"].0, 0o1777);
        assert!(files.contains_key("etc/passwd"));
        assert!(files.values().all(|(_, _, mtime)| *mtime == 0));
    }

    #[test]
    fn normalizes_symlink_targets() {
        assert_eq!(
            normalize(Path::new("/usr/lib64/../lib/x86_64-linux-gnu/./libc.so.6")),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
    }
}
