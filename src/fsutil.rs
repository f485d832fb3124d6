//! Small filesystem helpers that keep the "nothing half-written" promise.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
/// A reader sees either the old file or the new one, never a torn write.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })
}

/// The temporary name `path` is written under before the rename: hidden, in the same
/// folder (so the rename is atomic), ending in the real file name so that writers that go
/// by the extension (PNG encoders) still see it.
pub fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    dir.join(format!(".{}.tmp.{file_name}", std::process::id()))
}

/// Let `write` produce the file at a temporary path, then rename it to `path`. On any
/// failure the temporary file is removed, so nothing half-written is left behind.
pub fn write_atomic_with<E>(path: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    let tmp = temp_path(path);
    let result = write(&tmp).and_then(|()| fs::rename(&tmp, path).map_err(E::from));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Check, before any work, that `path` can be written later: its folder exists (or can be
/// made) and accepts a new file. Nothing is left behind, and an existing `path` is untouched.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if path.is_dir() {
        anyhow::bail!("cannot write {}: it is a folder; give a file name", path.display());
    }
    let created = !dir.exists();
    ensure_dir(dir)?;
    let probe = dir.join(format!(".retort-write-check.{}", std::process::id()));
    let result = fs::File::create(&probe).map(drop);
    let _ = fs::remove_file(&probe);
    if created {
        let _ = fs::remove_dir(dir);
    }
    result.map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Check, before any work, that files can be written into the folder `dir` later (it may
/// exist already, e.g. a data set being resumed or rewritten). A folder made for the probe is
/// removed again; nothing else is touched.
pub fn check_writable_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("cannot write into {}: it is a file, not a folder; give a folder name", dir.display());
    }
    check_writable(&dir.join(".retort-probe"))
}

/// Create `dir` and everything above it, with an error that names the folder.
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create folder {}: {e}", dir.display()))
}

/// Move the finished folder `from` to `to` (same parent), replacing any folder already
/// there: the old one is renamed aside first and removed last, so `to` is always either the
/// old folder or the new one, each complete (and absent only between two renames).
pub fn replace_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let rename = |a: &Path, b: &Path| fs::rename(a, b).map_err(|e| anyhow::anyhow!("cannot move {} to {}: {e}", a.display(), b.display()));
    if !to.exists() {
        return rename(from, to);
    }
    let name = to.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let aside = to.with_file_name(format!(".{name}.old.{}", std::process::id()));
    let _ = fs::remove_dir_all(&aside);
    rename(to, &aside)?;
    if let Err(e) = rename(from, to) {
        // Put the old folder back: the caller keeps what it had.
        let _ = fs::rename(&aside, to);
        return Err(e);
    }
    let _ = fs::remove_dir_all(&aside);
    Ok(())
}

/// Copy a folder's regular files (one level deep) atomically into another folder.
pub fn copy_files(from: &Path, to: &Path, names: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    ensure_dir(to)?;
    let mut copied = Vec::new();
    for name in names {
        let src = from.join(name);
        if src.is_file() {
            let bytes = fs::read(&src).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", src.display()))?;
            let dst = to.join(name);
            write_atomic(&dst, &bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dst.display()))?;
            copied.push(dst);
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
