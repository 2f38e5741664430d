//! A stand-in for the kubelet's Secret volume: mirrors one Secret into a directory the way
//! the kubelet's `AtomicWriter` (`pkg/volume/util/atomic_writer.go`) does, so a program
//! watching that directory (istiod's fsnotify watch on `ROOT_CA_DIR`) sees what it would see
//! in a pod.
//!
//! Layout, for a Secret with keys `a` and `b`:
//!
//! ```text
//! DIR/..2026_11_22_22_47_41.0123456789/a    the payload, in a fresh timestamped directory
//! DIR/..2026_11_22_22_47_41.0123456789/b
//! DIR/..data -> ..2026_11_22_22_47_41.0123456789
//! DIR/a -> ..data/a                          one symlink per key, created once
//! DIR/b -> ..data/b
//! ```
//!
//! Every change writes a complete new timestamped directory, points `..data_tmp` at it and
//! renames `..data_tmp` over `..data` (one atomic `rename(2)`: a reader sees the old payload or
//! the new one, never a mix), adds symlinks for new keys, removes the symlinks of keys that are
//! gone and then the old directory. An unchanged payload writes nothing. A deleted (or absent)
//! Secret is an empty payload, as for an `optional: true` volume: every key disappears.
//!
//! What differs from a pod: the kubelet syncs a volume up to a minute after the change; the
//! mirror does it as soon as its watch delivers the event.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::watcher;

use crate::{Error, Result};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// The payload currently visible in `dir` (through `..data`), if any.
pub fn read_payload(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let data = dir.join(DATA);
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(&data) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read", &data)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("read", &data))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path()).map_err(Error::io("read", entry.path()))?;
        out.insert(name, bytes);
    }
    Ok(out)
}

/// Makes `dir` show exactly `payload` (empty: no keys), atomically. Returns whether anything
/// changed (an identical payload writes nothing).
pub fn write_payload(dir: &Path, payload: &BTreeMap<String, Vec<u8>>) -> Result<bool> {
    for key in payload.keys() {
        if key.is_empty() || key.starts_with("..") || key.contains('/') || key == "." {
            return Err(Error::Dir(format!(
                "invalid Secret key {key:?} for a volume"
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let current = read_payload(dir)?;
    let has_data_link = dir.join(DATA).symlink_metadata().is_ok();
    if has_data_link && current == *payload {
        return Ok(false);
    }
    let old_target = std::fs::read_link(dir.join(DATA)).ok();

    // 1. A fresh timestamped directory with the whole payload.
    let stamp = timestamp();
    let ts_dir = tempfile::Builder::new()
        .prefix(&format!("..{stamp}."))
        .rand_bytes(10)
        .tempdir_in(dir)
        .map_err(Error::io("create", dir))?
        .keep();
    set_mode(&ts_dir, 0o755)?;
    for (key, bytes) in payload {
        let path = ts_dir.join(key);
        std::fs::write(&path, bytes).map_err(Error::io("write", &path))?;
        set_mode(&path, 0o644)?;
    }
    let ts_name = ts_dir
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| Error::Dir(format!("unnamed directory {}", ts_dir.display())))?;

    // 2. ..data_tmp -> the new directory, renamed over ..data.
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts_name, &tmp).map_err(Error::io("symlink", &tmp))?;
    std::fs::rename(&tmp, dir.join(DATA)).map_err(Error::io("rename", &tmp))?;

    // 3. Per-key symlinks for new keys; remove those of keys that are gone.
    for key in payload.keys() {
        let link = dir.join(key);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(key), &link)
                .map_err(Error::io("symlink", &link))?;
        }
    }
    for key in current.keys().filter(|k| !payload.contains_key(*k)) {
        let link = dir.join(key);
        if let Err(e) = std::fs::remove_file(&link)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::io("remove", &link)(e));
        }
    }

    // 4. The old directory.
    if let Some(old) = old_target.filter(|o| *o != ts_name) {
        let old = dir.join(old);
        if old.starts_with(dir) && old.is_dir() {
            std::fs::remove_dir_all(&old).map_err(Error::io("remove", &old))?;
        }
    }
    Ok(true)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io("chmod", path))
}

/// `2026_11_22_22_47_41`, as the kubelet names its directories (UTC).
fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}_{:02}_{:02}_{:02}_{:02}_{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The data of a Secret as a payload (`None`: no Secret, an empty payload).
pub fn payload_of(secret: Option<&Secret>) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Some(s) = secret {
        for (k, v) in s.data.iter().flatten() {
            out.insert(k.clone(), v.0.clone());
        }
        for (k, v) in s.string_data.iter().flatten() {
            out.insert(k.clone(), v.clone().into_bytes());
        }
    }
    out
}

/// Reads Secret `namespace/name` now and mirrors it into `dir`. Returns whether `dir` changed.
pub async fn sync_once(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> Result<bool> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get_opt(name).await?;
    let payload = payload_of(secret.as_ref());
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || write_payload(&dir, &payload))
        .await
        .map_err(|e| Error::Dir(format!("mirror task: {e}")))?
}

/// Mirrors Secret `namespace/name` into `dir` until the returned task is aborted: a watch on
/// that one Secret (selected by name), and on every event a fresh read and
/// [`write_payload`]. `on_change` runs after each change that reached the directory.
pub fn spawn_mirror(
    client: kube::Client,
    namespace: &str,
    name: &str,
    dir: PathBuf,
    on_change: impl Fn() + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let namespace = namespace.to_owned();
    let name = name.to_owned();
    tokio::spawn(async move {
        let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher(api, cfg).boxed();
        loop {
            match events.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(secret = %name, error = %e, "secret volume watch");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                None => return,
            }
            match sync_once(&client, &namespace, &name, &dir).await {
                Ok(true) => {
                    tracing::info!(secret = %format!("{namespace}/{name}"), dir = %dir.display(), "secret volume updated");
                    on_change();
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(secret = %name, error = %e, "secret volume sync"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn ts_dirs(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn mirrors_like_the_kubelet() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        assert!(write_payload(&dir, &payload(&[("a", "1"), ("b", "2")])).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let first = std::fs::read_link(dir.join(DATA)).unwrap();
        assert!(first.to_string_lossy().starts_with(".."), "{first:?}");
        assert_eq!(ts_dirs(&dir).len(), 1);

        // Unchanged: nothing is written.
        assert!(!write_payload(&dir, &payload(&[("a", "1"), ("b", "2")])).unwrap());
        assert_eq!(std::fs::read_link(dir.join(DATA)).unwrap(), first);

        // Changed: a new directory, the old one removed, the key links kept or dropped.
        assert!(write_payload(&dir, &payload(&[("a", "3"), ("c", "4")])).unwrap());
        let second = std::fs::read_link(dir.join(DATA)).unwrap();
        assert_ne!(second, first);
        assert_eq!(ts_dirs(&dir), vec![second.to_string_lossy().into_owned()]);
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "4");
        assert!(dir.join("b").symlink_metadata().is_err(), "b is gone");
        assert_eq!(
            read_payload(&dir).unwrap(),
            payload(&[("a", "3"), ("c", "4")])
        );

        // Deleted Secret: an empty payload, no key left.
        assert!(write_payload(&dir, &BTreeMap::new()).unwrap());
        assert!(dir.join("a").symlink_metadata().is_err());
        assert!(dir.join("c").symlink_metadata().is_err());
        assert!(read_payload(&dir).unwrap().is_empty());
        assert!(!write_payload(&dir, &BTreeMap::new()).unwrap());
    }

    #[test]
    fn refuses_keys_that_escape() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["..data", "../x", "a/b", ""] {
            assert!(
                write_payload(tmp.path(), &payload(&[(bad, "1")])).is_err(),
                "{bad}"
            );
        }
    }
}
