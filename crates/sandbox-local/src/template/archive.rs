//! Extracting a root filesystem from a tar archive (a `docker export`, a debootstrap
//! tarball), which is hostile input.
//!
//! The `tar` crate's own `unpack` is not used: every entry is checked here, and the
//! whole archive is checked before anything is written (a first pass reads only the
//! headers), so that a refused archive leaves nothing behind. Refused, with the entry
//! and the reason: absolute paths; `..`; devices (whiteouts included: an archive cannot
//! delete anything); hard links to absolute paths, through `..`, or to anything not
//! extracted before; symbolic links whose target, resolved lexically from the link's
//! directory, climbs above the root (absolute targets are fine: once the layer is `/`
//! they point inside it); entries below a symbolic link extracted earlier (the classic
//! write-through-a-link escape); a second entry for a path with a different type. The
//! second pass checks again as it writes (the file could have changed between passes).
//!
//! Modes are kept, setuid and setgid bits included (layers are mounted `nosuid` and
//! sandbox processes run with `no_new_privs`); owners are taken as canonical ids
//! (rootless: ours); modification times are kept.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tar::EntryType;

use super::copy::{self, Meta, Owners, Progress};
use super::{TemplateError, io_err, relative_normal};

/// The type of what a path holds, as far as duplicates are concerned (a hard link is a
/// file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Dir => "a directory",
            Kind::File => "a file",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a fifo",
        }
    }
}

/// What to make for an entry that passed the checks.
enum Action {
    /// Metadata for the root directory itself (`./`).
    Root,
    Dir,
    File,
    HardLink(PathBuf),
    Symlink(PathBuf),
    Fifo,
}

/// A checked entry.
struct Plan {
    /// The path below the root, normal components only.
    rel: PathBuf,
    action: Action,
    /// Parents that no entry made before: made as plain directories.
    implicit: Vec<PathBuf>,
}

/// The checks, with what the archive has made so far.
#[derive(Default)]
struct Checker {
    seen: HashMap<PathBuf, Kind>,
}

impl Checker {
    /// Checks one entry; `None` for entries that make nothing (global pax headers).
    fn check<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<Option<Plan>, TemplateError> {
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: String| TemplateError::UnsafeArchive {
            entry: shown.clone(),
            reason,
        };
        let header = entry.header();
        let et = header.entry_type();
        if et == EntryType::XGlobalHeader {
            return Ok(None);
        }
        let path = entry
            .path()
            .map_err(|e| refuse(format!("unreadable path: {e}")))?;
        if path.has_root() {
            return Err(refuse("absolute path".into()));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(refuse("`..` in its path".into()));
        }
        let rel = relative_normal(&path).ok_or_else(|| refuse("absolute path".into()))?;
        let device = |what: &str| {
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            if et == EntryType::Char && major == 0 && minor == 0 {
                refuse("a whiteout (character device 0:0): an archive cannot delete files".into())
            } else {
                refuse(format!(
                    "a {what} device ({major}:{minor}): a layer cannot hold devices (sandboxes get their own /dev)"
                ))
            }
        };
        let (kind, action) = match et {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                (Kind::File, Action::File)
            }
            EntryType::Directory => (Kind::Dir, Action::Dir),
            EntryType::Fifo => (Kind::Fifo, Action::Fifo),
            EntryType::Char => return Err(device("character")),
            EntryType::Block => return Err(device("block")),
            EntryType::Symlink => {
                let target = link_target(entry).map_err(&refuse)?;
                if !target.has_root() {
                    climbs_above_root(&rel, &target).map_err(&refuse)?;
                }
                (Kind::Symlink, Action::Symlink(target))
            }
            EntryType::Link => {
                let target = link_target(entry).map_err(&refuse)?;
                if target.has_root() {
                    return Err(refuse(format!(
                        "hard link to the absolute path `{}`",
                        target.display()
                    )));
                }
                if target.components().any(|c| c == Component::ParentDir) {
                    return Err(refuse(format!(
                        "hard link to `{}`, which has `..`",
                        target.display()
                    )));
                }
                let t = relative_normal(&target).unwrap_or_default();
                match self.seen.get(&t) {
                    _ if t == rel => return Err(refuse("hard link to itself".into())),
                    Some(Kind::Dir) => {
                        return Err(refuse(format!(
                            "hard link to the directory `{}`",
                            target.display()
                        )));
                    }
                    Some(_) => {}
                    None => {
                        return Err(refuse(format!(
                            "hard link to `{}`, which the archive did not extract before",
                            target.display()
                        )));
                    }
                }
                (Kind::File, Action::HardLink(t))
            }
            other => {
                return Err(refuse(format!("unsupported entry type {other:?}")));
            }
        };
        if rel.as_os_str().is_empty() {
            if kind != Kind::Dir {
                return Err(refuse(format!(
                    "the root of the archive is {}",
                    kind.name()
                )));
            }
            return Ok(Some(Plan {
                rel,
                action: Action::Root,
                implicit: Vec::new(),
            }));
        }
        // Every parent must be a directory, never a link made earlier.
        let mut implicit = Vec::new();
        let mut parent = PathBuf::new();
        let parents = rel.components().count() - 1;
        for c in rel.components().take(parents) {
            parent.push(c);
            match self.seen.get(&parent) {
                Some(Kind::Dir) => {}
                Some(Kind::Symlink) => {
                    return Err(refuse(format!(
                        "its parent `{}` is a symbolic link extracted earlier: writing through it could escape the layer",
                        parent.display()
                    )));
                }
                Some(k) => {
                    return Err(refuse(format!(
                        "its parent `{}` is {}, not a directory",
                        parent.display(),
                        k.name()
                    )));
                }
                None => {
                    self.seen.insert(parent.clone(), Kind::Dir);
                    implicit.push(parent.clone());
                }
            }
        }
        if let Some(prev) = self.seen.get(&rel)
            && *prev != kind
        {
            return Err(refuse(format!(
                "a second entry for this path of another type ({} after {})",
                kind.name(),
                prev.name()
            )));
        }
        self.seen.insert(rel.clone(), kind);
        Ok(Some(Plan {
            rel,
            action,
            implicit,
        }))
    }
}

/// The target of a link entry.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> Result<PathBuf, String> {
    match entry.link_name() {
        Ok(Some(t)) if !t.as_os_str().is_empty() => Ok(t.into_owned()),
        Ok(_) => Err("link without a target".into()),
        Err(e) => Err(format!("unreadable link target: {e}")),
    }
}

/// `Err` when the relative symlink `target` of the link at `rel`, resolved lexically from
/// the link's directory, climbs above the root.
fn climbs_above_root(rel: &Path, target: &Path) -> Result<(), String> {
    let mut depth = rel.components().count().saturating_sub(1);
    for c in target.components() {
        match c {
            Component::ParentDir if depth == 0 => {
                return Err(format!(
                    "symbolic link to `{}`, which climbs above the root",
                    target.display()
                ));
            }
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(())
}

/// An entry's metadata: the header's, overridden by its pax extensions.
fn entry_meta<R: Read>(entry: &mut tar::Entry<'_, R>, owners: &Owners) -> io::Result<Meta> {
    let h = entry.header();
    let mode = h.mode()? & 0o7777;
    let (mut uid, mut gid) = (h.uid()?, h.gid()?);
    let mut mtime = (i64::try_from(h.mtime()?).unwrap_or(i64::MAX), 0);
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let (Ok(k), Ok(v)) = (ext.key(), ext.value()) else {
                continue;
            };
            match k {
                "uid" => uid = v.parse().unwrap_or(uid),
                "gid" => gid = v.parse().unwrap_or(gid),
                "mtime" => mtime = parse_pax_time(v).unwrap_or(mtime),
                _ => {}
            }
        }
    }
    let id = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(Meta {
        mode,
        owner: owners.of_source(id(uid), id(gid)),
        atime: mtime,
        mtime,
    })
}

/// A pax time: seconds, optionally with a fraction (`1700000000.25`).
fn parse_pax_time(v: &str) -> Option<(i64, i64)> {
    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = s.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32)
    };
    // A negative time with a fraction counts the fraction backwards.
    Some(if secs < 0 || s.starts_with('-') {
        if nanos == 0 {
            (secs, 0)
        } else {
            (secs - 1, 1_000_000_000 - nanos)
        }
    } else {
        (secs, nanos)
    })
}

/// Writes checked entries under the new root.
struct Writer<'a> {
    root: &'a Path,
    owners: &'a Owners,
    /// Directories in the order they were made, with their metadata once known.
    dirs: Vec<PathBuf>,
    dir_meta: HashMap<PathBuf, Meta>,
}

impl Writer<'_> {
    fn mkdir(&mut self, p: PathBuf) -> Result<(), TemplateError> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .map_err(io_err(&p))?;
        self.dirs.push(p);
        Ok(())
    }

    /// Removes what an earlier entry of the same type made at `p` (never a directory),
    /// as tar does: a new inode, not a write into the old one (which a hard link may
    /// share).
    fn replace(p: &Path) -> Result<(), TemplateError> {
        match p.symlink_metadata() {
            Ok(m) if !m.is_dir() => fs::remove_file(p).map_err(io_err(p)),
            _ => Ok(()),
        }
    }

    fn write<R: Read>(
        &mut self,
        plan: Plan,
        entry: &mut tar::Entry<'_, R>,
        progress: &mut Progress<'_>,
        bad: &dyn Fn(io::Error) -> TemplateError,
    ) -> Result<(), TemplateError> {
        for p in plan.implicit {
            self.mkdir(self.root.join(p))?;
            progress.add(0, 1);
        }
        let dst = self.root.join(&plan.rel);
        let meta = entry_meta(entry, self.owners).map_err(bad)?;
        match plan.action {
            Action::Root => {
                self.dir_meta.insert(dst, meta);
            }
            Action::Dir => {
                if !dst.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    self.mkdir(dst.clone())?;
                    progress.add(0, 1);
                }
                self.dir_meta.insert(dst, meta);
            }
            Action::File => {
                Self::replace(&dst)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dst)
                    .map_err(io_err(&dst))?;
                progress.add(0, 1);
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    // Reading fails on a truncated archive: `bad`; writing: `Io`.
                    let n = entry.read(&mut buf).map_err(bad)?;
                    if n == 0 {
                        break;
                    }
                    io::Write::write_all(&mut f, &buf[..n]).map_err(io_err(&dst))?;
                    progress.add(n as u64, 0);
                }
                drop(f);
                copy::apply_meta(&dst, &meta, false)?;
            }
            Action::HardLink(target) => {
                Self::replace(&dst)?;
                let t = self.root.join(target);
                fs::hard_link(&t, &dst).map_err(io_err(&dst))?;
                progress.add(0, 1);
            }
            Action::Symlink(target) => {
                Self::replace(&dst)?;
                symlink(&target, &dst).map_err(io_err(&dst))?;
                copy::apply_meta(&dst, &meta, true)?;
                progress.add(0, 1);
            }
            Action::Fifo => {
                Self::replace(&dst)?;
                copy::make_fifo(&dst)?;
                copy::apply_meta(&dst, &meta, false)?;
                progress.add(0, 1);
            }
        }
        Ok(())
    }

    /// Gives directories their metadata, deepest first, once nothing more is written
    /// into them. Directories no entry described are `0755`, root's, made now.
    fn finish(self) -> Result<(), TemplateError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now = (now.as_secs() as i64, i64::from(now.subsec_nanos()));
        let plain = Meta {
            mode: 0o755,
            owner: self.owners.canonical(0, 0),
            atime: now,
            mtime: now,
        };
        for d in self.dirs.iter().rev() {
            copy::apply_meta(d, self.dir_meta.get(d).unwrap_or(&plain), false)?;
        }
        Ok(())
    }
}

fn open(src: &Path, gzip: bool) -> Result<Box<dyn Read>, TemplateError> {
    let f = fs::File::open(src).map_err(io_err(src))?;
    let r = BufReader::with_capacity(1 << 20, f);
    Ok(if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    })
}

/// One pass over the archive: checks every entry and, when `root` is given, makes it.
fn pass(
    src: &Path,
    gzip: bool,
    root: Option<&Path>,
    owners: &Owners,
    progress: &mut Progress<'_>,
) -> Result<(), TemplateError> {
    let bad = |e: io::Error| {
        TemplateError::BadSource(format!(
            "{} is not a readable tar archive: {e}",
            src.display()
        ))
    };
    let mut archive = tar::Archive::new(open(src, gzip)?);
    let mut checker = Checker::default();
    let mut writer = root.map(|root| Writer {
        root,
        owners,
        dirs: vec![root.to_owned()],
        dir_meta: HashMap::new(),
    });
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let Some(plan) = checker.check(&entry)? else {
            continue;
        };
        if let Some(w) = writer.as_mut() {
            w.write(plan, &mut entry, progress, &bad)?;
        } else {
            // Headers only, but their numbers must parse.
            entry_meta(&mut entry, owners).map_err(bad)?;
        }
    }
    match writer {
        Some(w) => w.finish(),
        None => Ok(()),
    }
}

/// Extracts the archive `src` (gzip-compressed when `gzip`) into `root`, which must not
/// exist. Checks the whole archive first: when it is refused, nothing is written.
pub(super) fn extract(
    src: &Path,
    gzip: bool,
    root: &Path,
    owners: &Owners,
    progress: &mut Progress<'_>,
) -> Result<(), TemplateError> {
    let quiet = |_: super::CopyStats| {};
    let mut dry = Progress::new(&quiet);
    pass(src, gzip, None, owners, &mut dry)?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(root)
        .map_err(io_err(root))?;
    pass(src, gzip, Some(root), owners, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_climbing_is_judged_from_the_links_directory() {
        let ok = |rel: &str, t: &str| climbs_above_root(Path::new(rel), Path::new(t)).is_ok();
        assert!(ok("a/b/link", "../x"));
        assert!(ok("a/b/link", "../../x"));
        assert!(!ok("a/b/link", "../../../x"));
        assert!(!ok("link", "../x"));
        assert!(ok("link", "x/../y"));
        assert!(!ok("link", "x/../../y"));
        assert!(ok("a/link", "./../b/./c"));
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(parse_pax_time("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time("1700000000.25"),
            Some((1_700_000_000, 250_000_000))
        );
        assert_eq!(parse_pax_time("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
