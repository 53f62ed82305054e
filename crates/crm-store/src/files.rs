//! Files of the CRM store are private to the platform's user: folders it creates are 0700, files
//! 0600 (the SQLite database, and so its `-wal` and `-shm` files, which SQLite creates with the
//! database's mode; the journal's segments, lock and dead-letter file). They hold customers'
//! numbers, names and notes. An existing database that others can read is narrowed to 0600 at start
//! (with a warning), since the files made before this rule were world-readable.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

/// Mode of the folders the store creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files the store creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents as private folders (existing ones are left as they are).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)
}

/// Options that create a file readable and writable by its owner only.
pub fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options
}

/// Narrows an existing file that group or others may access to 0600. Returns whether it did.
pub fn make_private(path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))?;
            return Ok(true);
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(false)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn folders_and_files_are_private() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b");
        create_private_dir(&dir).expect("dirs");
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        private_options()
            .create(true)
            .append(true)
            .open(&file)
            .expect("file");
        assert_eq!(mode(&file), 0o600);
        let open = root.path().join("open");
        std::fs::write(&open, b"x").expect("write");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(make_private(&open).expect("narrow"));
        assert_eq!(mode(&open), 0o600);
        assert!(!make_private(&open).expect("already"));
        assert!(!make_private(&root.path().join("missing")).expect("missing is fine"));
    }
}
