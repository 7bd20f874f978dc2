//! Templates of the local provider: named stacks of read-only layers. `base` is built
//! once per data directory from the host's own userland: the host's `/usr` (mounted
//! read-only, idmapped, as the lowest `/usr` layer) and a small root layer holding the
//! merged-/usr links, the minimum of `/etc`, and the sandbox user's home.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bumped whenever what `build_base` writes changes; an older layer is rebuilt.
const BASE_VERSION: u32 = 1;

/// The sandbox user.
pub const USER_UID: u32 = 1000;
pub const USER_NAME: &str = "user";
pub const USER_HOME: &str = "/home/user";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    /// Root layers, topmost first.
    pub root_layers: Vec<PathBuf>,
    /// `/usr` layers, topmost first.
    pub usr_layers: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("building the base template at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the base template needs a merged-/usr host (/bin, /lib and /sbin as links into /usr); {0} is a real directory here"
    )]
    NotMergedUsr(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TemplateError + '_ {
    move |source| TemplateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The templates found in `dir` (building `base` when missing or outdated).
pub fn load(
    dir: &Path,
    owner: Option<(u32, u32)>,
) -> Result<BTreeMap<String, Template>, TemplateError> {
    let base_dir = dir.join("base");
    let layer = base_dir.join(format!("v{BASE_VERSION}"));
    if !layer.join(".complete").exists() {
        build_base(&base_dir, &layer, owner)?;
    }
    let mut map = BTreeMap::new();
    map.insert(
        "base".to_owned(),
        Template {
            name: "base".into(),
            root_layers: vec![layer.join("rootfs")],
            usr_layers: vec![PathBuf::from("/usr")],
        },
    );
    Ok(map)
}

/// Writes the base root layer into a scratch directory, then renames it into place, so
/// a crash never leaves a half-built layer in use.
fn build_base(
    base_dir: &Path,
    layer: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), TemplateError> {
    for d in ["bin", "sbin", "lib"] {
        let p = Path::new("/").join(d);
        if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            return Err(TemplateError::NotMergedUsr(p.display().to_string()));
        }
    }
    fs::create_dir_all(base_dir).map_err(io_err(base_dir))?;
    let scratch = base_dir.join(format!(".building-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let rootfs = scratch.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(io_err(&rootfs))?;
    write_rootfs(&rootfs, owner.is_none()).map_err(io_err(&rootfs))?;
    if let Some((uid, gid)) = owner {
        chown_tree(&rootfs, uid, gid).map_err(io_err(&rootfs))?;
    }
    fs::write(scratch.join(".complete"), format!("base v{BASE_VERSION}\n"))
        .map_err(io_err(&scratch))?;
    let _ = fs::remove_dir_all(layer);
    fs::rename(&scratch, layer).map_err(io_err(layer))?;
    Ok(())
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

    #[test]
    fn base_layer_has_the_user_the_links_and_no_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let root = nix::unistd::geteuid().is_root();
        let owner = if root {
            None
        } else {
            Some((
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ))
        };
        if !root {
            // chown of /home/user to 1000 needs root.
            eprintln!(
                "skipped: building the base layer as a non-root user needs the rootless path"
            );
            return;
        }
        let t = load(dir.path(), owner).unwrap();
        let base = &t["base"];
        let r = &base.root_layers[0];
        let passwd = fs::read_to_string(r.join("etc/passwd")).unwrap();
        assert!(passwd.contains("user:x:1000:1000:user:/home/user:/bin/bash"));
        assert_eq!(
            fs::read_link(r.join("bin")).unwrap(),
            fs::read_link("/bin").unwrap()
        );
        assert_eq!(fs::metadata(r.join("home/user")).unwrap().uid(), 1000);
        assert_eq!(fs::metadata(r.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
        assert!(!r.join("etc/ssl/private").exists());
        assert!(!r.join("etc/shadow").exists());
        assert_eq!(base.usr_layers, vec![PathBuf::from("/usr")]);
        // A second load reuses the finished layer.
        let marker = r.join("etc/marker");
        fs::write(&marker, "x").unwrap();
        load(dir.path(), owner).unwrap();
        assert!(marker.exists());
    }
}
