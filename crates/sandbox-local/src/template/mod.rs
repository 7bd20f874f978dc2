//! Templates of the local provider: named, immutable stacks of read-only layers plus the
//! defaults of the sandboxes made from them.
//!
//! Why a module of its own: every sandbox mounts overlayfs twice, `/` over a template's
//! *root* layers and `/usr` over its *usr* layers (the built-in `base` template uses the
//! host's own `/usr` as its lowest usr layer, and overlayfs does not cross the mount
//! points inside a layer). Making, keeping and removing those layers safely is work of
//! its own:
//!
//! - [`Registry`] keeps the templates of a data directory: one JSON manifest per template
//!   under the templates directory, one directory per layer under the layers directory,
//!   both written under temporary names and renamed into place, so that a crash never
//!   leaves a half-made template in use;
//! - `base` (the host's userland, `base.rs`) and `python` (the same layers, registered
//!   only when the host's Python works) are built in;
//! - [`Registry::import`] takes a root filesystem from a directory or a tar archive, which
//!   is treated as hostile (`archive.rs`);
//! - [`Registry::add_layer`] freezes a sandbox's overlay upper directories into a new top
//!   layer, keeping the whiteouts and opaque directories that make it a faithful overlay
//!   lower layer (`copy.rs`).
//!
//! Layers are stored with *canonical* ownership (0 is the sandbox's root, 1000 the sandbox
//! user); init idmaps them onto the sandbox's host range at run time. Rootless, there is
//! no idmap and every file belongs to the one user we have.

mod archive;
mod base;
mod copy;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use copy::{CopyOptions, CopyStats};

/// Uid and gid of the sandbox user.
pub const USER_UID: u32 = 1000;
/// Name of the sandbox user.
pub const USER_NAME: &str = "user";
/// Home directory of the sandbox user (also where processes start).
pub const USER_HOME: &str = "/home/user";

/// The built-in template made of the host's userland.
pub const BASE: &str = "base";
/// The built-in template for Python: `base`'s layers, registered when its Python works.
pub const PYTHON: &str = "python";
/// What the built-in templates say they come from.
const BUILTIN_SOURCE: &str = "built in: the host's userland";
/// The Python that `python` promises, checked at open time.
const PYTHON_BIN: &str = "/usr/bin/python3";
/// Version of the manifest format.
const MANIFEST_FORMAT: u32 = 1;
/// Prefix of everything written under a temporary name (removed at open time).
const TMP_PREFIX: &str = ".tmp-";

/// One read-only layer of a template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The layer's directory name under the layers directory.
    pub id: String,
    /// The tree standing for `/` (its `usr` subdirectory is shadowed by the `/usr`
    /// mount).
    pub root: PathBuf,
    /// The tree standing for `/usr`.
    pub usr: PathBuf,
}

/// What a sandbox made from a template gets unless its creator says otherwise; stored in
/// the manifest as the domain type is.
pub use quantbox_sandbox::TemplateDefaults;

/// A named, immutable stack of layers plus defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// The template's name (see [`Registry::validate_name`]).
    pub name: String,
    /// The layers, topmost first.
    pub layers: Vec<Layer>,
    /// Defaults of the sandboxes made from it.
    #[serde(default)]
    pub defaults: TemplateDefaults,
    /// Where it comes from: `built in: the host's userland`, `import of <path>`,
    /// `export of sandbox <id> (template <t>)`.
    pub source: String,
    /// Whether it is built in (never stored, never deleted).
    #[serde(default)]
    pub builtin: bool,
    /// When it was made, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Bytes of regular files in the layers this template added itself.
    pub size_bytes: u64,
    /// Entries in the layers this template added itself.
    pub files_count: u64,
}

impl Template {
    /// The root layers, topmost first (what init stacks under `/`).
    pub fn root_layers(&self) -> Vec<PathBuf> {
        self.layers.iter().map(|l| l.root.clone()).collect()
    }

    /// The usr layers, topmost first (what init stacks under `/usr`).
    pub fn usr_layers(&self) -> Vec<PathBuf> {
        self.layers.iter().map(|l| l.usr.clone()).collect()
    }
}

/// Why a template operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A filesystem operation failed.
    #[error("template storage: {path}: {source}")]
    Io {
        /// The file the operation was about.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The host's `/bin`, `/lib` or `/sbin` is a real directory: `base` cannot be built.
    #[error(
        "the base template needs a merged-/usr host (/bin, /lib and /sbin as links into /usr); {0} is a real directory here"
    )]
    NotMergedUsr(String),
    /// A template name breaks the naming rule (the message says which rule).
    #[error("{0}")]
    InvalidName(String),
    /// A template of that name exists (or is being made).
    #[error("template `{0}` already exists")]
    Exists(String),
    /// No template of that name.
    #[error("template `{0}` does not exist")]
    NotFound(String),
    /// Built-in templates cannot be deleted.
    #[error("template `{0}` is built in and cannot be deleted")]
    Builtin(String),
    /// A sandbox uses the template.
    #[error("template `{0}` is used by a sandbox and cannot be deleted")]
    InUse(String),
    /// An archive entry could escape the layer or is not allowed; nothing was imported.
    #[error("unsafe archive entry `{entry}`: {reason}; nothing was imported")]
    UnsafeArchive {
        /// The entry's path as the archive spells it.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The source of an import or a layer is not usable (the message says why).
    #[error("{0}")]
    BadSource(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TemplateError + '_ {
    move |source| TemplateError::Io {
        path: path.to_owned(),
        source,
    }
}

fn nix_err(path: &Path) -> impl FnOnce(nix::Error) -> TemplateError + '_ {
    move |e| TemplateError::Io {
        path: path.to_owned(),
        source: io::Error::from(e),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn mkdir_private(p: &Path) -> Result<(), TemplateError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(io_err(p))
}

/// A fresh layer id: 16 random hex digits, then the template's name (for people reading
/// the layers directory). Never of the form of `base`'s ids (`base-vN`).
fn new_layer_id(name: &str) -> Result<String, TemplateError> {
    let mut b = [0u8; 8];
    let urandom = Path::new("/dev/urandom");
    fs::File::open(urandom)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io_err(urandom))?;
    Ok(format!("{:016x}-{name}", u64::from_le_bytes(b)))
}

/// A layer id as found in a manifest: a plain file name.
fn valid_layer_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Whether `p` is a real directory (not a link to one).
fn is_real_dir(p: &Path) -> bool {
    p.symlink_metadata().is_ok_and(|m| m.is_dir())
}

/// What a manifest file holds.
#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    template: Template,
}

/// Writes `t`'s manifest to `<dir>/<name>.json` through a temporary file and a rename.
fn write_manifest(dir: &Path, t: &Template) -> Result<(), TemplateError> {
    let path = dir.join(format!("{}.json", t.name));
    let tmp = dir.join(format!("{TMP_PREFIX}{}.json", t.name));
    let body = serde_json::to_vec_pretty(&Manifest {
        format: MANIFEST_FORMAT,
        template: t.clone(),
    })
    .map_err(|e| io_err(&path)(io::Error::other(e)))?;
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&path)(e));
    }
    // The rename itself is durable once the directory is.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads and checks a manifest. Layer paths are recomputed from the layer ids, so that a
/// manifest can only ever name directories of `layers_dir` (or the host's `/usr` for
/// `base`'s layers), and each must be a real directory.
fn read_manifest(path: &Path, layers_dir: &Path) -> Result<Template, String> {
    let text = fs::read(path).map_err(|e| e.to_string())?;
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    if m.format != MANIFEST_FORMAT {
        return Err(format!("unknown manifest format {}", m.format));
    }
    let mut t = m.template;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if t.name != stem {
        return Err(format!(
            "it names template `{}`, not `{stem}` as its file name says",
            t.name
        ));
    }
    Registry::validate_name(&t.name).map_err(|e| e.to_string())?;
    if is_builtin_name(&t.name) {
        return Err(format!("`{}` is the name of a built-in template", t.name));
    }
    if t.layers.is_empty() {
        return Err("it has no layers".into());
    }
    for l in &mut t.layers {
        if !valid_layer_id(&l.id) {
            return Err(format!("invalid layer id `{}`", l.id));
        }
        let dir = layers_dir.join(&l.id);
        l.root = dir.join("root");
        l.usr = if base::is_base_layer_id(&l.id) {
            PathBuf::from("/usr")
        } else if l.usr.ends_with("root/usr") {
            dir.join("root").join("usr")
        } else {
            dir.join("usr")
        };
        for p in [&l.root, &l.usr] {
            if !is_real_dir(p) {
                return Err(format!("its layer {} is missing", p.display()));
            }
        }
    }
    t.builtin = false;
    Ok(t)
}

fn is_builtin_name(name: &str) -> bool {
    name == BASE || name == PYTHON
}

/// Removes a directory tree of the layers directory: first renamed to a temporary name
/// (so that no half-removed layer is ever found by its id), then removed.
fn remove_layer_dir(layers_dir: &Path, id: &str) -> Result<(), TemplateError> {
    let dir = layers_dir.join(id);
    let doomed = layers_dir.join(format!("{TMP_PREFIX}del-{id}"));
    match fs::rename(&dir, &doomed) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(&dir)(e)),
    }
    remove_tree(&doomed)
}

/// `remove_dir_all`, first making directories writable (rootless, a read-only
/// directory of a layer cannot be emptied otherwise).
fn remove_tree(p: &Path) -> Result<(), TemplateError> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            copy::make_dirs_writable(p);
            match fs::remove_dir_all(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(p)(e)),
                _ => Ok(()),
            }
        }
    }
}

/// The mutable part of a registry.
#[derive(Default)]
struct State {
    templates: BTreeMap<String, Template>,
    /// Templates being made: their names, and the ids of the existing layers they build
    /// on (which no deletion may remove meanwhile).
    pending: BTreeMap<String, Vec<String>>,
    /// Manifests that could not be loaded. No layer whose id their text mentions is
    /// ever removed: they may be repaired.
    skipped: Vec<PathBuf>,
}

/// The templates of a data directory. `Send + Sync`; long copies run without its lock
/// held.
pub struct Registry {
    templates_dir: PathBuf,
    layers_dir: PathBuf,
    owner: Option<(u32, u32)>,
    state: RwLock<State>,
}

/// A name being made; dropping it frees the name again.
struct Reservation<'a> {
    reg: &'a Registry,
    name: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.reg.write().pending.remove(&self.name);
    }
}

/// Where an import comes from.
enum SourceKind {
    Dir,
    Tar { gzip: bool },
}

impl Registry {
    /// Opens `<templates_dir>` (manifests) and `<layers_dir>` (layer trees), building
    /// `base` when its current version is missing (written under a temporary name, then
    /// renamed into place) and registering the built-in `python`: `base`'s layers, once
    /// a check at open time shows that their Python works (`/usr/bin/python3 -c "import
    /// sys, json, sqlite3, ssl"` with an empty environment; `base`'s usr layer *is* the
    /// host's `/usr`, so running it on the host is the check). When it fails, `python`
    /// is not registered and a warning says why. Every other manifest is loaded; a
    /// corrupt one is skipped with a warning naming it.
    ///
    /// `owner` is `None` as root (canonical ownership) and the one user and group we
    /// have when rootless. Leftovers of interrupted writes are removed, and so are
    /// layers that no manifest mentions (but never `base`'s: sandboxes started before
    /// an upgrade may still use an older one).
    pub fn open(
        templates_dir: &Path,
        layers_dir: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<Self, TemplateError> {
        Self::open_with_python(templates_dir, layers_dir, owner, Path::new(PYTHON_BIN))
    }

    fn open_with_python(
        templates_dir: &Path,
        layers_dir: &Path,
        owner: Option<(u32, u32)>,
        python: &Path,
    ) -> Result<Self, TemplateError> {
        mkdir_private(templates_dir)?;
        mkdir_private(layers_dir)?;
        remove_leftovers(templates_dir, layers_dir);
        let mut state = State::default();
        let base = base::ensure(layers_dir, owner)?;
        match base::check_python(python) {
            Ok(()) => {
                let python = Template {
                    name: PYTHON.into(),
                    ..base.clone()
                };
                state.templates.insert(PYTHON.into(), python);
            }
            Err(why) => tracing::warn!(
                "the built-in template `python` is not available: {} does not work: {why}",
                python.display()
            ),
        }
        state.templates.insert(BASE.into(), base);
        let entries = fs::read_dir(templates_dir).map_err(io_err(templates_dir))?;
        for e in entries {
            let path = e.map_err(io_err(templates_dir))?.path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            if file.starts_with('.') || !file.ends_with(".json") || !path.is_file() {
                continue;
            }
            match read_manifest(&path, layers_dir) {
                Ok(t) => {
                    state.templates.insert(t.name.clone(), t);
                }
                Err(why) => {
                    tracing::warn!(manifest = %path.display(), "skipping a template: {why}");
                    state.skipped.push(path);
                }
            }
        }
        let reg = Self {
            templates_dir: templates_dir.to_owned(),
            layers_dir: layers_dir.to_owned(),
            owner,
            state: RwLock::new(state),
        };
        reg.remove_orphans()?;
        Ok(reg)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The template called `name`.
    pub fn get(&self, name: &str) -> Option<Template> {
        self.read().templates.get(name).cloned()
    }

    /// Every template, sorted by name.
    pub fn list(&self) -> Vec<Template> {
        self.read().templates.values().cloned().collect()
    }

    /// Every template's name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().templates.keys().cloned().collect()
    }

    /// A template name is 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not starting with
    /// `.` or `-` (it names a file, and must never be a hidden one or look like an
    /// option).
    pub fn validate_name(name: &str) -> Result<(), TemplateError> {
        const RULE: &str = "a template name is 1 to 64 characters of A-Z a-z 0-9 . _ - and does not start with . or -";
        let shown: String = name.chars().take(80).collect();
        let why = if name.is_empty() {
            Some("it is empty".to_owned())
        } else if name.len() > 64 {
            Some(format!("it is {} bytes long", name.len()))
        } else if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            Some(format!("it contains {c:?}"))
        } else if name.starts_with('.') || name.starts_with('-') {
            Some(format!(
                "it starts with `{}`",
                name.chars().next().unwrap_or_default()
            ))
        } else {
            None
        };
        match why {
            Some(why) => Err(TemplateError::InvalidName(format!(
                "invalid template name {shown:?}: {why}; {RULE}"
            ))),
            None => Ok(()),
        }
    }

    /// Reserves `name` for a template being made on top of `pins` (ids of existing
    /// layers, which no deletion may remove until the reservation is dropped).
    fn reserve(
        &self,
        name: &str,
        parent: Option<&Template>,
    ) -> Result<Reservation<'_>, TemplateError> {
        Self::validate_name(name)?;
        let mut st = self.write();
        if st.templates.contains_key(name) || st.pending.contains_key(name) {
            return Err(TemplateError::Exists(name.to_owned()));
        }
        if is_builtin_name(name) {
            return Err(TemplateError::InvalidName(format!(
                "`{name}` is the name of a built-in template"
            )));
        }
        let mut pins = Vec::new();
        if let Some(p) = parent {
            if st
                .templates
                .get(&p.name)
                .is_none_or(|t| t.layers != p.layers)
            {
                return Err(TemplateError::NotFound(p.name.clone()));
            }
            pins = p.layers.iter().map(|l| l.id.clone()).collect();
        }
        st.pending.insert(name.to_owned(), pins);
        Ok(Reservation {
            reg: self,
            name: name.to_owned(),
        })
    }

    /// Makes a new layer directory `<layers>/<id>` through `fill`, which writes into a
    /// temporary directory; on failure nothing is left.
    fn make_layer<T>(
        &self,
        id: &str,
        fill: impl FnOnce(&Path) -> Result<T, TemplateError>,
    ) -> Result<T, TemplateError> {
        let tmp = self.layers_dir.join(format!("{TMP_PREFIX}{id}"));
        let made = fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io_err(&tmp))
            .and_then(|()| fill(&tmp))
            .and_then(|v| {
                let dst = self.layers_dir.join(id);
                fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
                Ok(v)
            });
        if made.is_err() {
            let _ = remove_tree(&tmp);
        }
        made
    }

    /// Writes `t`'s manifest and registers it; on failure its own layer is removed.
    fn commit(&self, t: Template) -> Result<Template, TemplateError> {
        let mut st = self.write();
        if let Err(e) = write_manifest(&self.templates_dir, &t) {
            drop(st);
            let _ = remove_layer_dir(&self.layers_dir, &t.layers[0].id);
            return Err(e);
        }
        st.templates.insert(t.name.clone(), t.clone());
        Ok(t)
    }

    /// How files of a new layer are owned.
    fn owners(&self, uid_shift: u32) -> copy::Owners {
        match self.owner {
            None => copy::Owners::Canonical { shift: uid_shift },
            Some((uid, gid)) => copy::Owners::Ours { uid, gid },
        }
    }

    /// The overlay xattrs a copy keeps: `trusted.overlay.*` (only host root can set
    /// them) and, rootless, `user.overlay.*` (what unprivileged overlayfs uses; as root
    /// such attributes are only what a sandbox wrote, and mean nothing).
    fn overlay_xattrs(&self) -> &'static [&'static str] {
        if self.owner.is_some() {
            &["trusted.overlay.", "user.overlay."]
        } else {
            &["trusted.overlay."]
        }
    }

    /// Imports a root filesystem from a directory or a tar archive (`.tar`, or
    /// gzip-compressed `.tar.gz`/`.tgz`, recognised by their magic bytes, not only by
    /// name) as a new single-layer template `name` (`TemplateError::Exists` when it
    /// exists).
    ///
    /// The input is hostile. A directory is walked without following symbolic links and
    /// copied with its ownership as canonical ids (ids beyond 65535 become 65534); an
    /// archive is checked whole before anything is written, and any entry that could
    /// write outside the layer (absolute paths, `..`, writes through a link it made,
    /// links climbing out of the root) or make a device is refused
    /// (`TemplateError::UnsafeArchive`). Modes are kept, setuid and setgid bits
    /// included: layers are mounted `nosuid` and sandbox processes run with
    /// `no_new_privs`, so those bits grant nothing. Only overlayfs' own extended
    /// attributes are kept (no file capabilities, no ACLs).
    ///
    /// The root part of the new layer is the imported tree and its usr part is the
    /// tree's `usr` (made empty when missing; it must be a real directory). The mount
    /// points init needs (`proc`, `dev`, `tmp`, `etc/hostname`, `etc/hosts`) and the
    /// sandbox user's home are made when missing. A tree without `/bin/sh` is refused
    /// (`TemplateError::BadSource`). On any failure nothing is left.
    pub fn import(
        &self,
        name: &str,
        source: &Path,
        defaults: TemplateDefaults,
        progress: &(dyn Fn(CopyStats) + Sync),
    ) -> Result<Template, TemplateError> {
        Self::validate_name(name)?;
        let kind = source_kind(source)?;
        let _reservation = self.reserve(name, None)?;
        let id = new_layer_id(name)?;
        let owners = self.owners(0);
        let stats = self.make_layer(&id, |tmp| {
            let root = tmp.join("root");
            let mut p = copy::Progress::new(progress);
            match kind {
                SourceKind::Dir => {
                    let skip = tmp.symlink_metadata().ok().map(|m| (m.dev(), m.ino()));
                    copy::Copier::new(&owners, &[], self.overlay_xattrs(), skip, &mut p)
                        .copy_tree(source, &root)?;
                }
                SourceKind::Tar { gzip } => {
                    archive::extract(source, gzip, &root, &owners, &mut p)?;
                }
            }
            finish_rootfs(&root, &owners, &source.display().to_string())?;
            Ok(p.finish())
        })?;
        let dir = self.layers_dir.join(&id);
        let t = Template {
            name: name.to_owned(),
            layers: vec![Layer {
                id,
                root: dir.join("root"),
                usr: dir.join("root").join("usr"),
            }],
            defaults,
            source: format!("import of {}", source.display()),
            builtin: false,
            created_at_ms: now_ms(),
            size_bytes: stats.bytes,
            files_count: stats.files,
        };
        self.commit(t)
    }

    /// Registers template `name` = `parent`'s layers under one new top layer copied from
    /// `root_src` and `usr_src` (a sandbox's overlay upper directories), with `opts`
    /// (used by export). Whiteouts, opaque directories and overlay attributes are kept, so
    /// that the layer still hides what the sandbox deleted; owners are shifted back to
    /// canonical ids by `opts.uid_shift`; `opts.exclude` is left out (an excluded path
    /// under `usr/` is left out of the usr part). Nothing is left on failure;
    /// `TemplateError::NotFound` when `parent` is no longer registered as it was.
    #[allow(clippy::too_many_arguments)]
    pub fn add_layer(
        &self,
        name: &str,
        parent: &Template,
        root_src: &Path,
        usr_src: &Path,
        opts: &CopyOptions,
        defaults: TemplateDefaults,
        source: String,
        progress: &(dyn Fn(CopyStats) + Sync),
    ) -> Result<Template, TemplateError> {
        for src in [root_src, usr_src] {
            if !is_real_dir(src) {
                return Err(TemplateError::BadSource(format!(
                    "{} is not a directory",
                    src.display()
                )));
            }
        }
        let _reservation = self.reserve(name, Some(parent))?;
        let id = new_layer_id(name)?;
        let owners = self.owners(opts.uid_shift);
        let usr_exclude: Vec<PathBuf> = opts
            .exclude
            .iter()
            .filter_map(|p| p.strip_prefix("usr").ok())
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .collect();
        let stats = self.make_layer(&id, |tmp| {
            let mut p = copy::Progress::new(progress);
            copy::Copier::new(&owners, &opts.exclude, self.overlay_xattrs(), None, &mut p)
                .copy_tree(root_src, &tmp.join("root"))?;
            copy::Copier::new(&owners, &usr_exclude, self.overlay_xattrs(), None, &mut p)
                .copy_tree(usr_src, &tmp.join("usr"))?;
            Ok(p.finish())
        })?;
        let dir = self.layers_dir.join(&id);
        let mut layers = vec![Layer {
            id,
            root: dir.join("root"),
            usr: dir.join("usr"),
        }];
        layers.extend(parent.layers.iter().cloned());
        let t = Template {
            name: name.to_owned(),
            layers,
            defaults,
            source,
            builtin: false,
            created_at_ms: now_ms(),
            size_bytes: stats.bytes,
            files_count: stats.files,
        };
        self.commit(t)
    }

    /// Deletes a template: built-in ones never (`TemplateError::Builtin`); one for which
    /// `in_use(name)` is true is refused (`TemplateError::InUse`); then the layers no
    /// remaining manifest references are removed (layers shared with other templates
    /// stay; `base`'s usr part, the host's `/usr`, is never touched). `in_use` is called
    /// once, without the registry's lock held; the caller keeps new sandboxes of `name`
    /// from starting meanwhile.
    pub fn delete(&self, name: &str, in_use: &dyn Fn(&str) -> bool) -> Result<(), TemplateError> {
        match self.get(name) {
            None => return Err(TemplateError::NotFound(name.to_owned())),
            Some(t) if t.builtin => return Err(TemplateError::Builtin(name.to_owned())),
            Some(_) => {}
        }
        if in_use(name) {
            return Err(TemplateError::InUse(name.to_owned()));
        }
        let doomed = {
            let mut st = self.write();
            let Some(t) = st.templates.get(name).cloned() else {
                return Err(TemplateError::NotFound(name.to_owned()));
            };
            let manifest = self.templates_dir.join(format!("{name}.json"));
            match fs::remove_file(&manifest) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(&manifest)(e));
                }
                _ => {}
            }
            st.templates.remove(name);
            let kept = referenced(&st);
            let mut doomed = Vec::new();
            for l in &t.layers {
                if kept.as_ref().is_none_or(|k| k.contains(&l.id)) || base::is_base_layer_id(&l.id)
                {
                    continue;
                }
                // Renamed under the lock, so that no one finds it by its id any more.
                let dir = self.layers_dir.join(&l.id);
                let tmp = self.layers_dir.join(format!("{TMP_PREFIX}del-{}", l.id));
                match fs::rename(&dir, &tmp) {
                    Ok(()) => doomed.push(tmp),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(
                        layer = %dir.display(), error = %e,
                        "could not remove a layer of deleted template `{name}`"
                    ),
                }
            }
            doomed
        };
        for d in doomed {
            if let Err(e) = remove_tree(&d) {
                tracing::warn!(error = %e, "could not remove a layer of deleted template `{name}`");
            }
        }
        Ok(())
    }

    /// Removes layers that no manifest mentions (what a crash between a layer's rename
    /// and its manifest, or during a deletion, leaves).
    fn remove_orphans(&self) -> Result<(), TemplateError> {
        let st = self.read();
        let Some(kept) = referenced(&st) else {
            return Ok(());
        };
        let entries = fs::read_dir(&self.layers_dir).map_err(io_err(&self.layers_dir))?;
        for e in entries.flatten() {
            let Some(id) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if id.starts_with('.') || kept.contains(&id) || base::is_base_layer_id(&id) {
                continue;
            }
            tracing::info!(layer = id, "removing a layer no template uses");
            if let Err(e) = remove_layer_dir(&self.layers_dir, &id) {
                tracing::warn!(error = %e, "could not remove an unused layer");
            }
        }
        Ok(())
    }
}

/// Ids of the layers that must stay: those of registered templates, of templates being
/// made, and any that the text of an unloadable manifest mentions; `None` (keep every
/// layer) when such a manifest cannot even be read: better a stray layer than a lost one.
fn referenced(st: &State) -> Option<BTreeSet<String>> {
    let mut ids: BTreeSet<String> = st
        .templates
        .values()
        .flat_map(|t| t.layers.iter().map(|l| l.id.clone()))
        .chain(st.pending.values().flatten().cloned())
        .collect();
    for m in &st.skipped {
        let text = match fs::read(m) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(manifest = %m.display(), error = %e, "unreadable manifest: no layer is removed");
                return None;
            }
        };
        let text = String::from_utf8_lossy(&text);
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c))) {
            if valid_layer_id(word) {
                ids.insert(word.to_owned());
            }
        }
    }
    Some(ids)
}

/// Removes what interrupted writes left: temporary manifests and layer directories.
fn remove_leftovers(templates_dir: &Path, layers_dir: &Path) {
    for dir in [templates_dir, layers_dir] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            let p = e.path();
            let removed = if is_real_dir(&p) {
                remove_tree(&p)
            } else {
                fs::remove_file(&p).map_err(io_err(&p))
            };
            match removed {
                Ok(()) => {
                    tracing::info!(path = %p.display(), "removed the leftover of an interrupted write")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove the leftover of an interrupted write")
                }
            }
        }
    }
}

/// What `source` is: a directory, a tar archive or a gzip-compressed one (by magic
/// bytes; a plain tar without the ustar magic is recognised by its `.tar` name).
fn source_kind(source: &Path) -> Result<SourceKind, TemplateError> {
    let meta = fs::metadata(source).map_err(|e| {
        TemplateError::BadSource(format!("cannot import {}: {e}", source.display()))
    })?;
    if meta.is_dir() {
        return Ok(SourceKind::Dir);
    }
    if !meta.is_file() {
        return Err(TemplateError::BadSource(format!(
            "cannot import {}: neither a directory nor a file",
            source.display()
        )));
    }
    let mut head = Vec::with_capacity(512);
    fs::File::open(source)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(io_err(source))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(SourceKind::Tar { gzip: true });
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Ok(SourceKind::Tar { gzip: false });
    }
    if source.extension().is_some_and(|e| e == "tar") && head.len() == 512 {
        return Ok(SourceKind::Tar { gzip: false });
    }
    Err(TemplateError::BadSource(format!(
        "cannot import {}: neither a directory nor a tar archive (plain or gzip-compressed)",
        source.display()
    )))
}

/// Completes an imported root filesystem: checks that `usr` and the mount points init
/// uses are real directories (init resolves them on the host before the sandbox's root
/// exists; a link there would point at the host), makes the missing ones, and checks for
/// `/bin/sh`.
fn finish_rootfs(root: &Path, owners: &copy::Owners, shown: &str) -> Result<(), TemplateError> {
    let bad = |what: String| TemplateError::BadSource(format!("{shown}: {what}"));
    for (d, mode) in [
        ("usr", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
    ] {
        let p = root.join(d);
        match p.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(bad(format!("/{d} is not a directory"))),
            Err(_) => copy::in_parent_untouched(&p, || copy::make_dir(&p, mode, 0, owners))?,
        }
    }
    // The sandbox user's home, where its processes start (only inside the layer: a
    // `home` that is a link is left as it is).
    let home = root.join("home");
    if home.symlink_metadata().is_err() {
        copy::in_parent_untouched(&home, || copy::make_dir(&home, 0o755, 0, owners))?;
    }
    let user_home = root.join(USER_HOME.trim_start_matches('/'));
    if is_real_dir(&home) && user_home.symlink_metadata().is_err() {
        copy::in_parent_untouched(&user_home, || {
            copy::make_dir(&user_home, 0o755, USER_UID, owners)
        })?;
    }
    for f in ["etc/hostname", "etc/hosts"] {
        let p = root.join(f);
        match p.symlink_metadata() {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(bad(format!("/{f} is not a regular file"))),
            Err(_) => copy::in_parent_untouched(&p, || copy::make_file(&p, 0o644, owners))?,
        }
    }
    match copy::resolve_in(root, Path::new("bin/sh")) {
        Some(m) if !m.is_dir() => Ok(()),
        _ => Err(bad("it has no /bin/sh: not a root filesystem".into())),
    }
}

/// `p` made of normal components only: `None` for an absolute path or one with `..`.
fn relative_normal(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    Some(out)
}
