//! File writes that never leave half-written state.
//!
//! Every file is written to a temporary file in the destination directory and renamed into
//! place; a set of files is written into a temporary directory that is renamed into place as a
//! whole. Files holding private keys get mode 0600 from the moment they exist.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::{Error, Result};

/// Mode for files holding secrets.
pub const SECRET_MODE: u32 = 0o600;
/// Mode for public files.
pub const PUBLIC_MODE: u32 = 0o644;

/// One file to write: its content and mode.
pub struct FileSpec {
    /// Content.
    pub content: Vec<u8>,
    /// Unix permission bits.
    pub mode: u32,
}

impl FileSpec {
    /// A public file (0644).
    pub fn public(content: impl Into<Vec<u8>>) -> Self {
        Self {
            content: content.into(),
            mode: PUBLIC_MODE,
        }
    }
    /// A secret file (0600).
    pub fn secret(content: impl Into<Vec<u8>>) -> Self {
        Self {
            content: content.into(),
            mode: SECRET_MODE,
        }
    }
}

fn write_new(dir: &Path, name: &str, spec: &FileSpec) -> Result<()> {
    let path = dir.join(name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(Error::io(&path))?;
    f.set_permissions(fs::Permissions::from_mode(spec.mode))
        .map_err(Error::io(&path))?;
    f.write_all(&spec.content).map_err(Error::io(&path))?;
    f.sync_all().map_err(Error::io(&path))
}

/// Writes `files` into `dir` (created if needed, mode 0700 when new) so that either all of them
/// appear or none does. Refuses to replace any existing file unless `overwrite`.
pub fn write_files_atomically(
    dir: &Path,
    files: &BTreeMap<String, FileSpec>,
    overwrite: bool,
) -> Result<()> {
    if !overwrite && let Some(existing) = files.keys().map(|n| dir.join(n)).find(|p| p.exists()) {
        return Err(Error::Usage(format!(
            "{} already exists; refusing to overwrite it (move it away or choose another directory)",
            existing.display()
        )));
    }
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(Error::io(dir))?;
    }
    let staging = tempfile::Builder::new()
        .prefix(".federator-staging-")
        .tempdir_in(dir)
        .map_err(Error::io(dir))?;
    for (name, spec) in files {
        write_new(staging.path(), name, spec)?;
    }
    // All content is on disk; now move each file into place. A rename within one directory
    // is atomic per file; if one fails, the ones already moved are removed again.
    let mut moved = Vec::new();
    for name in files.keys() {
        let target = dir.join(name);
        if let Err(e) = fs::rename(staging.path().join(name), &target) {
            for m in &moved {
                let _ = fs::remove_file(dir.join(m));
            }
            return Err(Error::io(&target)(e));
        }
        moved.push(name.clone());
    }
    Ok(())
}

/// Writes a whole directory `target` with exactly `files`, atomically: the directory appears
/// complete or not at all. An existing `target` is replaced only when `overwrite`.
pub fn write_dir_atomically(
    target: &Path,
    files: &BTreeMap<String, FileSpec>,
    overwrite: bool,
) -> Result<()> {
    if target.exists() && !overwrite {
        return Err(Error::Usage(format!(
            "{} already exists; refusing to overwrite it (pass --overwrite to replace it)",
            target.display()
        )));
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(parent).map_err(Error::io(parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".federator-staging-")
        .tempdir_in(parent)
        .map_err(Error::io(parent))?;
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
        .map_err(Error::io(staging.path()))?;
    for (name, spec) in files {
        write_new(staging.path(), name, spec)?;
    }
    let staged = staging.keep();
    if target.exists() {
        // Move the old directory aside first, so the swap leaves one or the other in place.
        let old = parent.join(format!(
            ".federator-old-{}",
            target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let _ = fs::remove_dir_all(&old);
        fs::rename(target, &old).map_err(Error::io(target))?;
        if let Err(e) = fs::rename(&staged, target) {
            let _ = fs::rename(&old, target);
            let _ = fs::remove_dir_all(&staged);
            return Err(Error::io(target)(e));
        }
        let _ = fs::remove_dir_all(&old);
    } else if let Err(e) = fs::rename(&staged, target) {
        let _ = fs::remove_dir_all(&staged);
        return Err(Error::io(target)(e));
    }
    Ok(())
}

/// Reads every regular file of a directory into a map (name → bytes).
pub fn read_dir_files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let entries = fs::read_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Usage(format!("{}: no such directory", dir.display()))
        } else {
            Error::io(dir)(e)
        }
    })?;
    let mut out = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(Error::io(dir))?;
        let path = entry.path();
        // Follow symlinks: a kubelet-mounted Secret is a directory of symlinks.
        if path.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            out.insert(name, fs::read(&path).map_err(Error::io(&path))?);
        }
    }
    Ok(out)
}

/// Reads a file, turning "not found" into a usage error that names what was expected.
pub fn read_input(path: &Path, what: &str, hint: &str) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Usage(format!("{}: {what} not found; {hint}", path.display()))
        } else {
            Error::io(path)(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_all_or_nothing_with_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let mut files = BTreeMap::new();
        files.insert("a.pem".to_owned(), FileSpec::public("a"));
        files.insert("k.pem".to_owned(), FileSpec::secret("k"));
        write_files_atomically(&dir, &files, false).unwrap();
        let mode = |n: &str| fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("a.pem"), 0o644);
        assert_eq!(mode("k.pem"), 0o600);
        // A second write refuses and changes nothing.
        let mut other = BTreeMap::new();
        other.insert("a.pem".to_owned(), FileSpec::public("changed"));
        assert!(write_files_atomically(&dir, &other, false).is_err());
        assert_eq!(fs::read(dir.join("a.pem")).unwrap(), b"a");
        // No staging directory is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn replaces_a_directory_as_a_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c1");
        let mut v1 = BTreeMap::new();
        v1.insert("x".to_owned(), FileSpec::public("1"));
        v1.insert("y".to_owned(), FileSpec::public("1"));
        write_dir_atomically(&dir, &v1, false).unwrap();
        let mut v2 = BTreeMap::new();
        v2.insert("x".to_owned(), FileSpec::public("2"));
        assert!(write_dir_atomically(&dir, &v2, false).is_err());
        write_dir_atomically(&dir, &v2, true).unwrap();
        assert_eq!(fs::read(dir.join("x")).unwrap(), b"2");
        assert!(!dir.join("y").exists());
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no staging leftovers"
        );
    }
}
