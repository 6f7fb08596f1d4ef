//! Which processes are alive, told by file locks rather than timers.
//!
//! Every started instance gets a fresh owner id and holds an exclusive lock
//! on its own file `<database>-owners/<owner>.lock` for as long as it lives.
//! The operating system drops the lock the instant the process dies, however
//! it dies (`kill -9` included). So "is the owner of this running job alive?"
//! has an exact answer at any moment: try to take its lock. If the lock can
//! be taken, the owner is dead and its jobs can go back to the queue at once,
//! with no lease to wait out. This works for any number of processes sharing
//! one database file on one host; several hosts use the PostgreSQL store.
//!
//! Three things keep that answer exact when the lock *file* is missing:
//! - The lock directory is named after the database's canonical path, so
//!   two instances that open one file through different paths (a symlink,
//!   `./jobs.db` and `/srv/jobs.db`) look in the same place.
//! - An owner in this very process is alive exactly while its instance is
//!   open (a registry in memory says so; no file is consulted).
//! - For another process, a missing file is not proof of death: an operator
//!   may have deleted the directory. On Linux the owner's process id is
//!   checked instead (a live process keeps its jobs); every live owner puts
//!   its own file back at its next recovery pass.
//!
//! Lock files are removed only by someone who took the lock (the owner at a
//! clean close, or a survivor that found the owner dead), so the directory
//! does not fill with files of owners long gone.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Owners opened by this process and not yet closed.
static LIVE_IN_THIS_PROCESS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn live_here() -> MutexGuard<'static, Option<HashSet<String>>> {
    LIVE_IN_THIS_PROCESS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// This process's claim to be alive: the locked file, kept open.
pub(crate) struct OwnerLock {
    dir: PathBuf,
    owner: String,
    file: File,
}

impl OwnerLock {
    /// Creates and locks the lock file for `owner`, and records the owner as
    /// alive in this process.
    pub(crate) fn acquire(dir: &Path, owner: &str) -> io::Result<OwnerLock> {
        let file = create_locked(dir, owner)?;
        live_here()
            .get_or_insert_with(HashSet::new)
            .insert(owner.to_string());
        Ok(OwnerLock {
            dir: dir.to_path_buf(),
            owner: owner.to_string(),
            file,
        })
    }

    /// Puts the lock file back if someone deleted it (or its directory), so
    /// that other processes can see this owner is alive again.
    pub(crate) fn ensure_present(&mut self) {
        if lock_path(&self.dir, &self.owner).exists() {
            return;
        }
        match create_locked(&self.dir, &self.owner) {
            Ok(file) => {
                log::warn!(
                    "errands: the lock file of owner {} was deleted; put it back",
                    self.owner
                );
                self.file = file;
            }
            Err(e) => log::error!(
                "errands: the lock file of owner {} was deleted and cannot be put back: {e}",
                self.owner
            ),
        }
    }

    /// Releases the lock. With `remove_file` (this owner holds no running
    /// jobs) the file goes too; otherwise it stays, unlocked, so that the
    /// next recovery pass finds the owner dead and puts its jobs back.
    pub(crate) fn release(self, remove_file: bool) {
        if remove_file {
            let _ = fs::remove_file(lock_path(&self.dir, &self.owner));
        }
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        if let Some(live) = live_here().as_mut() {
            live.remove(&self.owner);
        }
    }
}

/// Creates `<owner>.lock` in `dir`, locked. The file is locked under a
/// temporary name and then renamed into place, so nobody can ever see it
/// unlocked and conclude that a starting process is dead.
fn create_locked(dir: &Path, owner: &str) -> io::Result<File> {
    fs::create_dir_all(dir)?;
    let staging = dir.join(format!("{owner}.starting"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&staging)?;
    file.try_lock().map_err(io::Error::other)?;
    fs::rename(&staging, lock_path(dir, owner))?;
    Ok(file)
}

/// Whether `owner` is certainly dead. For an owner of another process:
/// takes its lock if free, and then removes the file (the owner is gone for
/// good).
pub(crate) fn is_dead(dir: &Path, owner: &str) -> bool {
    if owner_pid(owner) == Some(std::process::id()) {
        return !live_here()
            .as_ref()
            .is_some_and(|live| live.contains(owner));
    }
    let path = lock_path(dir, owner);
    // Read access is enough to take an advisory lock, so a lock file left by
    // another OS user (mode 0644) can still be checked.
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return !process_may_be_alive(owner),
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

/// Removes the lock files of dead owners that hold no running jobs (`busy`
/// lists the owners that do). Answers how many went.
pub(crate) fn sweep(dir: &Path, busy: &HashSet<String>) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
            continue;
        };
        // A live owner, of this process or another, holds its lock: the
        // try below fails for it.
        if busy.contains(owner) {
            continue;
        }
        if let Ok(file) = File::open(entry.path()) {
            if file.try_lock().is_ok() {
                let _ = fs::remove_file(entry.path());
                removed += 1;
            }
        }
    }
    removed
}

/// Whether the process that created `owner` may still run (its lock file is
/// missing, so the lock cannot tell). On Linux: whether a process with its
/// id exists. Elsewhere no such check is made and a missing file means dead.
fn process_may_be_alive(owner: &str) -> bool {
    let Some(pid) = owner_pid(owner) else {
        return false;
    };
    if cfg!(target_os = "linux") {
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if alive {
            log::warn!(
                "errands: the lock file of owner {owner} is missing but process {pid} runs; \
                 its jobs are left alone until it puts the file back or exits"
            );
        }
        alive
    } else {
        false
    }
}

/// The directory of lock files for the database at `db`, which must exist:
/// named after its canonical path, so every path to one file agrees.
pub(crate) fn lock_dir(db: &Path) -> io::Result<PathBuf> {
    let db = fs::canonicalize(db)?;
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push("-owners");
    Ok(db.with_file_name(name))
}

fn lock_path(dir: &Path, owner: &str) -> PathBuf {
    dir.join(format!("{owner}.lock"))
}

/// The process id an owner id was made by.
fn owner_pid(owner: &str) -> Option<u32> {
    owner.split('-').next()?.parse().ok()
}
