//! File helpers: private files and atomic replacement, so that a crash never leaves a
//! half-written config or a secret readable by others.
//!
//! Every directory ztk creates is 0700 and every file 0600, whatever the umask; the only
//! exceptions are certificates meant to be handed out (a gateway's CA and certificate chain,
//! the copy of the gateway's CA that `ztk login` keeps), written 0644 with `write_atomic`.

use std::io::Write;
use std::path::Path;

/// Writes `data` to `path` with mode 0600, atomically (temp file in the same dir, then rename).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, 0o600)
}

/// Writes `data` to `path` atomically with the given Unix mode.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    set_mode(tmp.as_file(), mode)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Creates `path`, which must not exist yet, with mode 0600 from the start, and writes `data`.
/// For files that live only as long as one run in a private directory: no rename, no `fsync`
/// (a crash loses nothing that outlives the run).
pub fn write_new_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    private_options()
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(data)
}

/// Open options whose file, when they create it, has mode 0600 from the start (an existing
/// file keeps its mode). Add the access and the creation mode (`create`, `append`...).
pub fn private_options() -> std::fs::OpenOptions {
    #[allow(unused_mut)]
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Creates `dir` and every missing parent with mode 0700 (directories that exist are left
/// as they are).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    // The mode passed to mkdir is masked by the umask: an unusual one (0o177) could take the
    // owner's own bits away.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A directory for one run, removed when dropped: `PREFIX…` in `parent`, mode 0700.
pub fn private_tempdir_in(parent: &Path, prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    builder.tempdir_in(parent)
}

#[cfg(unix)]
fn set_mode(file: &std::fs::File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &std::fs::File, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// This machine's host name, or "" when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_private_file_is_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        write_new_private(&path, b"secret").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = write_new_private(&path, b"other").unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
    }

    #[cfg(unix)]
    #[test]
    fn private_dirs_are_0700_down_from_the_first_missing_parent() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_private_dir(&deep).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(p)), 0o700, "{p}");
        }
        let run = private_tempdir_in(&deep, "run-").unwrap();
        assert_eq!(mode(run.path()), 0o700);
        write_private(&dir.path().join("x/y/file"), b"z").unwrap();
        assert_eq!(mode(&dir.path().join("x")), 0o700);
        assert_eq!(mode(&dir.path().join("x/y/file")), 0o600);
    }
}
