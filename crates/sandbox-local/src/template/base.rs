//! The built-in `base` template: the host's own userland. Its usr part is the host's
//! `/usr` itself (mounted read-only and idmapped, as the lowest `/usr` layer); its root
//! part is a small layer written here, holding the merged-/usr links, the minimum of
//! `/etc` and the sandbox user's home. The root part is versioned (`base-vN` under the
//! layers directory) and written under a temporary name, then renamed into place, so a
//! crash never leaves a half-built layer in use. Also the check that decides whether the
//! built-in `python` template is offered.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, UNIX_EPOCH};

use super::{
    BASE, BUILTIN_SOURCE, Layer, TMP_PREFIX, Template, TemplateDefaults, TemplateError, USER_HOME,
    USER_NAME, USER_UID, io_err, remove_tree,
};

/// Bumped whenever what `build_base` writes changes; an older layer is rebuilt under the
/// new id (and the old one kept: sandboxes and templates made before may use it).
const BASE_VERSION: u32 = 1;

/// How long the Python check may take.
const PYTHON_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The id of the current `base` root layer.
pub(super) fn base_layer_id() -> String {
    format!("{BASE}-v{BASE_VERSION}")
}

/// Whether `id` is one of `base`'s layers (`base-vN`, any version): their usr part is
/// the host's `/usr`, and they are never removed. No other layer id has this form (they
/// start with 16 hex digits).
pub(super) fn is_base_layer_id(id: &str) -> bool {
    id.strip_prefix("base-v")
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
}

/// The `base` template, building its root layer in `layers_dir` when the current version
/// is missing.
pub(super) fn ensure(
    layers_dir: &Path,
    owner: Option<(u32, u32)>,
) -> Result<Template, TemplateError> {
    let id = base_layer_id();
    let dir = layers_dir.join(&id);
    if !dir.join("root").is_dir() {
        build_base(layers_dir, &dir, owner)?;
    }
    let root = dir.join("root");
    let (size_bytes, files_count) = measure(&root).map_err(io_err(&root))?;
    let created_at_ms = fs::metadata(&dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    Ok(Template {
        name: BASE.into(),
        layers: vec![Layer {
            id,
            root,
            usr: PathBuf::from("/usr"),
        }],
        defaults: TemplateDefaults::default(),
        source: BUILTIN_SOURCE.into(),
        builtin: true,
        created_at_ms,
        size_bytes,
        files_count,
    })
}

/// Bytes of regular files and number of entries under `dir` (not following links).
fn measure(dir: &Path) -> io::Result<(u64, u64)> {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let m = e.metadata()?;
            files += 1;
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                bytes += m.len();
            }
        }
    }
    Ok((bytes, files))
}

/// Runs `python -c "import sys, json, sqlite3, ssl"` with an empty environment, from
/// `/` (so that nothing in a working directory is imported); `Err` says why it failed.
pub(super) fn check_python(python: &Path) -> Result<(), String> {
    let child = Command::new(python)
        .args(["-c", "import sys, json, sqlite3, ssl"])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(PYTHON_CHECK_TIMEOUT) {
        Ok(out) => out.map_err(|e| e.to_string())?,
        Err(_) => {
            // Not reaped yet (the waiting thread does that), so the pid is still ours.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(format!(
                "it did not finish within {} s",
                PYTHON_CHECK_TIMEOUT.as_secs()
            ));
        }
    };
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("").trim();
    Err(format!("{}: {last}", out.status))
}

/// Writes the base root layer into a scratch directory, then renames it into place.
fn build_base(
    layers_dir: &Path,
    layer: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), TemplateError> {
    for d in ["bin", "sbin", "lib"] {
        let p = Path::new("/").join(d);
        if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            return Err(TemplateError::NotMergedUsr(p.display().to_string()));
        }
    }
    let scratch = layers_dir.join(format!(
        "{TMP_PREFIX}{}-{}",
        base_layer_id(),
        std::process::id()
    ));
    remove_tree(&scratch)?;
    let rootfs = scratch.join("root");
    let built = (|| {
        fs::create_dir_all(&rootfs).map_err(io_err(&rootfs))?;
        write_rootfs(&rootfs, owner.is_none()).map_err(io_err(&rootfs))?;
        if let Some((uid, gid)) = owner {
            chown_tree(&rootfs, uid, gid).map_err(io_err(&rootfs))?;
        }
        remove_tree(layer)?;
        fs::rename(&scratch, layer).map_err(io_err(layer))
    })();
    if built.is_err() {
        let _ = remove_tree(&scratch);
    }
    built
}

fn mkdir(p: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

/// Writes the root layer. As root, files belong to root and the home to the sandbox user
/// (uid 1000, shifted by the idmapped mount); rootless, `chown_tree` later gives
/// everything to the one user we have, so no chown happens here.
fn write_rootfs(r: &Path, as_root: bool) -> io::Result<()> {
    fs::set_permissions(r, fs::Permissions::from_mode(0o755))?;
    for d in [
        "usr",
        "etc",
        "home",
        "proc",
        "dev",
        "sys",
        "run",
        "mnt",
        "opt",
        "srv",
        "media",
        "var/lib",
        "var/cache",
        "var/log",
    ] {
        mkdir(&r.join(d), 0o755)?;
    }
    mkdir(&r.join("root"), 0o700)?;
    mkdir(&r.join("tmp"), 0o1777)?;
    mkdir(&r.join("var/tmp"), 0o1777)?;
    let home = r.join(USER_HOME.trim_start_matches('/'));
    mkdir(&home, 0o755)?;
    let give_to_user = |p: &Path| {
        if as_root {
            std::os::unix::fs::chown(p, Some(USER_UID), Some(USER_UID))
        } else {
            Ok(())
        }
    };
    give_to_user(&home)?;
    // Merged /usr: the top-level directories are links into /usr.
    for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(d);
        if let Ok(target) = fs::read_link(&host) {
            symlink(target, r.join(d))?;
        }
    }
    symlink("../run", r.join("var/run"))?;
    let etc = r.join("etc");
    fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/bash\n{USER_NAME}:x:{USER_UID}:{USER_UID}:{USER_NAME}:{USER_HOME}:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
    )?;
    fs::write(
        etc.join("group"),
        format!(
            "root:x:0:\ntty:x:5:\nusers:x:100:{USER_NAME}\n{USER_NAME}:x:{USER_UID}:\nnogroup:x:65534:\n"
        ),
    )?;
    fs::write(
        etc.join("hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    fs::write(etc.join("hostname"), "sandbox\n")?;
    // resolv.conf is often a link into /run: copy what it says, not the link.
    match fs::read("/etc/resolv.conf") {
        Ok(c) => fs::write(etc.join("resolv.conf"), c)?,
        Err(_) => fs::write(etc.join("resolv.conf"), "")?,
    }
    for name in [
        "ld.so.cache",
        "ld.so.conf",
        "ld.so.conf.d",
        "nsswitch.conf",
        "ssl",
        "ca-certificates.conf",
        "alternatives",
        "localtime",
        "timezone",
        "profile",
        "profile.d",
        "bash.bashrc",
        "skel",
        "debian_version",
        "os-release",
        "inputrc",
        "shells",
        "mime.types",
        "gai.conf",
        "protocols",
        "services",
        "host.conf",
        "environment",
        "login.defs",
        "python3",
        "python3.11",
        "python3.12",
        "python3.13",
        "magic",
        "magic.mime",
        "xdg",
        "lsb-release",
        "issue",
    ] {
        let src = Path::new("/etc").join(name);
        if src.symlink_metadata().is_ok() {
            copy_tree(&src, &etc.join(name))?;
        }
    }
    // The sandbox user's shell start-up files.
    let skel = Path::new("/etc/skel");
    if skel.is_dir() {
        for f in fs::read_dir(skel)? {
            let f = f?;
            if f.file_type()?.is_file() {
                let dst = r
                    .join(USER_HOME.trim_start_matches('/'))
                    .join(f.file_name());
                fs::copy(f.path(), &dst)?;
                give_to_user(&dst)?;
            }
        }
    }
    Ok(())
}

/// Copies files, directories and links (as links); skips sockets, fifos and devices,
/// the host's private keys, and what this user may not read (rootless).
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    if src == Path::new("/etc/ssl/private") {
        return Ok(());
    }
    let meta = src.symlink_metadata()?;
    let ft = meta.file_type();
    let unreadable = |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied;
    if ft.is_symlink() {
        symlink(fs::read_link(src)?, dst)?;
    } else if ft.is_dir() {
        let entries = match fs::read_dir(src) {
            Ok(rd) => rd,
            Err(e) if unreadable(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        mkdir(dst, meta.mode() & 0o7777)?;
        for e in entries {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
    } else if ft.is_file() {
        match fs::copy(src, dst) {
            Ok(_) => fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?,
            Err(e) if unreadable(&e) => {
                let _ = fs::remove_file(dst);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Rootless: the layer belongs to the only user we have.
fn chown_tree(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    if p.symlink_metadata()?.is_dir() {
        for e in fs::read_dir(p)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Option<(u32, u32)> {
        let euid = nix::unistd::geteuid();
        (!euid.is_root()).then(|| (euid.as_raw(), nix::unistd::getegid().as_raw()))
    }

    #[test]
    fn base_layer_has_the_user_the_links_and_no_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let owner = owner();
        let base = ensure(dir.path(), owner).unwrap();
        assert_eq!(base.layers.len(), 1);
        let r = &base.layers[0].root;
        assert_eq!(r, &dir.path().join("base-v1/root"));
        let passwd = fs::read_to_string(r.join("etc/passwd")).unwrap();
        assert!(passwd.contains("user:x:1000:1000:user:/home/user:/bin/bash"));
        assert_eq!(
            fs::read_link(r.join("bin")).unwrap(),
            fs::read_link("/bin").unwrap()
        );
        let home_uid = fs::metadata(r.join("home/user")).unwrap().uid();
        assert_eq!(home_uid, owner.map_or(1000, |o| o.0));
        assert_eq!(fs::metadata(r.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
        assert!(!r.join("etc/ssl/private").exists());
        assert!(!r.join("etc/shadow").exists());
        assert_eq!(base.usr_layers(), vec![PathBuf::from("/usr")]);
        assert!(base.builtin && base.files_count > 10 && base.size_bytes > 100);
        // Nothing but the finished layer is left in the layers directory.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["base-v1"]);
        // A second open reuses the finished layer.
        let marker = r.join("etc/marker");
        fs::write(&marker, "x").unwrap();
        ensure(dir.path(), owner).unwrap();
        assert!(marker.exists());
    }

    #[test]
    fn base_layer_ids_are_recognised() {
        assert!(is_base_layer_id(&base_layer_id()));
        assert!(is_base_layer_id("base-v12"));
        for id in [
            "base-v",
            "base-vx",
            "base-v1-x",
            "0123456789abcdef-base-v1",
            "base",
        ] {
            assert!(!is_base_layer_id(id), "{id}");
        }
    }

    #[test]
    fn python_check_reports_why_it_fails() {
        let e = check_python(Path::new("/nonexistent/python3")).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
        let e = check_python(Path::new("/bin/false")).unwrap_err();
        assert!(e.contains("exit status: 1"), "{e}");
        if Path::new("/usr/bin/python3").exists() {
            check_python(Path::new("/usr/bin/python3")).unwrap();
        }
    }
}
