//! Random secrets kept in a file of the data directory (dev mode): created
//! on first use, readable only by the owner, and never half-written even
//! when two processes start at once.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD};

/// Errors reading or creating a secret file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read or written.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds something this program did not write.
    #[error("secret file {0} is corrupt; delete it to make a new one")]
    Corrupt(PathBuf),
    /// The system's random source failed.
    #[error("no randomness for a new secret: {0}")]
    Random(String),
}

/// The 32-byte secret in `path`, created with fresh randomness if missing.
pub fn load_or_create(path: &Path) -> Result<[u8; 32], Error> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    match std::fs::read_to_string(path) {
        Ok(text) => return decode(&text, path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io(err)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| Error::Random(e.to_string()))?;
    // Written aside, then linked into place: a reader never sees half a
    // secret, and whichever process links first wins.
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    {
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        restrict_permissions(&file).map_err(io)?;
        file.write_all(STANDARD.encode(secret).as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(io)?;
            decode(&text, path)
        }
        Err(err) => Err(io(err)),
    }
}

fn decode(text: &str, path: &Path) -> Result<[u8; 32], Error> {
    let corrupt = || Error::Corrupt(path.to_owned());
    STANDARD.decode(text.trim()).map_err(|_| corrupt())?.try_into().map_err(|_| corrupt())
}

#[cfg(unix)]
fn restrict_permissions(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_permissions(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/secret");
        let first = load_or_create(&path).expect("create");
        assert_eq!(load_or_create(&path).expect("load"), first);
    }

    #[test]
    fn a_corrupt_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "garbage").expect("write");
        assert!(matches!(load_or_create(&path), Err(Error::Corrupt(_))));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "garbage");
    }
}
