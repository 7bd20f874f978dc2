//! Builds the sandbox's filesystem inside init's fresh mount namespace, then makes it
//! the root. Runs as host root (or as the owner of a fresh user namespace when
//! rootless), before init gives up its privileges. Each step says why it comes where
//! it does.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::protocol::{IdMode, InitConfig};
use crate::sys;

use super::StepError;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths from config have no NUL")
}

fn step<T>(name: &'static str, r: io::Result<T>) -> Result<T, StepError> {
    r.map_err(|e| StepError::new(name, e))
}

fn nix_step<T>(name: &'static str, r: nix::Result<T>) -> Result<T, StepError> {
    r.map_err(|e| StepError::new(name, io::Error::from(e)))
}

/// Attaches an idmapped, read-only copy of each layer under `staging/N` and returns the
/// paths overlayfs should use. Without a mapping (rootless) the layers are used as they
/// are.
fn stage_layers(
    scratch: &Path,
    layers: &[PathBuf],
    first: usize,
    userns: Option<&std::os::fd::OwnedFd>,
) -> Result<Vec<PathBuf>, StepError> {
    let Some(userns) = userns else {
        return Ok(layers.to_vec());
    };
    let mut out = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let target = scratch.join("staging").join((first + i).to_string());
        let tree = step("open_tree layer", sys::open_tree_clone(&cpath(layer)))?;
        step(
            "idmap layer",
            sys::mount_setattr(
                &tree,
                sys::MOUNT_ATTR_IDMAP
                    | sys::MOUNT_ATTR_RDONLY
                    | sys::MOUNT_ATTR_NOSUID
                    | sys::MOUNT_ATTR_NODEV,
                Some(userns),
            ),
        )?;
        step("attach layer", sys::move_mount(&tree, &cpath(&target)))?;
        out.push(target);
    }
    Ok(out)
}

fn overlay_opts(lowers: &[PathBuf], upper: &Path, work: &Path, rootless: bool) -> String {
    let lower: Vec<String> = lowers
        .iter()
        .map(|p| p.to_string_lossy().replace(':', "\\:").replace(',', "\\,"))
        .collect();
    let mut o = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if rootless {
        // Unprivileged overlay keeps its metadata in user.* xattrs.
        o.push_str(",userxattr");
    }
    o
}

/// Mounts everything and pivots into the new root. `userns` is the sandbox's user
/// namespace (root mode), used to idmap the layers.
pub fn build(
    cfg: &InitConfig,
    userns: Option<&std::os::fd::OwnedFd>,
    timings: &mut super::Timings,
) -> Result<(), StepError> {
    let rootless = matches!(cfg.ids, IdMode::Rootless { .. });
    let owner = tmpfs_owner(cfg);

    // Nothing mounted from here on may propagate back to the host.
    nix_step(
        "make mounts private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    timings.mark("private");

    let scratch = make_scratch(cfg, &owner)?;
    let r = &scratch.join("root");
    timings.mark("scratch");

    let root_lowers = stage_layers(&scratch, &cfg.root_layers, 0, userns)?;
    let usr_lowers = stage_layers(&scratch, &cfg.usr_layers, cfg.root_layers.len(), userns)?;
    timings.mark("idmap");

    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    nix_step(
        "mount root overlay",
        mount(
            Some("overlay"),
            r,
            Some("overlay"),
            nosuid_nodev,
            Some(overlay_opts(&root_lowers, &cfg.upper_root, &cfg.work_root, rootless).as_str()),
        ),
    )?;
    nix_step(
        "mount /usr overlay",
        mount(
            Some("overlay"),
            &r.join("usr"),
            Some("overlay"),
            nosuid_nodev,
            Some(overlay_opts(&usr_lowers, &cfg.upper_usr, &cfg.work_usr, rootless).as_str()),
        ),
    )?;
    // The sandbox's own hostname and hosts file, over the template's.
    for f in ["hostname", "hosts"] {
        nix_step(
            "bind /etc file",
            mount(
                Some(&scratch.join(f)),
                &r.join("etc").join(f),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
        )?;
    }
    timings.mark("overlay");

    // A fresh /proc of the new pid namespace: init is its pid 1, so the mount shows
    // only the sandbox's processes.
    nix_step(
        "mount /proc",
        mount(
            Some("proc"),
            &r.join("proc"),
            Some("proc"),
            nosuid_nodev | MsFlags::MS_NOEXEC,
            None::<&str>,
        ),
    )?;
    mask_proc(r)?;
    timings.mark("proc");

    build_dev(cfg, r, rootless)?;
    timings.mark("dev");

    nix_step(
        "mount /tmp",
        mount(
            Some("tmpfs"),
            &r.join("tmp"),
            Some("tmpfs"),
            nosuid_nodev,
            Some(format!("mode=1777,size={}{owner}", cfg.tmp_size_bytes).as_str()),
        ),
    )?;
    timings.mark("tmp");

    if let Some(exe) = &cfg.tools_exe {
        bind_tools(r, exe, &owner)?;
        timings.mark("tools");
    }

    // pivot_root(".", ".") stacks the old root on top of the new one; unmounting it
    // lazily detaches the whole host tree from this namespace.
    step("chdir to new root", std::env::set_current_dir(r))?;
    step("pivot_root", sys::pivot_root(c".", c"."))?;
    nix_step("detach old root", umount2(".", MntFlags::MNT_DETACH))?;
    step("chdir /", std::env::set_current_dir("/"))?;
    timings.mark("pivot");
    Ok(())
}

/// A tmpfs over `/run` (as a booted system has) holding the quantbox binary, bound
/// read-only, at [`crate::protocol::TOOLS_EXE`].
fn bind_tools(r: &Path, exe: &Path, owner: &str) -> Result<(), StepError> {
    let run = r.join("run");
    // An imported root may have no /run (make it), or a link there: a link is never
    // followed (it could point anywhere); that sandbox goes without the binary.
    match std::fs::symlink_metadata(&run) {
        Ok(m) if m.is_dir() => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            step("make /run", std::fs::create_dir(&run))?;
        }
        _ => return Ok(()),
    }
    nix_step(
        "mount /run",
        mount(
            Some("tmpfs"),
            &run,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("mode=755,size=1m{owner}").as_str()),
        ),
    )?;
    let target = r.join(crate::protocol::TOOLS_EXE.trim_start_matches('/'));
    let dir = target.parent().expect("TOOLS_EXE has a directory");
    step("make the tools directory", std::fs::create_dir_all(dir))?;
    step(
        "make the tools mount point",
        std::fs::File::create(&target).map(drop),
    )?;
    nix_step(
        "bind the quantbox binary",
        mount(
            Some(exe),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ),
    )?;
    nix_step(
        "make the quantbox binary read-only",
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        ),
    )?;
    Ok(())
}

/// Mounts the private tmpfs on `cfg.scratch` and makes the mount points (`root`,
/// `staging/N`) and the sandbox's `hostname` and `hosts` files in it.
fn make_scratch(cfg: &InitConfig, owner: &str) -> Result<PathBuf, StepError> {
    let s = cfg.scratch.clone();
    nix_step(
        "mount scratch tmpfs",
        mount(
            Some("tmpfs"),
            &s,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=700,size=1048576{owner}").as_str()),
        ),
    )?;
    step("mkdir root", fs::create_dir(s.join("root")))?;
    step("mkdir staging", fs::create_dir(s.join("staging")))?;
    for i in 0..cfg.root_layers.len() + cfg.usr_layers.len() {
        step(
            "mkdir staging",
            fs::create_dir(s.join("staging").join(i.to_string())),
        )?;
    }
    let h = &cfg.hostname;
    step(
        "write hostname",
        fs::write(s.join("hostname"), format!("{h}\n")),
    )?;
    step(
        "write hosts",
        fs::write(
            s.join("hosts"),
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{h}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            ),
        ),
    )?;
    if let IdMode::Mapped { host_base, .. } = cfg.ids {
        for f in ["hostname", "hosts"] {
            step(
                "chown /etc file",
                std::os::unix::fs::chown(s.join(f), Some(host_base), Some(host_base)),
            )?;
        }
    }
    for f in ["hostname", "hosts"] {
        step(
            "chmod /etc file",
            fs::set_permissions(s.join(f), fs::Permissions::from_mode(0o644)),
        )?;
    }
    Ok(s)
}

/// Mount options that make a tmpfs belong to the sandbox's root (the host sees its ids
/// shifted by the user namespace's base).
fn tmpfs_owner(cfg: &InitConfig) -> String {
    match cfg.ids {
        IdMode::Mapped { host_base, .. } => format!(",uid={host_base},gid={host_base}"),
        IdMode::Rootless { .. } => String::new(),
    }
}

/// Hides the /proc files that describe the host rather than the sandbox.
fn mask_proc(r: &Path) -> Result<(), StepError> {
    for f in ["kcore", "keys", "timer_list", "sysrq-trigger"] {
        let target = r.join("proc").join(f);
        if target.exists() {
            nix_step(
                "mask /proc file",
                mount(
                    Some("/dev/null"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                ),
            )?;
        }
    }
    Ok(())
}

/// A minimal /dev on a small tmpfs: the usual character devices, a private devpts and
/// /dev/shm.
fn build_dev(cfg: &InitConfig, r: &Path, rootless: bool) -> Result<(), StepError> {
    let dev = r.join("dev");
    let owner = tmpfs_owner(cfg);
    // Device nodes are made here (as host root) or bound from the host (rootless, where
    // mknod is not allowed); either way the tmpfs itself cannot hold executables.
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    nix_step(
        "mount /dev",
        mount(
            Some("tmpfs"),
            &dev,
            Some("tmpfs"),
            flags,
            Some("mode=755,size=65536"),
        ),
    )?;
    let nodes: [(&str, u64, u64); 6] = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in nodes {
        let path = dev.join(name);
        if rootless {
            step("create /dev node", fs::File::create(&path).map(drop))?;
            nix_step(
                "bind /dev node",
                mount(
                    Some(&Path::new("/dev").join(name)),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                ),
            )?;
        } else {
            nix_step(
                "mknod /dev node",
                mknod(
                    &path,
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o666),
                    makedev(major, minor),
                ),
            )?;
            // mknod applies the umask; the nodes must be usable by everyone.
            step(
                "chmod /dev node",
                fs::set_permissions(&path, fs::Permissions::from_mode(0o666)),
            )?;
        }
    }
    // GPUs the server passes in: bound from the host, as the driver made them.
    for host in &cfg.gpu_devices {
        let Some(name) = host.file_name() else {
            continue;
        };
        let path = dev.join(name);
        step("create a GPU node", fs::File::create(&path).map(drop))?;
        nix_step(
            "bind a GPU node",
            mount(
                Some(host.as_path()),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
        )?;
    }
    let mut dirs = fs::DirBuilder::new();
    dirs.mode(0o755);
    step("mkdir /dev/pts", dirs.create(dev.join("pts")))?;
    dirs.mode(0o1777);
    step("mkdir /dev/shm", dirs.create(dev.join("shm")))?;
    step(
        "chmod /dev/shm",
        fs::set_permissions(dev.join("shm"), fs::Permissions::from_mode(0o1777)),
    )?;
    let pts_opts = match cfg.ids {
        // The tty group of the sandbox (5), as the host sees it.
        IdMode::Mapped { host_base, .. } => {
            format!("newinstance,ptmxmode=0666,mode=0620,gid={}", host_base + 5)
        }
        IdMode::Rootless { .. } => "newinstance,ptmxmode=0666,mode=0620".to_owned(),
    };
    nix_step(
        "mount /dev/pts",
        mount(
            Some("devpts"),
            &dev.join("pts"),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(pts_opts.as_str()),
        ),
    )?;
    nix_step(
        "mount /dev/shm",
        mount(
            Some("shm"),
            &dev.join("shm"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,size={}{owner}", cfg.shm_size_bytes).as_str()),
        ),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        step("symlink in /dev", symlink(target, dev.join(link)))?;
    }
    Ok(())
}
