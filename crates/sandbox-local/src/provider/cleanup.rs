//! Removing a slot from the host (processes in its cgroup, the cgroup, its files and
//! control socket), and sweeping slots that no sandbox owns after a restart.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use quantbox_sandbox::ProviderError;

use super::{Inner, io_err};
use crate::cgroup::Cgroup;

/// Removes whatever is left of a slot: processes in its cgroup, the cgroup, its
/// directory and its control socket. Idempotent.
pub(super) fn remove_slot(
    inner: &Inner,
    slot: &str,
    cgroup: Option<&Cgroup>,
) -> Result<(), ProviderError> {
    let opened;
    let cgroup = match cgroup {
        Some(c) => Some(c),
        None => {
            opened = inner.cgroups.as_ref().ok().and_then(|c| c.open(slot));
            opened.as_ref()
        }
    };
    if let Some(cg) = cgroup {
        cg.kill_all().map_err(|e| {
            ProviderError::Internal(format!("killing what was left in slot {slot}: {e}"))
        })?;
        cg.remove().map_err(|e| {
            ProviderError::Internal(format!("removing the cgroup of slot {slot}: {e}"))
        })?;
    }
    let _ = std::fs::remove_file(inner.socket_path(slot));
    remove_tree(&inner.slot_dir(slot))
        .map_err(io_err(format!("removing the files of slot {slot}")))?;
    Ok(())
}

/// Removes every slot not in `keep`: what a crashed server left (parked sandboxes,
/// half-made slots). Returns how many were removed.
pub(super) fn sweep(inner: &Inner, keep: &[String]) -> usize {
    let keep: BTreeSet<&str> = keep.iter().map(String::as_str).collect();
    let mut found = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(inner.cfg.data_dir.join("sandboxes")) {
        found.extend(
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    if let Ok(rd) = std::fs::read_dir(inner.cfg.data_dir.join("run")) {
        found.extend(rd.flatten().filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".sock")
                .map(str::to_owned)
        }));
    }
    if let Ok(c) = &inner.cgroups {
        found.extend(c.children());
    }
    let mut removed = 0;
    for slot in found.iter().filter(|s| !keep.contains(s.as_str())) {
        match remove_slot(inner, slot, None) {
            Ok(()) => removed += 1,
            Err(e) => tracing::error!(slot = %slot, error = %e, "could not remove a leftover slot"),
        }
    }
    removed
}

/// `rm -rf`, also for trees whose directories lost their permissions (overlay's work
/// directory).
pub(super) fn remove_tree(p: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            fix_perms(p);
            std::fs::remove_dir_all(p)
        }
        Err(e) => Err(e),
    }
}

fn fix_perms(p: &Path) {
    if let Ok(m) = p.symlink_metadata()
        && m.is_dir()
    {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                fix_perms(&e.path());
            }
        }
    }
}

/// Bytes a directory tree holds on disk.
pub(super) fn disk_usage(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = p.symlink_metadata() else {
        return 0;
    };
    let mut total = m.blocks() * 512;
    if m.is_dir()
        && let Ok(rd) = std::fs::read_dir(p)
    {
        for e in rd.flatten() {
            total += disk_usage(&e.path());
        }
    }
    total
}
