//! Registry tests against the real filesystem (and, as root, real overlay mounts).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::process::Command;
use std::sync::Mutex;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use tar::{EntryType, Header};

use super::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn owner() -> Option<(u32, u32)> {
    (!is_root()).then(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    })
}

fn quiet(_: CopyStats) {}

struct Env {
    dir: tempfile::TempDir,
    templates: PathBuf,
    layers: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let templates = dir.path().join("templates");
        let layers = dir.path().join("layers");
        Self {
            dir,
            templates,
            layers,
        }
    }

    fn open(&self) -> Registry {
        Registry::open(&self.templates, &self.layers, owner()).unwrap()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Everything in the layers and templates directories.
    fn listing(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for d in [&self.templates, &self.layers] {
            for e in fs::read_dir(d).unwrap() {
                out.insert(e.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        out
    }
}

fn set_mtime(p: &Path, secs: i64) {
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn chown(p: &Path, uid: u32, gid: u32) {
    if is_root() {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    }
}

fn write(p: &Path, body: &str, mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn dir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

const FILE_MTIME: i64 = 1_000_000_000;
const DIR_MTIME: i64 = 1_100_000_000;

/// A small root filesystem with one of everything an import must keep.
fn make_rootfs_dir(r: &Path) {
    dir(r, 0o755);
    dir(&r.join("bin"), 0o755);
    write(&r.join("bin/sh"), "#!shell", 0o755);
    write(&r.join("bin/su"), "setuid", 0o4755);
    write(&r.join("bin/wall"), "setgid", 0o2755);
    symlink("sh", r.join("bin/rel")).unwrap();
    fs::hard_link(r.join("bin/sh"), r.join("bin/sh2")).unwrap();
    dir(&r.join("etc"), 0o755);
    write(&r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n", 0o644);
    symlink("/etc/passwd", r.join("etc/abs")).unwrap();
    symlink("/", r.join("escape")).unwrap();
    dir(&r.join("home/user"), 0o700);
    chown(&r.join("home/user"), 1000, 1000);
    write(&r.join("data/file"), "data", 0o640);
    chown(&r.join("data/file"), 1234, 1234);
    dir(&r.join("run"), 0o755);
    nix::unistd::mkfifo(
        &r.join("run/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o620),
    )
    .unwrap();
    fs::set_permissions(r.join("run/fifo"), fs::Permissions::from_mode(0o620)).unwrap();
    for f in ["bin/sh", "bin/su", "etc/passwd", "data/file", "run/fifo"] {
        set_mtime(&r.join(f), FILE_MTIME);
    }
    set_mtime(&r.join("etc"), DIR_MTIME);
    set_mtime(&r.join("home/user"), DIR_MTIME);
}

/// What `make_rootfs_dir` and `rootfs_tar` hold, checked in an imported layer.
fn check_rootfs(t: &Template) {
    assert_eq!(t.layers.len(), 1);
    let r = &t.layers[0].root;
    assert_eq!(t.layers[0].usr, r.join("usr"));
    let meta = |p: &str| r.join(p).symlink_metadata().unwrap();
    let mode = |p: &str| meta(p).mode() & 0o7777;
    assert_eq!(fs::read_to_string(r.join("bin/sh")).unwrap(), "#!shell");
    assert_eq!(mode("bin/sh"), 0o755);
    assert_eq!(mode("bin/su"), 0o4755, "setuid kept");
    assert_eq!(mode("bin/wall"), 0o2755, "setgid kept");
    assert_eq!(mode("data/file"), 0o640);
    assert_eq!(mode("home/user"), 0o700);
    assert_eq!(fs::read_link(r.join("bin/rel")).unwrap(), Path::new("sh"));
    assert_eq!(
        fs::read_link(r.join("etc/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(
        meta("escape").file_type().is_symlink(),
        "links are not followed"
    );
    assert_eq!(fs::read_link(r.join("escape")).unwrap(), Path::new("/"));
    assert_eq!(
        meta("bin/sh2").ino(),
        meta("bin/sh").ino(),
        "hard link kept"
    );
    assert!(meta("run/fifo").file_type().is_fifo());
    assert_eq!(mode("run/fifo"), 0o620);
    for f in ["bin/sh", "bin/su", "etc/passwd", "data/file", "run/fifo"] {
        assert_eq!(meta(f).mtime(), FILE_MTIME, "{f}");
    }
    assert_eq!(meta("etc").mtime(), DIR_MTIME);
    assert_eq!(meta("home/user").mtime(), DIR_MTIME);
    if is_root() {
        assert_eq!((meta("bin/sh").uid(), meta("bin/sh").gid()), (0, 0));
        assert_eq!(
            (meta("home/user").uid(), meta("home/user").gid()),
            (1000, 1000)
        );
        assert_eq!(
            (meta("data/file").uid(), meta("data/file").gid()),
            (1234, 1234)
        );
    } else {
        let (uid, gid) = owner().unwrap();
        for f in ["bin/sh", "home/user", "data/file"] {
            assert_eq!((meta(f).uid(), meta(f).gid()), (uid, gid), "{f}");
        }
    }
    // What init needs, made because the source had none.
    for d in ["usr", "proc", "dev", "tmp"] {
        assert!(meta(d).is_dir(), "{d}");
    }
    assert_eq!(mode("tmp"), 0o1777);
    assert!(meta("etc/hostname").is_file() && meta("etc/hosts").is_file());
    assert!(t.size_bytes > 0 && t.files_count >= 14, "{t:?}");
}

/// Builds tar archives with whatever headers a test needs, unchecked.
struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        path: &str,
        kind: EntryType,
        mode: u32,
        ids: (u64, u64),
        mtime: u64,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(ids.0);
        h.set_gid(ids.1);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name_literal(l).unwrap();
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn dir(&mut self, path: &str) -> &mut Self {
        self.entry(path, EntryType::Directory, 0o755, (0, 0), 1, None, b"")
    }

    fn file(&mut self, path: &str) -> &mut Self {
        self.entry(path, EntryType::Regular, 0o644, (0, 0), 1, None, b"x")
    }

    fn link(&mut self, path: &str, kind: EntryType, target: &str) -> &mut Self {
        self.entry(path, kind, 0o777, (0, 0), 1, Some(target), b"")
    }

    fn device(&mut self, path: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o600);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &b""[..]).unwrap();
        self
    }

    fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// `make_rootfs_dir` as an archive, with a leading `./` and implicit parents.
fn rootfs_tar() -> Vec<u8> {
    use EntryType as E;
    let mut t = TarBuilder::new();
    t.entry("./", E::Directory, 0o755, (0, 0), 5, None, b"")
        .entry("./bin/", E::Directory, 0o755, (0, 0), 5, None, b"")
        .entry(
            "./bin/sh",
            E::Regular,
            0o755,
            (0, 0),
            1_000_000_000,
            None,
            b"#!shell",
        )
        .entry(
            "bin/su",
            E::Regular,
            0o4755,
            (0, 0),
            1_000_000_000,
            None,
            b"setuid",
        )
        .entry("bin/wall", E::Regular, 0o2755, (0, 0), 5, None, b"setgid")
        .entry("bin/rel", E::Symlink, 0o777, (0, 0), 5, Some("sh"), b"")
        .entry("bin/sh2", E::Link, 0o755, (0, 0), 5, Some("./bin/sh"), b"")
        .entry(
            "etc/",
            E::Directory,
            0o755,
            (0, 0),
            1_100_000_000,
            None,
            b"",
        )
        .entry(
            "etc/passwd",
            E::Regular,
            0o644,
            (0, 0),
            1_000_000_000,
            None,
            b"root",
        )
        .entry(
            "etc/abs",
            E::Symlink,
            0o777,
            (0, 0),
            5,
            Some("/etc/passwd"),
            b"",
        )
        .entry("escape", E::Symlink, 0o777, (0, 0), 5, Some("/"), b"")
        .entry(
            "home/user/",
            E::Directory,
            0o700,
            (1000, 1000),
            1_100_000_000,
            None,
            b"",
        )
        .entry(
            "data/file",
            E::Regular,
            0o640,
            (1234, 1234),
            1_000_000_000,
            None,
            b"data",
        )
        .entry("run/fifo", E::Fifo, 0o620, (0, 0), 1_000_000_000, None, b"");
    t.finish()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn the_registry_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Registry>();
}

#[test]
fn names_follow_the_rule() {
    for ok in [
        "a",
        "Z",
        "9lives",
        "my-template_1.0",
        "a..b",
        "a-",
        &"x".repeat(64),
    ] {
        Registry::validate_name(ok).unwrap();
    }
    for (bad, why) in [
        ("", "it is empty"),
        (".hidden", "starts with `.`"),
        ("..", "starts with `.`"),
        ("-rf", "starts with `-`"),
        ("a/b", "'/'"),
        ("a b", "' '"),
        ("caf\u{e9}", "'\u{e9}'"),
        ("a\0b", "'\\0'"),
        (&"x".repeat(65), "65 bytes long"),
    ] {
        match Registry::validate_name(bad) {
            Err(TemplateError::InvalidName(m)) => {
                assert!(m.contains(why), "{bad:?}: {m}");
                assert!(m.contains("1 to 64 characters of A-Z a-z 0-9 . _ -"), "{m}");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn manifests_round_trip_and_only_name_layer_directories() {
    let env = Env::new();
    fs::create_dir_all(&env.templates).unwrap();
    let id = "0123456789abcdef-rt";
    let layer = env.layers.join(id);
    fs::create_dir_all(layer.join("root")).unwrap();
    fs::create_dir_all(layer.join("usr")).unwrap();
    let t = Template {
        name: "rt".into(),
        layers: vec![
            Layer {
                id: id.into(),
                root: layer.join("root"),
                usr: layer.join("usr"),
            },
            Layer {
                id: "base-v1".into(),
                root: env.layers.join("base-v1/root"),
                usr: "/usr".into(),
            },
        ],
        defaults: TemplateDefaults {
            memory_mb: Some(512),
            cpu_count: Some(1.5),
            timeout_s: Some(60),
            env_vars: [("A".to_owned(), "b".to_owned())].into(),
            start_command: Some("python3 -m http.server".into()),
            metadata: [("team".to_owned(), "q".to_owned())].into(),
            category: Some("research".into()),
        },
        source: "export of sandbox abc (template base)".into(),
        builtin: false,
        created_at_ms: 1_700_000_000_123,
        size_bytes: 42,
        files_count: 7,
    };
    fs::create_dir_all(env.layers.join("base-v1/root")).unwrap();
    write_manifest(&env.templates, &t).unwrap();
    let path = env.templates.join("rt.json");
    assert_eq!(read_manifest(&path, &env.layers).unwrap(), t);
    assert_eq!(
        fs::read_dir(&env.templates).unwrap().count(),
        1,
        "no temporary file left"
    );

    // Paths are recomputed from ids: a manifest cannot point a layer anywhere else, and
    // cannot make itself built in.
    let mut evil = t.clone();
    evil.layers[0].root = "/etc".into();
    evil.layers[0].usr = "/".into();
    evil.builtin = true;
    write_manifest(&env.templates, &evil).unwrap();
    assert_eq!(read_manifest(&path, &env.layers).unwrap(), t);

    // A missing layer, an id with a slash, a name that is not the file's: refused.
    let mut missing = t.clone();
    missing.layers[0].id = "ffffffffffffffff-gone".into();
    write_manifest(&env.templates, &missing).unwrap();
    assert!(
        read_manifest(&path, &env.layers)
            .unwrap_err()
            .contains("missing")
    );
    let mut escape = t.clone();
    escape.layers[0].id = "../../etc".into();
    write_manifest(&env.templates, &escape).unwrap();
    assert!(
        read_manifest(&path, &env.layers)
            .unwrap_err()
            .contains("layer id")
    );
    fs::copy(&path, env.templates.join("other.json")).unwrap();
    assert!(
        read_manifest(&env.templates.join("other.json"), &env.layers)
            .unwrap_err()
            .contains("not `other`")
    );
    fs::write(&path, "{not json").unwrap();
    assert!(read_manifest(&path, &env.layers).is_err());
}

#[test]
fn builtins_are_base_and_python_when_python_works() {
    let env = Env::new();
    let reg = env.open();
    let base = reg.get("base").unwrap();
    assert!(base.builtin);
    assert_eq!(base.source, "built in: the host's userland");
    assert_eq!(base.usr_layers(), vec![PathBuf::from("/usr")]);
    assert_eq!(base.root_layers(), vec![env.layers.join("base-v1/root")]);
    if base::check_python(Path::new("/usr/bin/python3")).is_ok() {
        let py = reg.get("python").unwrap();
        assert!(py.builtin);
        assert_eq!(py.layers, base.layers);
        assert_eq!(reg.names(), ["base", "python"]);
    } else {
        eprintln!("this host's /usr/bin/python3 does not work: `python` checked absent only");
        assert!(reg.get("python").is_none());
    }
    drop(reg);
    // A Python that does not work: no `python`, the rest as usual.
    let reg = Registry::open_with_python(
        &env.templates,
        &env.layers,
        owner(),
        Path::new("/nonexistent/python3"),
    )
    .unwrap();
    assert!(reg.get("python").is_none());
    assert_eq!(reg.names(), ["base"]);
    // Their names are taken.
    let src = env.path("rootfs");
    make_rootfs_dir(&src);
    for name in ["base", "python"] {
        let e = reg
            .import(name, &src, TemplateDefaults::default(), &quiet)
            .unwrap_err();
        assert!(
            matches!(e, TemplateError::Exists(_) | TemplateError::InvalidName(_)),
            "{e}"
        );
    }
}

#[test]
fn import_from_a_directory_keeps_everything() {
    let env = Env::new();
    let reg = env.open();
    let src = env.path("rootfs");
    make_rootfs_dir(&src);
    let defaults = TemplateDefaults {
        memory_mb: Some(256),
        ..Default::default()
    };
    let t = reg
        .import("fromdir", &src, defaults.clone(), &quiet)
        .unwrap();
    assert_eq!(t.source, format!("import of {}", src.display()));
    assert_eq!(t.defaults, defaults);
    assert!(!t.builtin);
    check_rootfs(&t);
    assert_eq!(reg.get("fromdir"), Some(t.clone()));
    assert!(env.templates.join("fromdir.json").is_file());
    // The source is untouched (nothing was followed through `escape`).
    assert!(!src.join("usr").exists());
    // Taken names are refused.
    let e = reg
        .import("fromdir", &src, TemplateDefaults::default(), &quiet)
        .unwrap_err();
    assert!(
        matches!(e, TemplateError::Exists(ref n) if n == "fromdir"),
        "{e}"
    );
}

#[test]
fn import_from_tar_and_gzip_detected_by_magic_bytes() {
    let env = Env::new();
    let reg = env.open();
    let plain = rootfs_tar();
    // Names that say nothing: the magic bytes decide.
    let tar_path = env.path("rootfs.img");
    fs::write(&tar_path, &plain).unwrap();
    let gz_path = env.path("rootfs.bin");
    fs::write(&gz_path, gzip(&plain)).unwrap();
    let tgz_path = env.path("rootfs.tgz");
    fs::write(&tgz_path, gzip(&plain)).unwrap();
    for (name, p) in [("tar", &tar_path), ("gz", &gz_path), ("tgz", &tgz_path)] {
        let t = reg
            .import(name, p, TemplateDefaults::default(), &quiet)
            .unwrap();
        check_rootfs(&t);
        assert_eq!(
            fs::read_to_string(t.layers[0].root.join("etc/passwd")).unwrap(),
            "root"
        );
    }
    // Not an archive at all.
    let junk = env.path("junk.tar.gz");
    fs::write(&junk, "hello").unwrap();
    let e = reg
        .import("junk", &junk, TemplateDefaults::default(), &quiet)
        .unwrap_err();
    assert!(
        matches!(e, TemplateError::BadSource(ref m) if m.contains("neither")),
        "{e}"
    );
}

#[test]
fn registry_reopen_sees_imported_templates_and_skips_corrupt_manifests() {
    let env = Env::new();
    let reg = env.open();
    let src = env.path("rootfs");
    make_rootfs_dir(&src);
    let t = reg
        .import("kept", &src, TemplateDefaults::default(), &quiet)
        .unwrap();
    drop(reg);
    fs::write(env.templates.join("broken.json"), "{\"format\": 1, \"templ").unwrap();
    let reg = env.open();
    assert_eq!(reg.get("kept"), Some(t.clone()));
    assert!(reg.get("broken").is_none());
    assert!(reg.names().contains(&"kept".to_owned()));
    let list = reg.list();
    let names: Vec<_> = list.iter().map(|t| t.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "list is sorted by name");
    // The corrupt manifest stays for someone to repair.
    assert!(env.templates.join("broken.json").exists());
    assert!(t.layers[0].root.is_dir());
}

#[test]
fn open_removes_leftovers_and_unused_layers_but_never_base() {
    let env = Env::new();
    let reg = env.open();
    drop(reg);
    for d in [
        ".tmp-0123456789abcdef-x",
        "0123456789abcdef-orphan",
        "0123456789abcdef-mentioned",
        "base-v0",
    ] {
        fs::create_dir_all(env.layers.join(d).join("root")).unwrap();
    }
    fs::write(env.templates.join(".tmp-x.json"), "{").unwrap();
    // A manifest that cannot be loaded keeps the layers it mentions.
    fs::write(
        env.templates.join("broken.json"),
        "{\"layers\":[{\"id\":\"0123456789abcdef-mentioned\",",
    )
    .unwrap();
    let _reg = env.open();
    let left = env.listing();
    assert!(left.contains("0123456789abcdef-mentioned"), "{left:?}");
    assert!(
        left.contains("base-v0") && left.contains("base-v1"),
        "{left:?}"
    );
    assert!(
        !left
            .iter()
            .any(|n| n.contains("tmp") || n.contains("orphan")),
        "{left:?}"
    );
}

#[test]
fn delete_rules() {
    let env = Env::new();
    let reg = env.open();
    let src = env.path("rootfs");
    make_rootfs_dir(&src);
    let parent = reg
        .import("parent", &src, TemplateDefaults::default(), &quiet)
        .unwrap();
    let (up_root, up_usr) = (env.path("up/root"), env.path("up/usr"));
    write(&up_root.join("new"), "n", 0o644);
    dir(&up_usr, 0o755);
    let child = reg
        .add_layer(
            "child",
            &parent,
            &up_root,
            &up_usr,
            &CopyOptions::default(),
            TemplateDefaults::default(),
            "export of sandbox s1 (template parent)".into(),
            &quiet,
        )
        .unwrap();
    assert_eq!(child.layers.len(), 2);
    assert_eq!(child.layers[1], parent.layers[0]);
    assert_eq!(
        child.layers[0].usr,
        env.layers.join(&child.layers[0].id).join("usr")
    );
    let unused = |_: &str| false;

    // Built-in: never, whatever in_use says.
    assert!(matches!(
        reg.delete("base", &unused),
        Err(TemplateError::Builtin(_))
    ));
    assert!(reg.get("base").is_some());
    // Unknown.
    assert!(matches!(
        reg.delete("nope", &unused),
        Err(TemplateError::NotFound(_))
    ));
    // In use: refused, nothing removed.
    let before = env.listing();
    let asked = Mutex::new(Vec::new());
    let in_use = |n: &str| {
        asked.lock().unwrap().push(n.to_owned());
        true
    };
    assert!(
        matches!(reg.delete("child", &in_use), Err(TemplateError::InUse(ref n)) if n == "child")
    );
    assert_eq!(asked.into_inner().unwrap(), ["child"]);
    assert_eq!(env.listing(), before);
    // The parent goes, but its layer stays: the child uses it.
    reg.delete("parent", &unused).unwrap();
    assert!(reg.get("parent").is_none());
    assert!(!env.templates.join("parent.json").exists());
    assert!(parent.layers[0].root.is_dir());
    assert!(reg.get("child").is_some());
    // It stays after a reopen too.
    drop(reg);
    let reg = env.open();
    assert!(parent.layers[0].root.is_dir());
    // The child goes: both layers go, base's stays.
    reg.delete("child", &unused).unwrap();
    assert!(!env.layers.join(&child.layers[0].id).exists());
    assert!(!env.layers.join(&parent.layers[0].id).exists());
    assert_eq!(
        env.listing(),
        BTreeSet::from(["base-v1".to_owned()]),
        "only base's layer is left"
    );
    assert!(Path::new("/usr/bin").is_dir());
    // A template on base: deleting it leaves base's layer.
    let base = reg.get("base").unwrap();
    let on_base = reg
        .add_layer(
            "onbase",
            &base,
            &up_root,
            &up_usr,
            &CopyOptions::default(),
            TemplateDefaults::default(),
            "export".into(),
            &quiet,
        )
        .unwrap();
    assert_eq!(on_base.usr_layers()[1], PathBuf::from("/usr"));
    reg.delete("onbase", &unused).unwrap();
    assert_eq!(env.listing(), BTreeSet::from(["base-v1".to_owned()]));
    assert!(base.layers[0].root.join("etc/passwd").is_file());
    // A parent that is gone is refused.
    let e = reg
        .add_layer(
            "orphan",
            &parent,
            &up_root,
            &up_usr,
            &CopyOptions::default(),
            TemplateDefaults::default(),
            "export".into(),
            &quiet,
        )
        .unwrap_err();
    assert!(
        matches!(e, TemplateError::NotFound(ref n) if n == "parent"),
        "{e}"
    );
    assert_eq!(env.listing(), BTreeSet::from(["base-v1".to_owned()]));
}

#[test]
fn a_failed_import_leaves_nothing() {
    let env = Env::new();
    let reg = env.open();
    let before = env.listing();
    // No /bin/sh.
    let src = env.path("notroot");
    write(&src.join("etc/passwd"), "x", 0o644);
    let e = reg
        .import("notroot", &src, TemplateDefaults::default(), &quiet)
        .unwrap_err();
    assert!(
        matches!(e, TemplateError::BadSource(ref m) if m.contains("has no /bin/sh: not a root filesystem")),
        "{e}"
    );
    // /bin/sh as a link to the host's shell: resolved inside the tree, so still none.
    dir(&src.join("bin"), 0o755);
    symlink("/usr/bin/dash", src.join("bin/sh")).unwrap();
    let e = reg
        .import("notroot", &src, TemplateDefaults::default(), &quiet)
        .unwrap_err();
    assert!(matches!(e, TemplateError::BadSource(_)), "{e}");
    // `usr` as a link: init would mount what it points at on the host.
    let mut t = TarBuilder::new();
    t.dir("bin/")
        .file("bin/sh")
        .link("usr", EntryType::Symlink, "/");
    let p = env.path("usrlink.tar");
    fs::write(&p, t.finish()).unwrap();
    let e = reg
        .import("usrlink", &p, TemplateDefaults::default(), &quiet)
        .unwrap_err();
    assert!(
        matches!(e, TemplateError::BadSource(ref m) if m.contains("/usr is not a directory")),
        "{e}"
    );
    // A truncated archive.
    let whole = rootfs_tar();
    let p = env.path("cut.tar");
    fs::write(&p, &whole[..1536 + 100]).unwrap();
    let e = reg
        .import("cut", &p, TemplateDefaults::default(), &quiet)
        .unwrap_err();
    assert!(matches!(e, TemplateError::BadSource(_)), "{e}");
    assert_eq!(env.listing(), before);
    assert!(reg.get("notroot").is_none() && reg.get("usrlink").is_none());
}

#[test]
fn unsafe_archives_are_refused_whole() {
    use EntryType as E;
    let env = Env::new();
    let reg = env.open();
    let before = env.listing();
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    let outside_s = outside.display().to_string();
    type Build<'a> = Box<dyn Fn(&mut TarBuilder) + 'a>;
    let cases: Vec<(&str, Build, &str, &str)> = vec![
        (
            "absolute",
            Box::new(|t| {
                t.file("/etc/evil");
            }),
            "/etc/evil",
            "absolute path",
        ),
        (
            "dotdot",
            Box::new(|t| {
                t.file("a/../../evil");
            }),
            "a/../../evil",
            "`..` in its path",
        ),
        (
            "dotdot-dir",
            Box::new(|t| {
                t.dir("../up/");
            }),
            "../up/",
            "`..` in its path",
        ),
        (
            "chardev",
            Box::new(|t| {
                t.device("dev/null", E::Char, 1, 3);
            }),
            "dev/null",
            "a character device (1:3)",
        ),
        (
            "blockdev",
            Box::new(|t| {
                t.device("dev/sda", E::Block, 8, 0);
            }),
            "dev/sda",
            "a block device (8:0)",
        ),
        (
            "whiteout",
            Box::new(|t| {
                t.device("bin/gone", E::Char, 0, 0);
            }),
            "bin/gone",
            "a whiteout",
        ),
        (
            "hardlink-absolute",
            Box::new(|t| {
                t.link("h", E::Link, "/etc/shadow");
            }),
            "h",
            "hard link to the absolute path `/etc/shadow`",
        ),
        (
            "hardlink-dotdot",
            Box::new(|t| {
                t.link("h", E::Link, "bin/../../shadow");
            }),
            "h",
            "which has `..`",
        ),
        (
            "hardlink-forward",
            Box::new(|t| {
                t.link("h", E::Link, "later").file("later");
            }),
            "h",
            "which the archive did not extract before",
        ),
        (
            "hardlink-dir",
            Box::new(|t| {
                t.link("h", E::Link, "bin");
            }),
            "h",
            "hard link to the directory",
        ),
        (
            "symlink-climbs",
            Box::new(|t| {
                t.link("bin/up", E::Symlink, "../../etc");
            }),
            "bin/up",
            "climbs above the root",
        ),
        (
            "write-through-absolute-symlink",
            Box::new(|t| {
                t.link("s", E::Symlink, &outside_s).file("s/pwned");
            }),
            "s/pwned",
            "its parent `s` is a symbolic link extracted earlier",
        ),
        (
            "write-through-relative-symlink",
            Box::new(|t| {
                t.dir("usr/lib/")
                    .link("lib", E::Symlink, "usr/lib")
                    .dir("lib/x/");
            }),
            "lib/x/",
            "its parent `lib` is a symbolic link extracted earlier",
        ),
        (
            "duplicate-file-then-dir",
            Box::new(|t| {
                t.file("x").dir("x/");
            }),
            "x/",
            "a second entry for this path of another type (a directory after a file)",
        ),
        (
            "duplicate-symlink-then-file",
            Box::new(|t| {
                t.link("y", E::Symlink, "/etc/passwd").file("y");
            }),
            "y",
            "(a file after a symbolic link)",
        ),
    ];
    for (name, build, entry, reason) in &cases {
        let mut t = TarBuilder::new();
        // A valid start: the refusal must undo nothing, because nothing was written.
        t.dir("bin/").file("bin/sh").file("etc/passwd");
        build(&mut t);
        let data = t.finish();
        for gz in [false, true] {
            let p = env.path(&format!("{name}.tar{}", if gz { ".gz" } else { "" }));
            fs::write(&p, if gz { gzip(&data) } else { data.clone() }).unwrap();
            match reg.import(name, &p, TemplateDefaults::default(), &quiet) {
                Err(TemplateError::UnsafeArchive {
                    entry: e,
                    reason: r,
                }) => {
                    assert_eq!(&e, entry, "{name}");
                    assert!(r.contains(reason), "{name}: {r}");
                }
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(env.listing(), before, "{name}: something was written");
            assert!(reg.get(name).is_none());
        }
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // The error names the entry and the reason.
    let mut t = TarBuilder::new();
    t.dir("bin/").file("bin/sh").file("/abs");
    let p = env.path("msg.tar");
    fs::write(&p, t.finish()).unwrap();
    let msg = reg
        .import("msg", &p, TemplateDefaults::default(), &quiet)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "unsafe archive entry `/abs`: absolute path; nothing was imported"
    );
    // Fine on their own: absolute symlink targets, `..` that stays inside, `./`.
    let mut t = TarBuilder::new();
    t.dir("./")
        .dir("./bin/")
        .file("bin/sh")
        .link("bin/python", E::Symlink, "/usr/bin/python3")
        .link("usr/lib/x", E::Symlink, "../../etc/passwd")
        .file("etc/passwd");
    let p = env.path("fine.tar");
    fs::write(&p, t.finish()).unwrap();
    reg.import("fine", &p, TemplateDefaults::default(), &quiet)
        .unwrap();
}

/// Runs `script` with `sh` in a private mount namespace (and, `rootless`, a user
/// namespace of its own, as unprivileged overlayfs needs); its stdout, or `Err` with its
/// stderr.
fn in_mount_ns(script: &str, rootless: bool) -> Result<String, String> {
    let ns = if rootless && !is_root() { "-Urm" } else { "-m" };
    let out = Command::new("unshare")
        .args([ns, "--propagation", "private", "sh", "-ec", script])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout).unwrap())
}

/// A sandbox's life in miniature: a parent template, an overlay over its layer changed
/// through the mount, `add_layer` from the upper directory, then the new layer stacked
/// over the parent's under a fresh overlay, which must show exactly what the sandbox
/// saw. `rootless`: the registry is rootless and overlayfs keeps its attributes in
/// `user.overlay.*` (`userxattr`), as without root.
fn overlay_round_trip(rootless: bool) {
    let env = Env::new();
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let owner = rootless.then_some(me);
    let reg = Registry::open(&env.templates, &env.layers, owner).unwrap();
    let (ns_opt, opaque_attr) = if rootless {
        (",userxattr", "user.overlay.opaque")
    } else {
        ("", "trusted.overlay.opaque")
    };
    // The parent: a, b, d/{x,y}.
    let lower = env.path("lower");
    write(&lower.join("bin/sh"), "sh", 0o755);
    for f in ["a", "b", "d/x", "d/y", "home/user/old", "home/other/o"] {
        write(&lower.join(f), f, 0o644);
    }
    let parent = reg
        .import("parent", &lower, TemplateDefaults::default(), &quiet)
        .unwrap();
    let pl = &parent.layers[0].root;
    // A "sandbox": an overlay on the parent's layer, changed through the mount.
    let (u, w, m) = (env.path("u"), env.path("w"), env.path("m"));
    for d in [&u, &w, &m] {
        fs::create_dir(d).unwrap();
    }
    let chowns = if rootless {
        String::new()
    } else {
        format!(
            "chown 1001000:1001234 {m}/owned
             chown 1000000:1000000 {m}/rootfile",
            m = m.display()
        )
    };
    let script = format!(
        "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={}{ns_opt} {m}
         rm {m}/a
         rm -r {m}/d
         mkdir {m}/d
         echo new > {m}/d/z
         echo c > {m}/c
         echo secret > {m}/home/user/s
         echo o2 > {m}/home/other/o2
         echo owned > {m}/owned
         echo r > {m}/rootfile
         {chowns}",
        pl.display(),
        u.display(),
        w.display(),
        m = m.display()
    );
    if let Err(e) = in_mount_ns(&script, rootless) {
        if rootless && !is_root() {
            eprintln!("skipped: this host allows no unprivileged overlay mount: {e}");
            return;
        }
        panic!("{script}: {e}");
    }
    // The upper directory really has what this test is about.
    let wh = u.join("a").symlink_metadata().unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr::get(u.join("d"), opaque_attr).unwrap().as_deref(),
        Some(&b"y"[..])
    );
    let u_usr = env.path("u-usr");
    dir(&u_usr, 0o755);
    write(&u_usr.join("lib/added"), "usr", 0o644);
    let opts = CopyOptions {
        uid_shift: 1_000_000,
        exclude: vec!["home/user".into()],
    };
    let child = reg
        .add_layer(
            "child",
            &parent,
            &u,
            &u_usr,
            &opts,
            TemplateDefaults::default(),
            "export of sandbox s (template parent)".into(),
            &quiet,
        )
        .unwrap();
    let cl = &child.layers[0].root;
    assert_eq!(child.layers[1..], parent.layers[..]);
    // The whiteout and the opaque directory as such.
    let wh = cl.join("a").symlink_metadata().unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr::get(cl.join("d"), opaque_attr).unwrap().as_deref(),
        Some(&b"y"[..])
    );
    // Owners shifted to canonical ids (rootless: ours); excluded home; the usr part.
    let meta = |p: &str| cl.join(p).symlink_metadata().unwrap();
    let ids = |p: &str| (meta(p).uid(), meta(p).gid());
    if rootless {
        assert_eq!(ids("owned"), me);
    } else {
        assert_eq!(ids("owned"), (1000, 1234));
        assert_eq!(ids("rootfile"), (0, 0));
        // Written by host root: no canonical id, so nobody.
        assert_eq!(ids("c"), (65534, 65534));
    }
    assert!(!cl.join("home/user").exists(), "excluded");
    assert!(cl.join("home/other/o2").is_file());
    assert_eq!(
        fs::read_to_string(child.layers[0].usr.join("lib/added")).unwrap(),
        "usr"
    );
    // As a lower layer under a new overlay: a gone, b there, d only z, c there.
    let m2 = env.path("m2");
    fs::create_dir(&m2).unwrap();
    let out = in_mount_ns(
        &format!(
            "mount -t overlay overlay -o lowerdir={}:{}{ns_opt} {m}
             ls -A {m}; echo ---; ls -A {m}/d; echo ---; ls -A {m}/home/user; echo ---; cat {m}/d/z",
            cl.display(),
            pl.display(),
            m = m2.display()
        ),
        rootless,
    )
    .unwrap();
    let parts: Vec<Vec<&str>> = out
        .split("---")
        .map(|p| p.split_whitespace().collect())
        .collect();
    let top = &parts[0];
    assert!(!top.contains(&"a"), "the whiteout hides a: {top:?}");
    for f in ["b", "c", "d", "owned", "bin"] {
        assert!(top.contains(&f), "{f} in {top:?}");
    }
    assert_eq!(parts[1], ["z"], "opaque d hides x and y");
    assert_eq!(parts[2], ["old"], "the excluded home shows the parent's");
    assert_eq!(parts[3], ["new"]);
}

#[test]
fn an_exported_layer_keeps_whiteouts_and_opaque_directories_under_a_real_overlay() {
    if !is_root() {
        eprintln!("skipped: overlayfs with trusted.* attributes and chown to host ids need root");
        return;
    }
    overlay_round_trip(false);
}

#[test]
fn a_rootless_exported_layer_keeps_user_overlay_attributes() {
    overlay_round_trip(true);
}

#[test]
fn add_layer_refuses_devices_and_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: making a device node needs root");
        return;
    }
    let env = Env::new();
    let reg = env.open();
    let before = env.listing();
    let (up, usr) = (env.path("up"), env.path("usr"));
    dir(&usr, 0o755);
    write(&up.join("some/file"), "x", 0o644);
    nix::sys::stat::mknod(
        &up.join("some/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let base = reg.get("base").unwrap();
    let e = reg
        .add_layer(
            "dev",
            &base,
            &up,
            &usr,
            &CopyOptions::default(),
            TemplateDefaults::default(),
            "export".into(),
            &quiet,
        )
        .unwrap_err();
    assert!(
        matches!(e, TemplateError::BadSource(ref m) if m.contains("device node (1:3)")),
        "{e}"
    );
    assert_eq!(env.listing(), before);
    assert!(reg.get("dev").is_none());
}

#[test]
fn progress_is_reported_during_a_large_copy_and_totals_are_right() {
    let env = Env::new();
    let reg = env.open();
    let (up, usr) = (env.path("up"), env.path("usr"));
    dir(&usr, 0o755);
    let big = 40 << 20;
    let files = 2500u64;
    for i in 0..files {
        write(
            &up.join(format!("many/{}/{i}", i % 10)),
            "0123456789",
            0o644,
        );
    }
    write(&up.join("big"), &"x".repeat(big), 0o644);
    write(&usr.join("lib/one"), "1", 0o644);
    let entries = files + 10 + 1 + 1 + 1 + 1; // files, 10 dirs, many, big, lib, lib/one
    let bytes = files * 10 + big as u64 + 1;
    let seen = Mutex::new(Vec::new());
    let cb = |s: CopyStats| seen.lock().unwrap().push(s);
    let base = reg.get("base").unwrap();
    let t = reg
        .add_layer(
            "big",
            &base,
            &up,
            &usr,
            &CopyOptions::default(),
            TemplateDefaults::default(),
            "export".into(),
            &cb,
        )
        .unwrap();
    assert_eq!((t.size_bytes, t.files_count), (bytes, entries));
    let seen = seen.into_inner().unwrap();
    // At least every 1000 files and every 16 MiB (the big file alone gives two).
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(
        seen.windows(2)
            .all(|w| w[0].bytes <= w[1].bytes && w[0].files <= w[1].files)
    );
    assert_eq!(
        *seen.last().unwrap(),
        CopyStats {
            bytes,
            files: entries
        }
    );
    assert_eq!(
        fs::metadata(t.layers[0].root.join("big")).unwrap().len(),
        big as u64
    );
}
