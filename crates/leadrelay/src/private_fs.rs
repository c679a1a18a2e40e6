//! Files and directories that hold personal data — the SQLite store and
//! the backups — are created readable by their owner only (files 0600,
//! directories 0700), whatever the umask: the mode is given at creation,
//! and a umask can only take bits away.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::Path;

/// Mode of the files created here.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the directories created here.
pub const DIR_MODE: u32 = 0o700;

/// `create_dir_all`, each directory it creates owner-only. Existing
/// directories are left as they are.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut b = DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(DIR_MODE);
    }
    b.create(path)
}

/// `OpenOptions` whose files, when created, are owner-only.
pub fn open_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o
}

/// Creates `path` empty and owner-only unless it exists (so that a program
/// that then opens it, like SQLite, keeps those permissions).
pub fn ensure_file(path: &Path) -> io::Result<()> {
    match open_options().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// `std::fs::write` for a new or replaced file, owner-only when created.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)
}
