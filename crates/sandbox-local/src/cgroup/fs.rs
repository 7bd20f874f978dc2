//! Small filesystem helpers whose errors carry the path (and the value, for writes).

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::CgroupError;

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a file that may legitimately be missing (a controller that is not enabled).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `value` to an existing interface file in one `write(2)`; never creates files.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        })
}

/// Makes a directory. `Ok(false)` when it already existed and `exist_ok`; with `!exist_ok` an
/// existing directory is [`CgroupError::Exists`].
pub(crate) fn mkdir(path: &Path, exist_ok: bool) -> Result<bool, CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if exist_ok {
                Ok(false)
            } else {
                Err(CgroupError::Exists {
                    path: path.to_owned(),
                })
            }
        }
        Err(source) => Err(CgroupError::Mkdir {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes a group directory, retrying `EBUSY` until `timeout` while its last tasks exit. A
/// missing directory is fine. cgroupfs removes a group's interface files with it; a plain
/// directory tree standing in for a hierarchy (test fixtures) needs them deleted first.
pub(crate) fn rmdir(path: &Path, timeout: Duration) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        let err = match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !on_cgroupfs(path) => {
                remove_plain_files(path);
                continue;
            }
            Err(e) => e,
        };
        if err.raw_os_error() != Some(libc::EBUSY) || start.elapsed() >= timeout {
            return Err(CgroupError::Rmdir {
                path: path.to_owned(),
                source: err,
            });
        }
        sleep(Duration::from_millis(20));
    }
}

/// Whether `path` is on a cgroup (v1 or v2) filesystem.
fn on_cgroupfs(path: &Path) -> bool {
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    nix::sys::statfs::statfs(path).is_ok_and(|s| {
        let t = s.filesystem_type().0;
        t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
    })
}

fn remove_plain_files(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Names of the subdirectories of `dir` (empty if it cannot be read).
pub(crate) fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Calls `done` until it returns true or `timeout` passes; `Ok(false)` on timeout.
pub(crate) fn poll_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let start = Instant::now();
    // Freezing takes a few milliseconds: look early, then back off.
    let mut pause = Duration::from_micros(100);
    loop {
        if done()? {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Whether an error is the given errno.
pub(crate) fn is_errno(e: &CgroupError, errno: i32) -> bool {
    let source: Option<&io::Error> = match e {
        CgroupError::Write { source, .. }
        | CgroupError::Read { source, .. }
        | CgroupError::Mkdir { source, .. }
        | CgroupError::Rmdir { source, .. } => Some(source),
        _ => None,
    };
    source.and_then(io::Error::raw_os_error) == Some(errno)
}
