//! Copying a tree into a new layer, overlayfs-aware.
//!
//! The sources of a new layer are a sandbox's overlay *upper* directories (or a directory
//! being imported). An upper directory records deletions as *whiteouts* (character
//! devices 0/0) and replaced directories as *opaque* ones (the `trusted.overlay.opaque`
//! attribute, `user.overlay.opaque` rootless); both are kept, with the other overlay
//! attributes, so that the new layer, used as a lower layer later, still hides what was
//! deleted. Symbolic links are never followed: the tree may have been written by hostile
//! code. Modes, times and ownership are kept, ownership shifted back to canonical ids.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{
    DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink,
};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;

use super::{TemplateError, io_err, nix_err, relative_normal};

/// How often progress is reported: every this many bytes ...
const REPORT_BYTES: u64 = 16 << 20;
/// ... or this many entries.
const REPORT_FILES: u64 = 1000;
/// The largest canonical id; anything beyond becomes [`NOBODY`].
const MAX_ID: u32 = 65535;
/// Where ids that do not fit go.
const NOBODY: u32 = 65534;

/// How [`Registry::add_layer`](super::Registry::add_layer) copies a sandbox's upper
/// directories.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Subtracted from owners (as root): host-owned `1_000_000 + n` becomes `n`; ids that
    /// fall outside 0..=65535 after the shift become 65534 (nobody).
    pub uid_shift: u32,
    /// Paths relative to the root part (e.g. `home/user`) left out entirely, with all
    /// they contain.
    pub exclude: Vec<PathBuf>,
}

/// What a copy has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes of regular files.
    pub bytes: u64,
    /// Entries made (files, directories, links, fifos, whiteouts).
    pub files: u64,
}

/// Who owns what a copy makes.
pub(super) enum Owners {
    /// As root: the source's ids less `shift` (canonical ids, idmapped at run time).
    Canonical { shift: u32 },
    /// Rootless: everything belongs to the one user and group we have.
    Ours { uid: u32, gid: u32 },
}

impl Owners {
    /// The owner to give an entry whose source is owned by `uid:gid`; `None` when
    /// nothing needs changing.
    pub(super) fn of_source(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        match *self {
            Self::Canonical { shift } => {
                let f = |id: u32| id.checked_sub(shift).filter(|v| *v <= MAX_ID);
                Some((f(uid).unwrap_or(NOBODY), f(gid).unwrap_or(NOBODY)))
            }
            Self::Ours { uid, gid } => self.ours(uid, gid),
        }
    }

    /// The owner to give an entry that should have canonical owner `uid:gid`.
    pub(super) fn canonical(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        match *self {
            Self::Canonical { .. } => Some((uid, gid)),
            Self::Ours { uid, gid } => self.ours(uid, gid),
        }
    }

    /// Rootless: a chown only when we are not already that user.
    fn ours(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        (me != (uid, gid)).then_some((uid, gid))
    }
}

/// Counts what a copy does and reports it every [`REPORT_BYTES`] or [`REPORT_FILES`].
pub(super) struct Progress<'a> {
    cb: &'a (dyn Fn(CopyStats) + Sync),
    stats: CopyStats,
    last: CopyStats,
}

impl<'a> Progress<'a> {
    pub(super) fn new(cb: &'a (dyn Fn(CopyStats) + Sync)) -> Self {
        Self {
            cb,
            stats: CopyStats::default(),
            last: CopyStats::default(),
        }
    }

    pub(super) fn add(&mut self, bytes: u64, files: u64) {
        self.stats.bytes += bytes;
        self.stats.files += files;
        if self.stats.bytes - self.last.bytes >= REPORT_BYTES
            || self.stats.files - self.last.files >= REPORT_FILES
        {
            (self.cb)(self.stats);
            self.last = self.stats;
        }
    }

    /// Reports the totals (unless just reported) and returns them.
    pub(super) fn finish(self) -> CopyStats {
        if self.stats != self.last {
            (self.cb)(self.stats);
        }
        self.stats
    }
}

/// Metadata to give an entry once its contents are written.
#[derive(Clone, Copy, Debug)]
pub(super) struct Meta {
    /// Permission bits (setuid, setgid and sticky included).
    pub mode: u32,
    /// Owner to set (already mapped), if any.
    pub owner: Option<(u32, u32)>,
    /// Access and modification times (seconds, nanoseconds).
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
}

/// Gives `p` its owner, mode and times, in that order (a chown clears setuid bits; a
/// chmod would change nothing after). `link` says `p` is a symbolic link (no mode).
pub(super) fn apply_meta(p: &Path, m: &Meta, link: bool) -> Result<(), TemplateError> {
    if let Some((uid, gid)) = m.owner {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(io_err(p))?;
    }
    if !link {
        fs::set_permissions(p, fs::Permissions::from_mode(m.mode & 0o7777)).map_err(io_err(p))?;
    }
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &TimeSpec::new(m.atime.0, m.atime.1),
        &TimeSpec::new(m.mtime.0, m.mtime.1),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(nix_err(p))
}

/// Makes directory `p` with `mode`, owned by canonical `uid` (and group).
pub(super) fn make_dir(
    p: &Path,
    mode: u32,
    uid: u32,
    owners: &Owners,
) -> Result<(), TemplateError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .map_err(io_err(p))?;
    if let Some((u, g)) = owners.canonical(uid, uid) {
        std::os::unix::fs::lchown(p, Some(u), Some(g)).map_err(io_err(p))?;
    }
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(io_err(p))
}

/// Makes an empty file `p` with `mode`, owned by canonical root.
pub(super) fn make_file(p: &Path, mode: u32, owners: &Owners) -> Result<(), TemplateError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map_err(io_err(p))?;
    if let Some((u, g)) = owners.canonical(0, 0) {
        std::os::unix::fs::lchown(p, Some(u), Some(g)).map_err(io_err(p))?;
    }
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(io_err(p))
}

/// Runs `make`, which creates `p`, leaving the mode and times of `p`'s parent as they
/// were (rootless, a read-only parent is made writable meanwhile).
pub(super) fn in_parent_untouched(
    p: &Path,
    make: impl FnOnce() -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    let parent = p.parent().unwrap_or(p);
    let m = parent.symlink_metadata().map_err(io_err(parent))?;
    let mode = m.mode() & 0o7777;
    let writable = mode & 0o300 == 0o300;
    if !writable {
        fs::set_permissions(parent, fs::Permissions::from_mode(mode | 0o300))
            .map_err(io_err(parent))?;
    }
    let made = make();
    let (atime, mtime) = times_of(&m);
    let meta = Meta {
        mode,
        owner: None,
        atime,
        mtime,
    };
    let restored = apply_meta(parent, &meta, false);
    made.and(restored)
}

/// Makes a whiteout (the character device 0/0 overlayfs reads as "deleted"). Allowed
/// unprivileged since Linux 5.8.
pub(super) fn make_whiteout(p: &Path) -> Result<(), TemplateError> {
    mknod(
        p,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(0, 0),
    )
    .map_err(nix_err(p))
}

/// Makes a fifo.
pub(super) fn make_fifo(p: &Path) -> Result<(), TemplateError> {
    nix::unistd::mkfifo(p, Mode::from_bits_truncate(0o600)).map_err(nix_err(p))
}

/// The metadata of `p` inside the tree `root`, following links as they would be once
/// `root` is `/` (absolute targets start again from `root`; `..` never climbs above
/// it); `None` when it does not resolve.
pub(super) fn resolve_in(root: &Path, rel: &Path) -> Option<fs::Metadata> {
    enum Step {
        Up,
        Name(OsString),
    }
    fn steps(p: &Path) -> impl DoubleEndedIterator<Item = Step> + '_ {
        p.components().filter_map(|c| match c {
            Component::Normal(n) => Some(Step::Name(n.to_owned())),
            Component::ParentDir => Some(Step::Up),
            _ => None,
        })
    }
    let mut todo: Vec<Step> = steps(rel).rev().collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(s) = todo.pop() {
        match s {
            Step::Up => {
                cur.pop();
            }
            Step::Name(n) => {
                let p = root.join(&cur).join(&n);
                let m = p.symlink_metadata().ok()?;
                if m.file_type().is_symlink() {
                    links += 1;
                    if links > 40 {
                        return None;
                    }
                    let target = fs::read_link(&p).ok()?;
                    if target.is_absolute() {
                        cur = PathBuf::new();
                    }
                    todo.extend(steps(&target).rev());
                } else {
                    cur.push(n);
                }
            }
        }
    }
    root.join(cur).symlink_metadata().ok()
}

/// Gives the owner write and search permission on every directory under `p` (rootless,
/// a read-only directory cannot be emptied otherwise). Best effort.
pub(super) fn make_dirs_writable(p: &Path) {
    let mut stack = vec![p.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(m) = d.symlink_metadata() else {
            continue;
        };
        if !m.is_dir() {
            continue;
        }
        let _ = fs::set_permissions(&d, fs::Permissions::from_mode(m.mode() & 0o7777 | 0o700));
        if let Ok(rd) = fs::read_dir(&d) {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
}

fn times_of(m: &fs::Metadata) -> ((i64, i64), (i64, i64)) {
    ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
}

/// Copies one tree into a new layer directory.
pub(super) struct Copier<'a, 'p> {
    owners: &'a Owners,
    exclude: Vec<PathBuf>,
    xattrs: &'a [&'a str],
    /// A directory (device, inode) never copied: the layer being made, should the
    /// source contain it.
    skip_dir: Option<(u64, u64)>,
    progress: &'a mut Progress<'p>,
    /// Regular files with several links, by (device, inode): the first copy made.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<'a, 'p> Copier<'a, 'p> {
    /// A copier giving files to `owners`, leaving out `exclude` (relative to the source),
    /// keeping the extended attributes whose names start with one of `xattrs`.
    pub(super) fn new(
        owners: &'a Owners,
        exclude: &[PathBuf],
        xattrs: &'a [&'a str],
        skip_dir: Option<(u64, u64)>,
        progress: &'a mut Progress<'p>,
    ) -> Self {
        Self {
            owners,
            exclude: exclude
                .iter()
                .filter_map(|p| relative_normal(p))
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            xattrs,
            skip_dir,
            progress,
            links: HashMap::new(),
        }
    }

    fn meta_of(&self, m: &fs::Metadata) -> Meta {
        let (atime, mtime) = times_of(m);
        Meta {
            mode: m.mode() & 0o7777,
            owner: self.owners.of_source(m.uid(), m.gid()),
            atime,
            mtime,
        }
    }

    /// Copies the directory `src` to `dst` (which must not exist). Directories get
    /// their metadata last, deepest first, once nothing more is written into them.
    pub(super) fn copy_tree(&mut self, src: &Path, dst: &Path) -> Result<(), TemplateError> {
        let top = src.symlink_metadata().map_err(io_err(src))?;
        if !top.is_dir() {
            return Err(TemplateError::BadSource(format!(
                "{} is not a directory",
                src.display()
            )));
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dst)
            .map_err(io_err(dst))?;
        let mut dirs = vec![(src.to_owned(), dst.to_owned(), self.meta_of(&top))];
        let mut stack = vec![(src.to_owned(), dst.to_owned(), PathBuf::new())];
        while let Some((s, d, rel)) = stack.pop() {
            let entries = fs::read_dir(&s).map_err(io_err(&s))?;
            for e in entries {
                let e = e.map_err(io_err(&s))?;
                let name = e.file_name();
                let (sp, dp, rp) = (s.join(&name), d.join(&name), rel.join(&name));
                if self.exclude.contains(&rp) {
                    continue;
                }
                let m = sp.symlink_metadata().map_err(io_err(&sp))?;
                let ft = m.file_type();
                if ft.is_dir() {
                    if self.skip_dir == Some((m.dev(), m.ino())) {
                        continue;
                    }
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&dp)
                        .map_err(io_err(&dp))?;
                    self.progress.add(0, 1);
                    dirs.push((sp.clone(), dp.clone(), self.meta_of(&m)));
                    stack.push((sp, dp, rp));
                } else if ft.is_file() {
                    self.copy_file(&sp, &dp, &m)?;
                } else if ft.is_symlink() {
                    let target = fs::read_link(&sp).map_err(io_err(&sp))?;
                    symlink(&target, &dp).map_err(io_err(&dp))?;
                    self.finish(&sp, &dp, &self.meta_of(&m), true)?;
                    self.progress.add(0, 1);
                } else if ft.is_fifo() {
                    make_fifo(&dp)?;
                    self.finish(&sp, &dp, &self.meta_of(&m), false)?;
                    self.progress.add(0, 1);
                } else if ft.is_char_device() && m.rdev() == 0 {
                    make_whiteout(&dp)?;
                    self.finish(&sp, &dp, &self.meta_of(&m), false)?;
                    self.progress.add(0, 1);
                } else if ft.is_socket() {
                    // A socket means nothing without the process that bound it.
                    tracing::debug!(path = %sp.display(), "not copying a socket");
                } else {
                    return Err(TemplateError::BadSource(format!(
                        "{} is a device node ({}:{}); a layer cannot hold devices",
                        sp.display(),
                        nix::sys::stat::major(m.rdev()),
                        nix::sys::stat::minor(m.rdev())
                    )));
                }
            }
        }
        for (sp, dp, meta) in dirs.iter().rev() {
            self.finish(sp, dp, meta, false)?;
        }
        Ok(())
    }

    /// Copies a regular file's contents (through `copy_file_range`, by `io::copy`
    /// between two files), in chunks so that progress is reported within large files.
    /// The source is opened with `O_NOFOLLOW` and must still be the file listed.
    fn copy_file(&mut self, src: &Path, dst: &Path, m: &fs::Metadata) -> Result<(), TemplateError> {
        if m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, dst).map_err(io_err(dst))?;
                self.progress.add(0, 1);
                return Ok(());
            }
            self.links.insert((m.dev(), m.ino()), dst.to_owned());
        }
        let from = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(src)
            .map_err(io_err(src))?;
        let now = from.metadata().map_err(io_err(src))?;
        if !now.is_file() || now.ino() != m.ino() || now.dev() != m.dev() {
            return Err(TemplateError::BadSource(format!(
                "{} changed while being copied",
                src.display()
            )));
        }
        let to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(io_err(dst))?;
        self.progress.add(0, 1);
        loop {
            let n = io::copy(&mut (&from).take(REPORT_BYTES), &mut &to).map_err(io_err(dst))?;
            if n == 0 {
                break;
            }
            self.progress.add(n, 0);
        }
        drop(to);
        self.finish(src, dst, &self.meta_of(m), false)
    }

    /// Copies the kept extended attributes, then gives the metadata.
    fn finish(&self, src: &Path, dst: &Path, meta: &Meta, link: bool) -> Result<(), TemplateError> {
        let plain = {
            let ft = dst.symlink_metadata().map_err(io_err(dst))?.file_type();
            ft.is_file() || ft.is_dir()
        };
        match copy_xattrs(src, dst, self.xattrs) {
            Ok(()) => {}
            // user.* attributes exist only on files and directories.
            Err(e)
                if !plain && matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) =>
            {
                tracing::debug!(path = %src.display(), error = %e, "extended attribute not kept");
            }
            Err(e) => return Err(io_err(dst)(e)),
        }
        apply_meta(dst, meta, link)
    }
}

/// Copies the extended attributes of `src` whose names start with one of `prefixes` to
/// `dst`, neither followed if a link.
fn copy_xattrs(src: &Path, dst: &Path, prefixes: &[&str]) -> io::Result<()> {
    let names = match xattr::list(src) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        let shown = name.to_string_lossy();
        if !prefixes.iter().any(|p| shown.starts_with(p)) {
            continue;
        }
        if let Some(v) = xattr::get(src, &name)? {
            xattr::set(dst, &name, &v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_shift_into_the_canonical_range() {
        let o = Owners::Canonical { shift: 1_000_000 };
        assert_eq!(o.of_source(1_001_000, 1_001_000), Some((1000, 1000)));
        assert_eq!(o.of_source(1_000_000, 1_065_535), Some((0, 65535)));
        assert_eq!(o.of_source(0, 999_999), Some((NOBODY, NOBODY)));
        assert_eq!(o.of_source(1_065_536, 5_000_000), Some((NOBODY, NOBODY)));
        let o = Owners::Canonical { shift: 0 };
        assert_eq!(o.of_source(1234, 0), Some((1234, 0)));
        assert_eq!(o.of_source(65536, 100_000), Some((NOBODY, NOBODY)));
    }

    #[test]
    fn resolution_stays_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::write(r.join("usr/bin/dash"), "").unwrap();
        symlink("dash", r.join("usr/bin/sh")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        assert!(resolve_in(r, Path::new("bin/sh")).unwrap().is_file());
        // Absolute targets and `..` beyond the top resolve inside the tree.
        symlink("/usr/bin/sh", r.join("abs")).unwrap();
        assert!(resolve_in(r, Path::new("abs")).unwrap().is_file());
        symlink("../../../../usr/bin/sh", r.join("usr/up")).unwrap();
        assert!(resolve_in(r, Path::new("usr/up")).unwrap().is_file());
        // A link to the host's /etc/passwd means the tree's, which does not exist.
        symlink("/etc/passwd", r.join("passwd")).unwrap();
        assert!(resolve_in(r, Path::new("passwd")).is_none());
        // Loops end.
        symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in(r, Path::new("loop")).is_none());
    }

    #[test]
    fn progress_reports_every_so_often_and_at_the_end() {
        let seen = std::sync::Mutex::new(Vec::new());
        let cb = |s: CopyStats| seen.lock().unwrap().push(s);
        let mut p = Progress::new(&cb);
        for _ in 0..2500 {
            p.add(10, 1);
        }
        p.add(REPORT_BYTES, 0);
        let total = p.finish();
        assert_eq!(
            total,
            CopyStats {
                bytes: 25_000 + REPORT_BYTES,
                files: 2500
            }
        );
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0].files, 1000);
        assert_eq!(*seen.last().unwrap(), total);
    }
}
