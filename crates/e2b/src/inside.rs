//! The in-sandbox side of envd's file API: what `quantbox envd-fs` does inside a sandbox.
//!
//! Why this module exists: envd's file endpoints and `filesystem.Filesystem` service
//! (e2b-compat.md §2.2, §2.3) must act on a sandbox's files with the requesting user's
//! rights and the sandbox's own view of its filesystem. The server never touches a
//! sandbox's files from the host — that would bypass the user's permissions and follow
//! symlinks out of the sandbox. Instead it runs the quantbox binary, bound read-only at
//! `/run/quantbox/quantbox` in every sandbox, as the requesting user through the sandbox
//! manager (`quantbox envd-fs <op> ...`), and this module is what that process does. It is
//! plain std plus inotify and xattrs: no async runtime, no threads.
//!
//! The protocol with the host, both ends of which live here ([`Op::to_args`] and
//! [`Op::parse`] for the argv; [`Answer`], [`ReadHeader`] and [`WatchLine`] for what comes
//! back on stdout):
//! - `stat`, `list`, `mkdir`, `move`, `remove`, `write`: one JSON line, `{"ok": ...}` or
//!   `{"error": {"code", "message"}}` (exit status 1 with an error);
//! - `read`: a first JSON line, `{"ok": {"size": N}}` or an error, then the file's bytes;
//! - `watch`: `{"started": {}}` once the watches are set, then one `{"event": ...}` line
//!   per change, until the process is killed.
//!
//! Paths resolve as envd resolves them: `~` and relative paths against the user's home
//! (from `/etc/passwd` inside the sandbox), then lexically cleaned.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt::Display;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The hidden CLI subcommand that runs an [`Op`].
pub const SUBCOMMAND: &str = "envd-fs";

/// The xattr namespace of envd's file metadata (`X-Metadata-<key>` on upload,
/// `EntryInfo.metadata`); the prefix is not part of the key the client sees.
pub const METADATA_XATTR_PREFIX: &str = "user.e2b.";

/// What went wrong, in words the host maps onto Connect codes and HTTP statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    PermissionDenied,
    /// No space (or inodes, or quota) left: envd's HTTP 507.
    ResourceExhausted,
    Internal,
}

/// An operation's failure, as printed on stdout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    pub code: ErrorCode,
    pub message: String,
}

impl FsError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> FsError {
        FsError {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> FsError {
        FsError::new(ErrorCode::InvalidArgument, message)
    }

    /// An I/O error while doing `what`, coded by its errno.
    fn io(e: &io::Error, what: impl Display) -> FsError {
        FsError::new(code_of(e), format!("{what}: {e}"))
    }
}

fn code_of(e: &io::Error) -> ErrorCode {
    match e.raw_os_error() {
        Some(libc::ENOENT) => ErrorCode::NotFound,
        Some(libc::EEXIST | libc::ENOTEMPTY) => ErrorCode::AlreadyExists,
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => ErrorCode::PermissionDenied,
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => ErrorCode::ResourceExhausted,
        Some(
            libc::ENOTDIR
            | libc::EISDIR
            | libc::EINVAL
            | libc::ENAMETOOLONG
            | libc::ELOOP
            | libc::EXDEV
            | libc::EBUSY,
        ) => ErrorCode::InvalidArgument,
        _ => ErrorCode::Internal,
    }
}

/// One JSON answer line: `{"ok": T}` or `{"error": FsError}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer<T> {
    Ok(T),
    Error(FsError),
}

/// What `read` says before the file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadHeader {
    pub size: u64,
}

/// The type of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FileKind {
    File,
    Directory,
    /// The entry itself is a symlink (never followed).
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// One filesystem entry, as envd's `EntryInfo` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FileKind,
    /// Absolute path.
    pub path: String,
    /// Size in bytes (of the link itself for a symlink).
    pub size: u64,
    /// Permission bits (`0o777` at most); of the target for a symlink, as envd does.
    pub mode: u32,
    /// The mode as Go's `FileMode.String()` writes it, e.g. `-rw-r--r--`, `drwxr-xr-x`,
    /// `Lrwxrwxrwx` (what envd reports).
    pub permissions: String,
    /// Owner and group names from the sandbox's `/etc/passwd` and `/etc/group` (the
    /// number when there is no name).
    pub owner: String,
    pub group: String,
    /// Last modification, RFC 3339 UTC.
    pub modified: String,
    /// A symlink's target, fully resolved when it resolves (as envd reports it), else as
    /// written in the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// envd's file metadata: the `user.e2b.*` xattrs, prefix removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// What changed, in envd's event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    Create,
    Write,
    Remove,
    Rename,
    Chmod,
}

/// One change under a watched directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Relative to the watched directory (`.` for the directory itself).
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The entry as it is now, when asked for and it still exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// One line of `watch`'s output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchLine {
    /// The watches are set: every later change is reported.
    Started {},
    Event(Box<WatchEvent>),
    Error(FsError),
}

/// One operation, as the host asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Stat {
        path: String,
    },
    /// Entries under `path` (a symlink to a directory is followed), `depth` levels deep
    /// (0 reads as 1, as envd does).
    List {
        path: String,
        depth: u32,
    },
    /// Makes the directory and its missing parents; `already_exists` if it exists.
    MakeDir {
        path: String,
    },
    /// Renames, making the destination's missing parents.
    Move {
        source: String,
        destination: String,
    },
    /// Removes a file, a symlink (never its target) or a whole directory; a missing path
    /// is no error (envd's `RemoveAll`).
    Remove {
        path: String,
    },
    /// Streams a regular file to stdout after a [`ReadHeader`] line.
    Read {
        path: String,
    },
    /// Replaces the file with stdin (through a temporary file renamed over it), making
    /// missing parents; `metadata` becomes `user.e2b.*` xattrs.
    Write {
        path: String,
        metadata: BTreeMap<String, String>,
    },
    /// Reports changes under a directory until killed.
    Watch {
        path: String,
        recursive: bool,
        include_entry: bool,
    },
}

impl Op {
    /// The arguments after [`SUBCOMMAND`]: the op's name, its flags, `--`, then its paths
    /// (so a path that starts with `-` is never read as a flag).
    pub fn to_args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let paths: Vec<&String> = match self {
            Op::Stat { path } => {
                a.push("stat".into());
                vec![path]
            }
            Op::List { path, depth } => {
                a.extend(["list".into(), "--depth".into(), depth.to_string()]);
                vec![path]
            }
            Op::MakeDir { path } => {
                a.push("mkdir".into());
                vec![path]
            }
            Op::Move {
                source,
                destination,
            } => {
                a.push("move".into());
                vec![source, destination]
            }
            Op::Remove { path } => {
                a.push("remove".into());
                vec![path]
            }
            Op::Read { path } => {
                a.push("read".into());
                vec![path]
            }
            Op::Write { path, metadata } => {
                a.push("write".into());
                for (k, v) in metadata {
                    a.extend(["--meta".into(), format!("{k}={v}")]);
                }
                vec![path]
            }
            Op::Watch {
                path,
                recursive,
                include_entry,
            } => {
                a.push("watch".into());
                if *recursive {
                    a.push("--recursive".into());
                }
                if *include_entry {
                    a.push("--entry".into());
                }
                vec![path]
            }
        };
        a.push("--".into());
        a.extend(paths.into_iter().cloned());
        a
    }

    /// Reads the arguments [`Op::to_args`] wrote.
    pub fn parse(args: &[String]) -> Result<Op, FsError> {
        let usage = || {
            FsError::invalid(format!(
                "usage: quantbox {SUBCOMMAND} stat|list|mkdir|move|remove|read|write|watch [flags] -- PATH...; got {args:?}"
            ))
        };
        let (name, rest) = args.split_first().ok_or_else(usage)?;
        let sep = rest.iter().position(|a| a == "--").ok_or_else(usage)?;
        let (flags, paths) = (&rest[..sep], &rest[sep + 1..]);
        let mut depth = 1u32;
        let mut recursive = false;
        let mut include_entry = false;
        let mut metadata = BTreeMap::new();
        let mut it = flags.iter();
        while let Some(f) = it.next() {
            match f.as_str() {
                "--depth" => {
                    depth = it.next().and_then(|d| d.parse().ok()).ok_or_else(usage)?;
                }
                "--meta" => {
                    let (k, v) = it
                        .next()
                        .and_then(|m| m.split_once('='))
                        .ok_or_else(usage)?;
                    metadata.insert(k.to_owned(), v.to_owned());
                }
                "--recursive" => recursive = true,
                "--entry" => include_entry = true,
                _ => return Err(usage()),
            }
        }
        let one = || match paths {
            [p] => Ok(p.clone()),
            _ => Err(usage()),
        };
        Ok(match name.as_str() {
            "stat" => Op::Stat { path: one()? },
            "list" => Op::List {
                path: one()?,
                depth,
            },
            "mkdir" => Op::MakeDir { path: one()? },
            "move" => match paths {
                [s, d] => Op::Move {
                    source: s.clone(),
                    destination: d.clone(),
                },
                _ => return Err(usage()),
            },
            "remove" => Op::Remove { path: one()? },
            "read" => Op::Read { path: one()? },
            "write" => Op::Write {
                path: one()?,
                metadata,
            },
            "watch" => Op::Watch {
                path: one()?,
                recursive,
                include_entry,
            },
            _ => return Err(usage()),
        })
    }
}

/// Who runs the operation: the home that `~` and relative paths resolve against.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub home: PathBuf,
}

impl Ctx {
    /// The current user's home: from `/etc/passwd`, else `/root` for root, else `$HOME`,
    /// else `/home/user`.
    pub fn for_current_user() -> Ctx {
        let uid = nix::unistd::getuid().as_raw();
        let home = passwd_home(uid)
            .or_else(|| (uid == 0).then(|| PathBuf::from("/root")))
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/home/user"));
        Ctx { home }
    }
}

fn passwd_home(uid: u32) -> Option<PathBuf> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid) && !f[5].is_empty()).then(|| PathBuf::from(f[5]))
    })
}

/// envd's path rules: `~` or `~/x` is the home, a relative path is under the home,
/// `~name` is refused; the result is absolute and lexically clean (no `.`, `..` or `//`).
pub fn resolve_path(path: &str, home: &Path) -> Result<PathBuf, FsError> {
    if path.contains('\0') {
        return Err(FsError::invalid("the path contains a NUL byte"));
    }
    let joined = if let Some(rest) = path.strip_prefix('~') {
        if !rest.is_empty() && !rest.starts_with('/') {
            return Err(FsError::invalid(format!(
                "cannot expand user-specific home dir in {path:?}: only ~ and ~/... are understood"
            )));
        }
        home.join(rest.trim_start_matches('/'))
    } else if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        home.join(path)
    };
    Ok(clean(&joined))
}

/// Lexical cleaning, as Go's `filepath.Clean` does for absolute paths.
fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn show(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// uid → name and gid → name, read once from the sandbox's own files.
fn names() -> &'static (HashMap<u32, String>, HashMap<u32, String>) {
    static NAMES: OnceLock<(HashMap<u32, String>, HashMap<u32, String>)> = OnceLock::new();
    NAMES.get_or_init(|| (id_names("/etc/passwd"), id_names("/etc/group")))
}

fn id_names(file: &str) -> HashMap<u32, String> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let mut out = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if let (Some(name), Some(Ok(id))) = (f.first(), f.get(2).map(|s| s.parse::<u32>())) {
            out.entry(id).or_insert_with(|| (*name).to_owned());
        }
    }
    out
}

/// The mode as Go's `os.FileMode.String()` writes it (what envd's `permissions` is).
pub fn permissions_string(mode: u32) -> String {
    let fmt = mode & libc::S_IFMT;
    let mut s = String::with_capacity(12);
    if fmt == libc::S_IFDIR {
        s.push('d');
    }
    if fmt == libc::S_IFLNK {
        s.push('L');
    }
    if fmt == libc::S_IFBLK || fmt == libc::S_IFCHR {
        s.push('D');
    }
    if fmt == libc::S_IFIFO {
        s.push('p');
    }
    if fmt == libc::S_IFSOCK {
        s.push('S');
    }
    if mode & libc::S_ISUID != 0 {
        s.push('u');
    }
    if mode & libc::S_ISGID != 0 {
        s.push('g');
    }
    if fmt == libc::S_IFCHR {
        s.push('c');
    }
    if mode & libc::S_ISVTX != 0 {
        s.push('t');
    }
    if s.is_empty() {
        s.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    s
}

/// The entry at `path`, not following a final symlink.
pub fn entry_info(path: &Path) -> Result<EntryInfo, FsError> {
    let md = fs::symlink_metadata(path)
        .map_err(|e| FsError::io(&e, format!("cannot stat {}", show(path))))?;
    Ok(entry_from(path, &md))
}

fn entry_from(path: &Path, md: &Metadata) -> EntryInfo {
    let ft = md.file_type();
    let (kind, mode, symlink_target) = if ft.is_symlink() {
        let target = fs::canonicalize(path)
            .or_else(|_| fs::read_link(path))
            .ok()
            .map(|t| show(&t));
        let mode = fs::metadata(path).map_or(md.mode(), |m| m.mode()) & 0o777;
        (FileKind::Symlink, mode, target)
    } else if ft.is_dir() {
        (FileKind::Directory, md.mode() & 0o777, None)
    } else if ft.is_file() {
        (FileKind::File, md.mode() & 0o777, None)
    } else {
        (FileKind::Other, md.mode() & 0o777, None)
    };
    let (users, groups) = names();
    let ms = md
        .mtime()
        .saturating_mul(1000)
        .saturating_add(md.mtime_nsec() / 1_000_000);
    EntryInfo {
        name: path
            .file_name()
            .map_or_else(|| show(path), |n| n.to_string_lossy().into_owned()),
        kind,
        path: show(path),
        size: md.size(),
        mode,
        permissions: permissions_string(md.mode()),
        owner: users
            .get(&md.uid())
            .cloned()
            .unwrap_or_else(|| md.uid().to_string()),
        group: groups
            .get(&md.gid())
            .cloned()
            .unwrap_or_else(|| md.gid().to_string()),
        modified: quantbox_sandbox::Timestamp::from_unix_ms(ms).to_rfc3339(),
        symlink_target,
        metadata: read_metadata(path),
    }
}

/// The `user.e2b.*` xattrs of `path` (not following a symlink); none where the
/// filesystem keeps none.
fn read_metadata(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(list) = xattr::list(path) else {
        return out;
    };
    for name in list {
        let Some(key) = name
            .to_str()
            .and_then(|n| n.strip_prefix(METADATA_XATTR_PREFIX))
        else {
            continue;
        };
        if let Ok(Some(v)) = xattr::get(path, &name) {
            out.insert(key.to_owned(), String::from_utf8_lossy(&v).into_owned());
        }
    }
    out
}

/// `stat`: the entry at `path` (a final symlink is reported, not followed).
pub fn stat(ctx: &Ctx, path: &str) -> Result<EntryInfo, FsError> {
    let p = resolve_path(path, &ctx.home)?;
    match fs::symlink_metadata(&p) {
        Ok(md) => Ok(entry_from(&p, &md)),
        Err(e) => Err(FsError::io(&e, format!("cannot stat {}", show(&p)))),
    }
}

/// `list`: the entries under a directory, `depth` levels deep, in name order with each
/// directory's entries right after it. Symlinks are listed, never descended into;
/// subdirectories that cannot be read are listed but not descended into.
pub fn list(ctx: &Ctx, path: &str, depth: u32) -> Result<Vec<EntryInfo>, FsError> {
    let depth = depth.max(1);
    let requested = resolve_path(path, &ctx.home)?;
    let dir = fs::canonicalize(&requested)
        .map_err(|e| FsError::io(&e, format!("cannot resolve {}", show(&requested))))?;
    let md =
        fs::metadata(&dir).map_err(|e| FsError::io(&e, format!("cannot stat {}", show(&dir))))?;
    if !md.is_dir() {
        return Err(FsError::invalid(format!(
            "path is not a directory: {}",
            show(&requested)
        )));
    }
    let mut out = Vec::new();
    walk(&dir, 1, depth, &mut out, true)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    level: u32,
    depth: u32,
    out: &mut Vec<EntryInfo>,
    top: bool,
) -> Result<(), FsError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if top => {
            return Err(FsError::io(
                &e,
                format!("cannot read directory {}", show(dir)),
            ));
        }
        Err(_) => return Ok(()),
    };
    let mut names: Vec<OsString> = rd.filter_map(Result::ok).map(|e| e.file_name()).collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        out.push(entry_from(&p, &md));
        if md.is_dir() && level < depth {
            walk(&p, level + 1, depth, out, false)?;
        }
    }
    Ok(())
}

/// `mkdir`: makes the directory and its missing parents (mode 0755 less the umask).
pub fn make_dir(ctx: &Ctx, path: &str) -> Result<EntryInfo, FsError> {
    let p = resolve_path(path, &ctx.home)?;
    match fs::metadata(&p) {
        Ok(m) if m.is_dir() => {
            return Err(FsError::new(
                ErrorCode::AlreadyExists,
                format!("directory already exists: {}", show(&p)),
            ));
        }
        Ok(_) => {
            return Err(FsError::invalid(format!(
                "path already exists but it is not a directory: {}",
                show(&p)
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::io(&e, format!("cannot stat {}", show(&p)))),
    }
    make_dirs(&p)?;
    entry_info(&p)
}

/// Makes `dir` and its missing parents; an existing directory is fine.
fn make_dirs(dir: &Path) -> Result<(), FsError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(FsError::invalid(format!(
                "path is a file, not a directory: {}",
                show(dir)
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::io(&e, format!("cannot stat {}", show(dir)))),
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| {
            let mut err = FsError::io(&e, format!("cannot create directory {}", show(dir)));
            if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::EEXIST)) {
                err.code = ErrorCode::InvalidArgument;
                err.message = format!(
                    "cannot create directory {}: a part of the path is a file",
                    show(dir)
                );
            }
            err
        })
}

/// `move`: renames `source` to `destination`, making the destination's missing parents.
pub fn rename(ctx: &Ctx, source: &str, destination: &str) -> Result<EntryInfo, FsError> {
    let s = resolve_path(source, &ctx.home)?;
    let d = resolve_path(destination, &ctx.home)?;
    fs::symlink_metadata(&s).map_err(|e| FsError::io(&e, format!("source {}", show(&s))))?;
    if let Some(parent) = d.parent() {
        make_dirs(parent)?;
    }
    fs::rename(&s, &d).map_err(|e| {
        let mut err = FsError::io(&e, format!("cannot move {} to {}", show(&s), show(&d)));
        if e.raw_os_error() == Some(libc::EXDEV) {
            err.message = format!(
                "cannot move {} to {}: they are on different filesystems",
                show(&s),
                show(&d)
            );
        }
        err
    })?;
    entry_info(&d)
}

/// `remove`: a file or symlink is unlinked (a symlink's target is never touched), a
/// directory removed with everything in it; a missing path is no error.
pub fn remove(ctx: &Ctx, path: &str) -> Result<(), FsError> {
    let p = resolve_path(path, &ctx.home)?;
    let md = match fs::symlink_metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::io(&e, format!("cannot stat {}", show(&p)))),
    };
    let r = if md.is_dir() {
        // std's remove_dir_all never follows symlinks inside the tree.
        fs::remove_dir_all(&p)
    } else {
        fs::remove_file(&p)
    };
    r.map_err(|e| FsError::io(&e, format!("cannot remove {}", show(&p))))
}

/// `read`: opens a regular file for streaming; its size is the header's.
pub fn open_read(ctx: &Ctx, path: &str) -> Result<(File, u64), FsError> {
    let p = resolve_path(path, &ctx.home)?;
    let md = fs::metadata(&p).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            FsError::new(
                ErrorCode::NotFound,
                format!("path '{}' does not exist", show(&p)),
            )
        } else {
            FsError::io(&e, format!("cannot stat {}", show(&p)))
        }
    })?;
    if md.is_dir() {
        return Err(FsError::invalid(format!(
            "path is a directory: {}",
            show(&p)
        )));
    }
    if !md.is_file() {
        return Err(FsError::invalid(format!(
            "path is not a regular file: {}",
            show(&p)
        )));
    }
    let f = File::open(&p).map_err(|e| FsError::io(&e, format!("cannot open {}", show(&p))))?;
    let size = f.metadata().map_or(md.len(), |m| m.len());
    Ok((f, size))
}

/// Where a write to `p` lands: through any symlinks at the last component (as `open`
/// would go), with the directory part resolved where it exists.
fn write_target(p: &Path) -> Result<PathBuf, FsError> {
    let mut cur = p.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                let t = fs::read_link(&cur)
                    .map_err(|e| FsError::io(&e, format!("cannot read link {}", show(&cur))))?;
                let base = cur.parent().unwrap_or(Path::new("/"));
                let base = fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
                cur = clean(&base.join(t));
            }
            _ => {
                if let (Some(parent), Some(name)) = (cur.parent(), cur.file_name())
                    && let Ok(real) = fs::canonicalize(parent)
                {
                    return Ok(real.join(name));
                }
                return Ok(cur);
            }
        }
    }
    Err(FsError::invalid(format!(
        "too many levels of symbolic links: {}",
        show(p)
    )))
}

/// Removes a temporary file unless disarmed.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// `write`: replaces the file at `path` with `data`, atomically for readers: the bytes
/// go to a temporary file in the same directory, renamed over the target at the end. A
/// symlink at `path` is written through (its target replaced), an existing file keeps
/// its permission bits, missing parents are made.
pub fn write(
    ctx: &Ctx,
    path: &str,
    data: &mut dyn Read,
    metadata: &BTreeMap<String, String>,
) -> Result<EntryInfo, FsError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let requested = resolve_path(path, &ctx.home)?;
    let target = write_target(&requested)?;
    let keep_mode = match fs::metadata(&target) {
        Ok(m) if m.is_dir() => {
            return Err(FsError::invalid(format!(
                "path is a directory: {}",
                show(&requested)
            )));
        }
        Ok(m) => Some(m.permissions().mode() & 0o1777),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(FsError::io(&e, format!("cannot stat {}", show(&target)))),
    };
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(FsError::invalid(format!(
            "cannot write to {}",
            show(&requested)
        )));
    };
    make_dirs(dir)?;
    let tmp = dir.join(format!(
        ".{}.quantbox-{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let no_space = |e: &io::Error| {
        if code_of(e) == ErrorCode::ResourceExhausted {
            Some(FsError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "not enough disk space available to write {}: {e}",
                    show(&requested)
                ),
            ))
        } else {
            None
        }
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&tmp)
        .map_err(|e| {
            no_space(&e).unwrap_or_else(|| {
                FsError::io(&e, format!("cannot create a file in {}", show(dir)))
            })
        })?;
    let mut guard = TempFile(Some(tmp.clone()));
    copy(data, &mut f).map_err(|(e, writing)| {
        no_space(&e).unwrap_or_else(|| {
            if writing {
                FsError::io(&e, format!("cannot write {}", show(&requested)))
            } else {
                FsError::new(ErrorCode::Internal, format!("cannot read the upload: {e}"))
            }
        })
    })?;
    if let Some(mode) = keep_mode {
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::io(&e, format!("cannot set the mode of {}", show(&requested))))?;
    }
    drop(f);
    for (k, v) in metadata {
        let key = k.to_ascii_lowercase();
        xattr::set(&tmp, format!("{METADATA_XATTR_PREFIX}{key}"), v.as_bytes()).map_err(|e| {
            no_space(&e).unwrap_or_else(|| {
                FsError::new(
                    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                        ErrorCode::InvalidArgument
                    } else {
                        code_of(&e)
                    },
                    format!("cannot store metadata {key:?} on {}: {e}", show(&requested)),
                )
            })
        })?;
    }
    fs::rename(&tmp, &target)
        .map_err(|e| FsError::io(&e, format!("cannot replace {}", show(&target))))?;
    guard.0 = None;
    let mut entry = entry_info(&target)?;
    entry.name = requested
        .file_name()
        .map_or_else(|| show(&requested), |n| n.to_string_lossy().into_owned());
    entry.path = show(&requested);
    Ok(entry)
}

/// Copies until end of input; an error says whether it was the writing side.
fn copy(from: &mut dyn Read, to: &mut File) -> Result<u64, (io::Error, bool)> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut n = 0u64;
    loop {
        let got = match from.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((e, false)),
        };
        to.write_all(&buf[..got]).map_err(|e| (e, true))?;
        n += got as u64;
    }
}

/// What inotify reports, in the order envd emits an event's types.
fn event_kinds(mask: nix::sys::inotify::AddWatchFlags, is_root_self: bool) -> Vec<EventKind> {
    use nix::sys::inotify::AddWatchFlags as F;
    let mut out = Vec::new();
    if mask.intersects(F::IN_CREATE | F::IN_MOVED_TO) {
        out.push(EventKind::Create);
    }
    if mask.contains(F::IN_MOVED_FROM) || (is_root_self && mask.contains(F::IN_MOVE_SELF)) {
        out.push(EventKind::Rename);
    }
    if mask.contains(F::IN_ATTRIB) {
        out.push(EventKind::Chmod);
    }
    if mask.contains(F::IN_MODIFY) {
        out.push(EventKind::Write);
    }
    if mask.contains(F::IN_DELETE) || (is_root_self && mask.contains(F::IN_DELETE_SELF)) {
        out.push(EventKind::Remove);
    }
    out
}

/// The inotify state of one `watch`.
struct Watcher {
    ino: nix::sys::inotify::Inotify,
    root: PathBuf,
    /// Watch descriptor → directory relative to the root ("" for the root).
    dirs: HashMap<nix::sys::inotify::WatchDescriptor, PathBuf>,
    recursive: bool,
    include_entry: bool,
}

impl Watcher {
    fn mask() -> nix::sys::inotify::AddWatchFlags {
        use nix::sys::inotify::AddWatchFlags as F;
        F::IN_CREATE
            | F::IN_MOVED_TO
            | F::IN_MODIFY
            | F::IN_DELETE
            | F::IN_MOVED_FROM
            | F::IN_ATTRIB
            | F::IN_DELETE_SELF
            | F::IN_MOVE_SELF
            | F::IN_ONLYDIR
    }

    fn add(&mut self, rel: &Path) -> nix::Result<()> {
        let mut mask = Self::mask();
        if !rel.as_os_str().is_empty() {
            // Subdirectories come from reading the tree: never through a symlink.
            mask |= nix::sys::inotify::AddWatchFlags::IN_DONT_FOLLOW;
        }
        let wd = self.ino.add_watch(&self.root.join(rel), mask)?;
        // Adding an inode watched already (a directory moved inside the tree) gives its
        // descriptor again: the new path replaces the old one.
        self.dirs.insert(wd, rel.to_path_buf());
        Ok(())
    }

    /// Watches the directories under `rel` (a new or moved-in directory); with `found`,
    /// each entry found in them is also reported as created (they may have appeared
    /// before the watch was set).
    fn add_tree(&mut self, rel: &Path, mut found: Option<&mut Vec<WatchEvent>>) {
        let Ok(rd) = fs::read_dir(self.root.join(rel)) else {
            return;
        };
        let mut names: Vec<OsString> = rd.filter_map(Result::ok).map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            let child = rel.join(&n);
            let abs = self.root.join(&child);
            let Ok(md) = fs::symlink_metadata(&abs) else {
                continue;
            };
            if let Some(found) = found.as_deref_mut() {
                found.push(self.event(&child, EventKind::Create));
            }
            if md.is_dir() && self.add(&child).is_ok() {
                self.add_tree(&child, found.as_deref_mut());
            }
        }
    }

    fn event(&self, rel: &Path, kind: EventKind) -> WatchEvent {
        let name = if rel.as_os_str().is_empty() {
            ".".to_owned()
        } else {
            show(rel)
        };
        let entry = if self.include_entry {
            entry_info(&self.root.join(rel)).ok()
        } else {
            None
        };
        WatchEvent { name, kind, entry }
    }

    /// The events of one read, in order; sets watches on new directories.
    fn read(&mut self) -> nix::Result<Vec<WatchEvent>> {
        use nix::sys::inotify::AddWatchFlags as F;
        let mut out = Vec::new();
        for ev in self.ino.read_events()? {
            if ev.mask.contains(F::IN_Q_OVERFLOW) {
                continue;
            }
            if ev.mask.contains(F::IN_IGNORED) {
                self.dirs.remove(&ev.wd);
                continue;
            }
            let Some(dir) = self.dirs.get(&ev.wd).cloned() else {
                continue;
            };
            let rel = match &ev.name {
                Some(n) => dir.join(n),
                // A watched directory's own event: its parent reports it already,
                // except for the root.
                None if dir.as_os_str().is_empty() => PathBuf::new(),
                None => continue,
            };
            let root_self = ev.name.is_none();
            for kind in event_kinds(ev.mask, root_self) {
                out.push(self.event(&rel, kind));
            }
            if self.recursive
                && ev.mask.contains(F::IN_ISDIR)
                && ev.mask.intersects(F::IN_CREATE | F::IN_MOVED_TO)
                && self.add(&rel).is_ok()
            {
                self.add_tree(&rel, Some(&mut out));
            }
        }
        Ok(out)
    }
}

/// `watch`: reports changes under the directory `path` through `emit` — first
/// [`WatchLine::Started`] once the watches are set — until `emit` fails or `stop` says
/// so (checked every 200 ms). With `recursive`, directories created or moved in later
/// are watched too.
pub fn watch(
    ctx: &Ctx,
    path: &str,
    recursive: bool,
    include_entry: bool,
    emit: &mut dyn FnMut(&WatchLine) -> io::Result<()>,
    stop: &dyn Fn() -> bool,
) -> Result<(), FsError> {
    use nix::sys::inotify::{InitFlags, Inotify};
    use std::os::fd::AsFd as _;
    let root = resolve_path(path, &ctx.home)?;
    let md = fs::metadata(&root).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            FsError::new(
                ErrorCode::NotFound,
                format!("path {} not found", show(&root)),
            )
        } else {
            FsError::io(&e, format!("cannot stat {}", show(&root)))
        }
    })?;
    if !md.is_dir() {
        return Err(FsError::invalid(format!(
            "path {} is not a directory",
            show(&root)
        )));
    }
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| FsError::io(&io::Error::from(e), "cannot start watching (inotify)"))?;
    let mut w = Watcher {
        ino,
        root: root.clone(),
        dirs: HashMap::new(),
        recursive,
        include_entry,
    };
    w.add(Path::new("")).map_err(|e| {
        let e = io::Error::from(e);
        let mut err = FsError::io(&e, format!("cannot watch {}", show(&root)));
        if e.raw_os_error() == Some(libc::ENOSPC) {
            err.message = format!(
                "cannot watch {}: the inotify watch limit is reached",
                show(&root)
            );
        }
        err
    })?;
    if recursive {
        w.add_tree(Path::new(""), None);
    }
    if emit(&WatchLine::Started {}).is_err() {
        return Ok(());
    }
    loop {
        if stop() {
            return Ok(());
        }
        let ready = {
            let mut fds = [nix::poll::PollFd::new(
                w.ino.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)) {
                Ok(n) => n > 0,
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => {
                    return Err(FsError::io(&io::Error::from(e), "watching failed (poll)"));
                }
            }
        };
        if !ready {
            continue;
        }
        let events = match w.read() {
            Ok(evs) => evs,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(FsError::io(
                    &io::Error::from(e),
                    "watching failed (inotify)",
                ));
            }
        };
        for ev in events {
            if emit(&WatchLine::Event(Box::new(ev))).is_err() {
                return Ok(());
            }
        }
    }
}

fn print_line<T: Serialize>(out: &mut dyn Write, v: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, v).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

fn answer<T: Serialize>(out: &mut dyn Write, r: Result<T, FsError>) -> i32 {
    match r {
        Ok(v) => match print_line(out, &Answer::Ok(v)) {
            Ok(()) => 0,
            Err(_) => 3,
        },
        Err(e) => {
            let _ = print_line(out, &Answer::<()>::Error(e));
            1
        }
    }
}

/// `quantbox envd-fs ARGS...`: runs the operation as the current user and prints its
/// answer; returns the exit status (0 done, 1 refused with a JSON error, 2 bad arguments,
/// 3 the answer could not be written, 4 a read failed after its header).
pub fn main(args: &[String]) -> i32 {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let op = match Op::parse(args) {
        Ok(op) => op,
        Err(e) => {
            let _ = print_line(&mut out, &Answer::<()>::Error(e));
            return 2;
        }
    };
    let ctx = Ctx::for_current_user();
    match op {
        Op::Stat { path } => answer(&mut out, stat(&ctx, &path)),
        Op::List { path, depth } => answer(&mut out, list(&ctx, &path, depth)),
        Op::MakeDir { path } => answer(&mut out, make_dir(&ctx, &path)),
        Op::Move {
            source,
            destination,
        } => answer(&mut out, rename(&ctx, &source, &destination)),
        Op::Remove { path } => answer(
            &mut out,
            remove(&ctx, &path).map(|()| serde_json::json!({})),
        ),
        Op::Write { path, metadata } => {
            let stdin = io::stdin();
            let mut input = stdin.lock();
            answer(&mut out, write(&ctx, &path, &mut input, &metadata))
        }
        Op::Read { path } => {
            let (mut f, size) = match open_read(&ctx, &path) {
                Ok(v) => v,
                Err(e) => return answer::<()>(&mut out, Err(e)),
            };
            if print_line(&mut out, &Answer::Ok(ReadHeader { size })).is_err() {
                return 3;
            }
            match io::copy(&mut f, &mut out).and_then(|_| out.flush()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("reading {path} failed part way: {e}");
                    4
                }
            }
        }
        Op::Watch {
            path,
            recursive,
            include_entry,
        } => {
            let mut emit = |line: &WatchLine| print_line(&mut out, line);
            match watch(&ctx, &path, recursive, include_entry, &mut emit, &|| false) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = print_line(&mut out, &WatchLine::Error(e));
                    1
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    fn setup() -> (tempfile::TempDir, Ctx) {
        let dir = tempfile::tempdir().unwrap();
        // Canonical, so paths compare equal to what the ops report.
        let home = fs::canonicalize(dir.path()).unwrap();
        (dir, Ctx { home })
    }

    fn h(ctx: &Ctx, rel: &str) -> String {
        show(&ctx.home.join(rel))
    }

    #[test]
    fn paths_resolve_as_envd_resolves_them() {
        let home = Path::new("/home/user");
        let r = |p: &str| resolve_path(p, home).map(|p| show(&p));
        assert_eq!(r("~").unwrap(), "/home/user");
        assert_eq!(r("").unwrap(), "/home/user");
        assert_eq!(r("~/a/../b").unwrap(), "/home/user/b");
        assert_eq!(r("a/./b/").unwrap(), "/home/user/a/b");
        assert_eq!(r("../../../etc").unwrap(), "/etc");
        assert_eq!(r("/x//y/./z/..").unwrap(), "/x/y");
        assert_eq!(r("/").unwrap(), "/");
        assert_eq!(r("~root/x").unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(r("a\0b").unwrap_err().code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn ops_survive_their_argv() {
        let ops = [
            Op::Stat { path: "-rf".into() },
            Op::List {
                path: "a b".into(),
                depth: 3,
            },
            Op::MakeDir { path: "--".into() },
            Op::Move {
                source: "x".into(),
                destination: "--depth".into(),
            },
            Op::Remove { path: "/".into() },
            Op::Read { path: "~/f".into() },
            Op::Write {
                path: "f".into(),
                metadata: BTreeMap::from([("k".into(), "a=b c".into())]),
            },
            Op::Watch {
                path: "d".into(),
                recursive: true,
                include_entry: true,
            },
            Op::Watch {
                path: "d".into(),
                recursive: false,
                include_entry: false,
            },
        ];
        for op in ops {
            assert_eq!(Op::parse(&op.to_args()).unwrap(), op);
        }
        let bad = |a: &[&str]| {
            let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            Op::parse(&a).unwrap_err().code
        };
        assert_eq!(bad(&[]), ErrorCode::InvalidArgument);
        assert_eq!(bad(&["stat", "x"]), ErrorCode::InvalidArgument);
        assert_eq!(bad(&["stat", "--", "a", "b"]), ErrorCode::InvalidArgument);
        assert_eq!(bad(&["chmod", "--", "a"]), ErrorCode::InvalidArgument);
        assert_eq!(
            bad(&["list", "--depth", "x", "--", "a"]),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            bad(&["stat", "--force", "--", "a"]),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn permissions_read_as_go_writes_them() {
        assert_eq!(permissions_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(permissions_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(permissions_string(libc::S_IFLNK | 0o777), "Lrwxrwxrwx");
        assert_eq!(permissions_string(libc::S_IFDIR | 0o1777), "dtrwxrwxrwx");
        assert_eq!(permissions_string(libc::S_IFREG | 0o4755), "urwxr-xr-x");
        assert_eq!(permissions_string(libc::S_IFCHR | 0o666), "Dcrw-rw-rw-");
        assert_eq!(permissions_string(libc::S_IFIFO | 0o600), "prw-------");
    }

    #[test]
    fn stat_reports_files_dirs_and_symlinks_without_following() {
        let (_d, ctx) = setup();
        fs::write(ctx.home.join("f"), b"hello").unwrap();
        fs::set_permissions(ctx.home.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::create_dir(ctx.home.join("d")).unwrap();
        symlink(ctx.home.join("f"), ctx.home.join("lf")).unwrap();
        symlink("nowhere", ctx.home.join("dangling")).unwrap();

        let f = stat(&ctx, "f").unwrap();
        assert_eq!(
            (f.name.as_str(), f.kind, f.path.clone(), f.size, f.mode),
            ("f", FileKind::File, h(&ctx, "f"), 5, 0o640)
        );
        assert_eq!(f.permissions, "-rw-r-----");
        let uid = nix::unistd::getuid().as_raw();
        let want_owner = names().0.get(&uid).cloned().unwrap_or(uid.to_string());
        assert_eq!(f.owner, want_owner);
        assert!(!f.group.is_empty());
        let t = quantbox_sandbox::Timestamp::parse_rfc3339(&f.modified).expect("RFC 3339");
        assert!((quantbox_sandbox::Timestamp::now().unix_ms() - t.unix_ms()).abs() < 60_000);
        assert_eq!(f.symlink_target, None);

        let d = stat(&ctx, &h(&ctx, "d")).unwrap();
        assert_eq!(
            (d.kind, d.permissions.chars().next()),
            (FileKind::Directory, Some('d'))
        );

        let l = stat(&ctx, "~/lf").unwrap();
        assert_eq!(l.kind, FileKind::Symlink);
        assert_eq!(l.symlink_target.as_deref(), Some(h(&ctx, "f").as_str()));
        assert_eq!(
            l.mode, 0o640,
            "a symlink's mode is its target's, as envd has it"
        );
        assert!(l.permissions.starts_with('L'));
        let g = stat(&ctx, "dangling").unwrap();
        assert_eq!(g.kind, FileKind::Symlink);
        assert_eq!(g.symlink_target.as_deref(), Some("nowhere"));

        let e = stat(&ctx, "missing").unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
        let e = stat(&ctx, "f/below").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}");
    }

    #[test]
    fn list_goes_as_deep_as_asked_and_never_through_symlinks() {
        let (_d, ctx) = setup();
        fs::create_dir_all(ctx.home.join("a/b/c")).unwrap();
        fs::write(ctx.home.join("a/b/c/deep"), b"x").unwrap();
        fs::write(ctx.home.join("a/f"), b"x").unwrap();
        fs::write(ctx.home.join("z"), b"x").unwrap();
        fs::create_dir(ctx.home.join("other")).unwrap();
        fs::write(ctx.home.join("other/inside"), b"x").unwrap();
        symlink(ctx.home.join("other"), ctx.home.join("link")).unwrap();

        let names = |v: Vec<EntryInfo>| -> Vec<String> {
            v.into_iter()
                .map(|e| e.path.strip_prefix(&show(&ctx.home)).unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(list(&ctx, "", 1).unwrap()),
            ["/a", "/link", "/other", "/z"]
        );
        assert_eq!(
            names(list(&ctx, "~", 0).unwrap()),
            ["/a", "/link", "/other", "/z"],
            "depth 0 reads as 1"
        );
        assert_eq!(
            names(list(&ctx, &h(&ctx, ""), 2).unwrap()),
            [
                "/a",
                "/a/b",
                "/a/f",
                "/link",
                "/other",
                "/other/inside",
                "/z"
            ]
        );
        assert_eq!(
            names(list(&ctx, "", 10).unwrap()),
            [
                "/a",
                "/a/b",
                "/a/b/c",
                "/a/b/c/deep",
                "/a/f",
                "/link",
                "/other",
                "/other/inside",
                "/z"
            ]
        );
        let all = list(&ctx, "", 1).unwrap();
        assert_eq!(all[1].kind, FileKind::Symlink);
        assert_eq!(all[0].kind, FileKind::Directory);
        assert_eq!(all[3].kind, FileKind::File);
        // A symlink to a directory is followed for the listed directory itself.
        assert_eq!(names(list(&ctx, "link", 1).unwrap()), ["/other/inside"]);

        assert_eq!(
            list(&ctx, "z", 1).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(list(&ctx, "nope", 1).unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn make_dir_makes_parents_and_refuses_what_exists() {
        let (_d, ctx) = setup();
        let e = make_dir(&ctx, "x/y/z").unwrap();
        assert_eq!(
            (e.kind, e.path.clone(), e.name.as_str()),
            (FileKind::Directory, h(&ctx, "x/y/z"), "z")
        );
        assert!(ctx.home.join("x/y/z").is_dir());
        assert_eq!(
            make_dir(&ctx, "x/y").unwrap_err().code,
            ErrorCode::AlreadyExists
        );
        fs::write(ctx.home.join("file"), b"").unwrap();
        assert_eq!(
            make_dir(&ctx, "file").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            make_dir(&ctx, "file/sub").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn move_renames_and_makes_the_destination_parents() {
        let (_d, ctx) = setup();
        fs::write(ctx.home.join("a"), b"data").unwrap();
        let e = rename(&ctx, "a", "new/dir/b").unwrap();
        assert_eq!(
            (e.path.clone(), e.kind, e.size),
            (h(&ctx, "new/dir/b"), FileKind::File, 4)
        );
        assert!(!ctx.home.join("a").exists());
        assert_eq!(fs::read(ctx.home.join("new/dir/b")).unwrap(), b"data");
        assert_eq!(
            rename(&ctx, "a", "c").unwrap_err().code,
            ErrorCode::NotFound
        );
        fs::create_dir(ctx.home.join("full")).unwrap();
        fs::write(ctx.home.join("full/x"), b"").unwrap();
        fs::create_dir(ctx.home.join("empty")).unwrap();
        assert_eq!(
            rename(&ctx, "empty", "full").unwrap_err().code,
            ErrorCode::AlreadyExists
        );
    }

    #[test]
    fn remove_takes_trees_and_only_the_link_of_a_symlink() {
        let (_d, ctx) = setup();
        fs::create_dir_all(ctx.home.join("t/u")).unwrap();
        fs::write(ctx.home.join("t/u/f"), b"x").unwrap();
        fs::create_dir(ctx.home.join("keep")).unwrap();
        fs::write(ctx.home.join("keep/precious"), b"x").unwrap();
        symlink(ctx.home.join("keep"), ctx.home.join("t/link")).unwrap();
        symlink(ctx.home.join("keep"), ctx.home.join("toplink")).unwrap();

        remove(&ctx, "toplink").unwrap();
        assert!(fs::symlink_metadata(ctx.home.join("toplink")).is_err());
        remove(&ctx, "t").unwrap();
        assert!(!ctx.home.join("t").exists());
        assert!(ctx.home.join("keep/precious").exists(), "never followed");
        remove(&ctx, "t").unwrap();
        remove(&ctx, "keep/precious").unwrap();
        assert!(!ctx.home.join("keep/precious").exists());
    }

    #[test]
    fn read_opens_regular_files_only() {
        let (_d, ctx) = setup();
        fs::write(ctx.home.join("f"), b"content").unwrap();
        let (mut f, size) = open_read(&ctx, "f").unwrap();
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert_eq!((got.as_slice(), size), (&b"content"[..], 7));
        let e = open_read(&ctx, "").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("path is a directory"), "{e:?}");
        assert_eq!(
            open_read(&ctx, "missing").unwrap_err().code,
            ErrorCode::NotFound
        );
        nix::unistd::mkfifo(
            &ctx.home.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert_eq!(
            open_read(&ctx, "fifo").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn write_replaces_whole_files_through_symlinks_and_keeps_modes() {
        let (_d, ctx) = setup();
        let none = BTreeMap::new();
        let e = write(&ctx, "deep/er/f", &mut &b"one"[..], &none).unwrap();
        assert_eq!(
            (e.path.clone(), e.name.as_str(), e.kind, e.size),
            (h(&ctx, "deep/er/f"), "f", FileKind::File, 3)
        );
        assert_eq!(fs::read(ctx.home.join("deep/er/f")).unwrap(), b"one");

        fs::set_permissions(
            ctx.home.join("deep/er/f"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        write(&ctx, "deep/er/f", &mut &b"second, longer"[..], &none).unwrap();
        assert_eq!(
            fs::read(ctx.home.join("deep/er/f")).unwrap(),
            b"second, longer"
        );
        let md = fs::metadata(ctx.home.join("deep/er/f")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);

        symlink(ctx.home.join("deep/er/f"), ctx.home.join("link")).unwrap();
        let e = write(&ctx, "link", &mut &b"via link"[..], &none).unwrap();
        assert_eq!(e.path, h(&ctx, "link"));
        assert!(
            fs::symlink_metadata(ctx.home.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(ctx.home.join("deep/er/f")).unwrap(), b"via link");

        let e = write(&ctx, "deep", &mut &b"x"[..], &none).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("is a directory"), "{e:?}");
        let e = write(&ctx, "deep/er/f/under", &mut &b"x"[..], &none).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}");

        let meta = BTreeMap::from([("Owner".to_string(), "desk-7".to_string())]);
        let e = write(&ctx, "tagged", &mut &b"x"[..], &meta).unwrap();
        assert_eq!(
            e.metadata,
            BTreeMap::from([("owner".to_string(), "desk-7".to_string())])
        );
        assert_eq!(stat(&ctx, "tagged").unwrap().metadata, e.metadata);

        // Nothing of the temporary files is left.
        let leftovers: Vec<_> = list(&ctx, "", 10)
            .unwrap()
            .into_iter()
            .filter(|e| e.name.contains(".quantbox-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_failed_read_of_the_input_leaves_the_old_file() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("connection dropped"))
            }
        }
        let (_d, ctx) = setup();
        fs::write(ctx.home.join("f"), b"old").unwrap();
        let e = write(&ctx, "f", &mut Broken, &BTreeMap::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(fs::read(ctx.home.join("f")).unwrap(), b"old");
        assert_eq!(
            fs::read_dir(&ctx.home).unwrap().count(),
            1,
            "the temporary file is gone"
        );
    }

    /// Runs `watch` on a thread; returns what it emitted so far through a channel.
    fn start_watch(
        ctx: &Ctx,
        path: &str,
        recursive: bool,
        include_entry: bool,
    ) -> (
        std::sync::mpsc::Receiver<WatchLine>,
        Arc<AtomicBool>,
        std::thread::JoinHandle<Result<(), FsError>>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (ctx, path, stop2) = (ctx.clone(), path.to_owned(), stop.clone());
        let t = std::thread::spawn(move || {
            let mut emit = |l: &WatchLine| tx.send(l.clone()).map_err(io::Error::other);
            watch(&ctx, &path, recursive, include_entry, &mut emit, &|| {
                stop2.load(Ordering::SeqCst)
            })
        });
        let first = rx.recv_timeout(Duration::from_secs(10)).expect("started");
        assert_eq!(first, WatchLine::Started {});
        (rx, stop, t)
    }

    fn collect_until(
        rx: &std::sync::mpsc::Receiver<WatchLine>,
        done: impl Fn(&[WatchEvent]) -> bool,
    ) -> Vec<WatchEvent> {
        let until = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while !done(&got) {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(WatchLine::Event(e)) => got.push(*e),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => panic!("timed out; got {got:?}"),
            }
        }
        got
    }

    fn pairs(evs: &[WatchEvent]) -> Vec<(String, EventKind)> {
        evs.iter().map(|e| (e.name.clone(), e.kind)).collect()
    }

    #[test]
    fn watch_reports_changes_in_order() {
        let (_d, ctx) = setup();
        fs::create_dir(ctx.home.join("w")).unwrap();
        fs::create_dir(ctx.home.join("w/sub")).unwrap();
        let (rx, stop, t) = start_watch(&ctx, "w", false, true);

        let f = ctx.home.join("w/a");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        fs::rename(&f, ctx.home.join("w/b")).unwrap();
        fs::remove_file(ctx.home.join("w/b")).unwrap();
        fs::write(ctx.home.join("w/sub/unseen"), b"x").unwrap();
        fs::write(ctx.home.join("w/last"), b"").unwrap();

        let got = collect_until(&rx, |g| g.iter().any(|e| e.name == "last"));
        let want = [
            ("a", EventKind::Create),
            ("a", EventKind::Write),
            ("a", EventKind::Chmod),
            ("a", EventKind::Rename),
            ("b", EventKind::Create),
            ("b", EventKind::Remove),
            ("last", EventKind::Create),
        ];
        assert_eq!(
            pairs(&got),
            want.map(|(n, k)| (n.to_owned(), k)).to_vec(),
            "not recursive: nothing from sub/"
        );
        // Entries are read when the event is handled: `a` may be gone by then, `last`
        // is still there, and a removed file has none.
        let last = got[6].entry.as_ref().expect("entry asked for");
        assert_eq!(
            (last.path.clone(), last.kind),
            (h(&ctx, "w/last"), FileKind::File)
        );
        assert!(got[5].entry.is_none(), "a removed file has no entry");
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn recursive_watch_follows_new_directories() {
        let (_d, ctx) = setup();
        fs::create_dir_all(ctx.home.join("w/old")).unwrap();
        let (rx, stop, t) = start_watch(&ctx, &h(&ctx, "w"), true, false);

        fs::write(ctx.home.join("w/old/x"), b"1").unwrap();
        fs::create_dir_all(ctx.home.join("w/new/deeper")).unwrap();
        // Give the watcher time to see the new directories, then write inside them.
        std::thread::sleep(Duration::from_millis(500));
        fs::write(ctx.home.join("w/new/deeper/y"), b"2").unwrap();

        let got = collect_until(&rx, |g| {
            g.iter()
                .any(|e| e.name == "new/deeper/y" && e.kind == EventKind::Write)
        });
        let p = pairs(&got);
        assert!(p.contains(&("old/x".into(), EventKind::Create)), "{p:?}");
        assert!(p.contains(&("old/x".into(), EventKind::Write)), "{p:?}");
        assert!(p.contains(&("new".into(), EventKind::Create)), "{p:?}");
        assert!(
            p.contains(&("new/deeper".into(), EventKind::Create)),
            "{p:?}"
        );
        assert!(
            p.contains(&("new/deeper/y".into(), EventKind::Create)),
            "{p:?}"
        );
        assert!(
            got.iter().all(|e| e.entry.is_none()),
            "no entries unless asked"
        );
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn watch_refuses_what_it_cannot_watch() {
        let (_d, ctx) = setup();
        fs::write(ctx.home.join("f"), b"").unwrap();
        let mut emit = |_: &WatchLine| -> io::Result<()> { panic!("nothing is emitted") };
        let e = watch(&ctx, "f", false, false, &mut emit, &|| true).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        let e = watch(&ctx, "nope", false, false, &mut emit, &|| true).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }

    #[test]
    fn answers_are_one_json_line_each() {
        let mut out = Vec::new();
        assert_eq!(answer(&mut out, Ok(ReadHeader { size: 3 })), 0);
        assert_eq!(String::from_utf8(out).unwrap(), "{\"ok\":{\"size\":3}}\n");
        let mut out = Vec::new();
        let code = answer::<()>(&mut out, Err(FsError::new(ErrorCode::NotFound, "gone")));
        assert_eq!(code, 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"error\":{\"code\":\"not_found\",\"message\":\"gone\"}}\n"
        );
        let line = serde_json::to_string(&WatchLine::Started {}).unwrap();
        assert_eq!(line, "{\"started\":{}}");
    }
}
