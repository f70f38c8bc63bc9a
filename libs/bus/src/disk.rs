//! The free-space guard of the embedded deployment. The embedded log and store (fjall) treat a
//! failed write as fatal: after one `ENOSPC` they refuse every write until reopened. So writes
//! are refused *before* the disk is full: while the free space of the data directory's
//! filesystem is below a reserve, publishes fail with [`BusErrorKind::StorageFull`] (clients
//! get 507 naming the cause) and the process reports itself unready. The reserve is left for
//! what is already acknowledged: projection of the backlog and compaction. Once space is freed,
//! writes resume by themselves.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::{BusError, BusErrorKind};

/// How often the free space is read.
const POLL_EVERY: Duration = Duration::from_millis(250);

pub struct DiskGuard {
    dir: PathBuf,
    reserve_bytes: u64,
    free_bytes: AtomicU64,
    low: AtomicBool,
}

/// Free bytes (for unprivileged writers) of the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a valid out-parameter for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

impl DiskGuard {
    /// Watches `dir` in a background thread (stopped when the guard is dropped). A reserve of
    /// 0 turns the guard off.
    pub fn start(dir: &Path, reserve_bytes: u64) -> Arc<Self> {
        let guard =
            Arc::new(Self { dir: dir.to_path_buf(), reserve_bytes, free_bytes: AtomicU64::new(u64::MAX), low: AtomicBool::new(false) });
        if reserve_bytes > 0 {
            guard.refresh();
            let weak: Weak<Self> = Arc::downgrade(&guard);
            let _ = std::thread::Builder::new().name("disk-guard".into()).spawn(move || {
                while let Some(g) = weak.upgrade() {
                    g.refresh();
                    drop(g);
                    std::thread::sleep(POLL_EVERY);
                }
            });
        }
        guard
    }

    /// Reads the free space now (also called after a failed write).
    pub fn refresh(&self) {
        if self.reserve_bytes == 0 {
            return;
        }
        match free_bytes(&self.dir) {
            Ok(free) => {
                self.free_bytes.store(free, Ordering::Relaxed);
                let low = free < self.reserve_bytes;
                let was = self.low.swap(low, Ordering::Relaxed);
                if low && !was {
                    tracing::error!(dir = %self.dir.display(), free_bytes = free, reserve_bytes = self.reserve_bytes,
                        "disk almost full: refusing writes until space is freed");
                } else if was && !low {
                    tracing::warn!(dir = %self.dir.display(), free_bytes = free, "disk space freed: accepting writes again");
                }
                metrics::gauge!("sextant_disk_free_bytes").set(free as f64);
                metrics::gauge!("sextant_disk_writes_refused").set(if low { 1.0 } else { 0.0 });
            }
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read free disk space"),
        }
    }

    /// `Err` (with the reason) while writes must be refused.
    pub fn check(&self) -> Result<(), BusError> {
        match self.low_reason() {
            Some(reason) => Err(BusError::new(BusErrorKind::StorageFull, reason)),
            None => Ok(()),
        }
    }

    /// Why writes are refused, or `None`.
    pub fn low_reason(&self) -> Option<String> {
        if !self.low.load(Ordering::Relaxed) {
            return None;
        }
        let mib = |b: u64| b / (1 << 20);
        Some(format!(
            "disk full: {} MiB free for the data directory, below the {} MiB reserve (limits.min_free_disk_bytes); \
             nothing acknowledged is lost, and writes resume by themselves once space is freed",
            mib(self.free_bytes.load(Ordering::Relaxed)),
            mib(self.reserve_bytes)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_free_space_and_refuses_below_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert!(DiskGuard::start(dir.path(), 1).check().is_ok());
        let guard = DiskGuard::start(dir.path(), u64::MAX);
        let err = guard.check().unwrap_err();
        assert_eq!(err.kind, BusErrorKind::StorageFull);
        assert!(err.message.contains("disk full"), "{}", err.message);
        assert!(DiskGuard::start(dir.path(), 0).check().is_ok(), "a reserve of 0 is off");
    }
}
