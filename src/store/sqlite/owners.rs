//! Which processes are alive, told by file locks rather than timers.
//!
//! Every started instance gets a fresh owner id and holds an exclusive lock
//! on its own file `<database>-owners/<owner>.lock` for as long as it lives.
//! The operating system drops the lock the instant the process dies, however
//! it dies (`kill -9` included). So "is the owner of this running job alive?"
//! has an exact answer at any moment: try to take its lock. If the lock can
//! be taken, or its file is gone, the owner is dead and its jobs can go back
//! to the queue at once, with no lease to wait out. This works for any number
//! of processes sharing one database file on one host; several hosts use the
//! PostgreSQL store instead.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// This process's claim to be alive: the locked file, kept open.
pub(crate) struct OwnerLock {
    path: PathBuf,
    _file: File,
}

impl OwnerLock {
    /// Creates and locks the lock file for `owner`. The file is locked under
    /// a temporary name and then renamed into place, so nobody can ever see
    /// it unlocked and conclude that a starting process is dead.
    pub(crate) fn acquire(dir: &Path, owner: &str) -> io::Result<OwnerLock> {
        fs::create_dir_all(dir)?;
        let staging = dir.join(format!("{owner}.starting"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&staging)?;
        file.try_lock().map_err(io::Error::other)?;
        let path = lock_path(dir, owner);
        fs::rename(&staging, &path)?;
        Ok(OwnerLock { path, _file: file })
    }

    /// Removes the lock file; called once this owner holds no more jobs.
    pub(crate) fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `owner` is certainly dead. Takes its lock if free, and then
/// removes the file (the owner is gone for good).
pub(crate) fn is_dead(dir: &Path, owner: &str) -> bool {
    let path = lock_path(dir, owner);
    let file = match OpenOptions::new().write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
        Err(e) => {
            log::warn!("errands: cannot check owner {owner}: {e}");
            return false;
        }
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = fs::remove_file(&path);
            true
        }
        Err(_) => false,
    }
}

/// The directory of lock files for the database at `db`.
pub(crate) fn lock_dir(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push("-owners");
    db.with_file_name(name)
}

fn lock_path(dir: &Path, owner: &str) -> PathBuf {
    dir.join(format!("{owner}.lock"))
}

/// A new owner id: unique across processes and restarts.
pub(crate) fn new_owner_id() -> String {
    format!(
        "{}-{}-{:08x}",
        std::process::id(),
        crate::clock::system_time_to_ms(std::time::SystemTime::now()),
        fastrand::u32(..)
    )
}
