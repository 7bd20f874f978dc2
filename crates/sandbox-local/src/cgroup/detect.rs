//! Pure parsing of `/proc/self/mountinfo` and `/proc/self/cgroup`, and locating this process's
//! own group in each hierarchy. Nothing here touches the filesystem.

use std::path::{Component, Path, PathBuf};

use super::Version;

/// One cgroup (v1) or cgroup2 mount from mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// Where it is mounted (unescaped).
    pub mount_point: PathBuf,
    /// The group of the hierarchy that is the mount's root (`/` unless a subtree is bind-mounted).
    pub root: String,
    /// `true` for cgroup2.
    pub v2: bool,
    /// v1: the superblock options, which name the bound controllers (`cpu`, `cpuacct`,
    /// `name=systemd`, ...) among flags like `rw`. v2: the options as well (unused).
    pub options: Vec<String>,
}

impl CgroupMount {
    /// Whether this v1 mount carries `controller`.
    pub fn has_v1(&self, controller: &str) -> bool {
        !self.v2 && self.options.iter().any(|o| o == controller)
    }
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controller-list:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcCgroup {
    /// 0 for the v2 hierarchy.
    pub hierarchy_id: u32,
    /// Empty for v2; e.g. `["cpu", "cpuacct"]` or `["name=systemd"]` for v1.
    pub controllers: Vec<String>,
    /// The group, relative to the hierarchy's root as seen from this cgroup namespace.
    pub path: String,
}

/// The cgroup and cgroup2 mounts in a mountinfo text, in order. Other mounts and malformed
/// lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 {
        return None;
    }
    let fstype = *fields.get(sep + 1)?;
    let v2 = match fstype {
        "cgroup2" => true,
        "cgroup" => false,
        _ => return None,
    };
    let options = fields
        .get(sep + 3)
        .map(|o| o.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    Some(CgroupMount {
        mount_point: PathBuf::from(unescape(fields[4])),
        root: unescape(fields[3]),
        v2,
        options,
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
pub(crate) fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..=i + 3]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The lines of a `/proc/self/cgroup` text; malformed lines are skipped.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy_id = parts.next()?.trim().parse().ok()?;
            let list = parts.next()?;
            let path = parts.next()?.to_owned();
            let controllers = if list.is_empty() {
                Vec::new()
            } else {
                list.split(',').map(str::to_owned).collect()
            };
            Some(ProcCgroup {
                hierarchy_id,
                controllers,
                path,
            })
        })
        .collect()
}

/// The directory of group `cg_path` under `mount`, with `prefix` (fixture trees) prepended to
/// the mount point. Errors say why the group is not reachable through this mount.
pub(crate) fn group_dir(
    mount: &CgroupMount,
    cg_path: &str,
    prefix: Option<&Path>,
) -> Result<PathBuf, String> {
    let rel = if mount.root == "/" {
        cg_path.trim_start_matches('/')
    } else if cg_path == mount.root {
        ""
    } else if let Some(rest) = cg_path
        .strip_prefix(mount.root.as_str())
        .and_then(|r| r.strip_prefix('/'))
    {
        rest
    } else {
        return Err(format!(
            "own group {cg_path} is outside the root {} of the mount at {}",
            mount.root,
            mount.mount_point.display()
        ));
    };
    let rel = Path::new(rel);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "own group {cg_path} is not below the mount at {} (another cgroup namespace?)",
            mount.mount_point.display()
        ));
    }
    let base = match prefix {
        Some(p) => p.join(
            mount
                .mount_point
                .strip_prefix("/")
                .unwrap_or(&mount.mount_point),
        ),
        None => mount.mount_point.clone(),
    };
    Ok(if rel.as_os_str().is_empty() {
        base
    } else {
        base.join(rel)
    })
}

/// This process's own group directory in the v1 hierarchy that carries `controller`.
pub(crate) fn locate_v1(
    mounts: &[CgroupMount],
    procs: &[ProcCgroup],
    controller: &str,
    prefix: Option<&Path>,
) -> Result<PathBuf, String> {
    let line = procs
        .iter()
        .find(|p| p.hierarchy_id != 0 && p.controllers.iter().any(|c| c == controller))
        .ok_or_else(|| format!("no {controller} line in /proc/self/cgroup"))?;
    locate(
        mounts.iter().filter(|m| m.has_v1(controller)),
        &line.path,
        prefix,
    )
    .map_err(|e| {
        e.unwrap_or_else(|| format!("no cgroup v1 hierarchy with {controller} is mounted"))
    })
}

/// This process's own group directory in the cgroup2 hierarchy.
pub(crate) fn locate_v2(
    mounts: &[CgroupMount],
    procs: &[ProcCgroup],
    prefix: Option<&Path>,
) -> Result<PathBuf, String> {
    let line = procs
        .iter()
        .find(|p| p.hierarchy_id == 0 && p.controllers.is_empty())
        .ok_or_else(|| "no 0:: line in /proc/self/cgroup".to_owned())?;
    locate(mounts.iter().filter(|m| m.v2), &line.path, prefix)
        .map_err(|e| e.unwrap_or_else(|| "no cgroup2 filesystem is mounted".to_owned()))
}

/// The first of `candidates` through which `cg_path` is reachable; `Err(None)` when there are
/// no candidates, `Err(Some(reason))` when none reaches it.
fn locate<'a>(
    candidates: impl Iterator<Item = &'a CgroupMount>,
    cg_path: &str,
    prefix: Option<&Path>,
) -> Result<PathBuf, Option<String>> {
    let mut last = None;
    for m in candidates {
        match group_dir(m, cg_path, prefix) {
            Ok(dir) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(last)
}

/// Chooses the version to use: v2 when the cgroup2 group we are in offers the memory
/// controller (`v2_controllers` is its `cgroup.controllers`), else v1 when memory is on a v1
/// hierarchy (hybrid or pure v1), else whichever exists. `None` when no usable hierarchy is
/// mounted.
pub(crate) fn choose_version(
    mounts: &[CgroupMount],
    v2_controllers: Option<&str>,
) -> Option<Version> {
    let v2_has = |c: &str| v2_controllers.is_some_and(|s| s.split_whitespace().any(|x| x == c));
    let v1_has = |c: &str| mounts.iter().any(|m| m.has_v1(c));
    if v2_has("memory") {
        Some(Version::V2)
    } else if v1_has("memory") {
        Some(Version::V1)
    } else if v2_controllers.is_some() {
        Some(Version::V2)
    } else if super::v1::ROLES.iter().any(|c| v1_has(c)) {
        Some(Version::V1)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's layout: every v1 controller mounted on its own (cpu and cpuacct apart) and
    /// a cgroup2 mount at /sys/fs/cgroup/unified.
    const HYBRID_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const HYBRID_PROC_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/deac9002bd44aa608a6eab22a502e397
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    /// A classic systemd v1 layout: cpu and cpuacct co-mounted, optional fields present.
    const COMOUNTED_MOUNTINFO: &str = "\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
33 25 0:29 / /sys/fs/cgroup/freezer rw,nosuid shared:17 - cgroup cgroup rw,freezer
";

    const COMOUNTED_PROC_CGROUP: &str = "\
11:freezer:/
10:pids:/system.slice/qb.service
9:memory:/system.slice/qb.service
4:cpu,cpuacct:/system.slice/qb.service
1:name=systemd:/system.slice/qb.service
0::/system.slice/qb.service
";

    const V2_MOUNTINFO: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn parses_hybrid_mountinfo() {
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(m.len(), 10, "tmpfs/proc/ext4 lines must be skipped: {m:?}");
        let cpu = m.iter().find(|m| m.has_v1("cpu")).unwrap();
        assert_eq!(cpu.mount_point, Path::new("/sys/fs/cgroup/cpu"));
        assert!(!cpu.has_v1("cpuacct"), "cpu and cpuacct are separate here");
        let acct = m.iter().find(|m| m.has_v1("cpuacct")).unwrap();
        assert_eq!(acct.mount_point, Path::new("/sys/fs/cgroup/cpuacct"));
        let v2: Vec<_> = m.iter().filter(|m| m.v2).collect();
        assert_eq!(v2.len(), 1);
        assert_eq!(v2[0].mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert!(
            !v2[0].has_v1("memory"),
            "a cgroup2 mount carries no v1 controller"
        );
        assert!(m.iter().any(|m| m.has_v1("name=systemd")));
    }

    #[test]
    fn locates_own_groups_in_hybrid_layout() {
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        let p = parse_proc_cgroup(HYBRID_PROC_CGROUP);
        assert_eq!(
            locate_v1(&m, &p, "memory", None).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/deac9002bd44aa608a6eab22a502e397")
        );
        assert_eq!(
            locate_v1(&m, &p, "pids", None).unwrap(),
            Path::new("/sys/fs/cgroup/pids")
        );
        assert_eq!(
            locate_v1(&m, &p, "cpuacct", Some(Path::new("/tmp/fx"))).unwrap(),
            Path::new("/tmp/fx/sys/fs/cgroup/cpuacct")
        );
        assert_eq!(
            locate_v2(&m, &p, None).unwrap(),
            Path::new("/sys/fs/cgroup/unified")
        );
        // hugetlb-only unified mount: memory is on v1, so v1 is chosen.
        assert_eq!(choose_version(&m, Some("hugetlb\n")), Some(Version::V1));
    }

    #[test]
    fn comounted_cpu_cpuacct_share_a_directory() {
        let m = parse_mountinfo(COMOUNTED_MOUNTINFO);
        let p = parse_proc_cgroup(COMOUNTED_PROC_CGROUP);
        let cpu = locate_v1(&m, &p, "cpu", None).unwrap();
        let acct = locate_v1(&m, &p, "cpuacct", None).unwrap();
        assert_eq!(
            cpu,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/system.slice/qb.service")
        );
        assert_eq!(cpu, acct);
        assert_eq!(
            locate_v1(&m, &p, "freezer", None).unwrap(),
            Path::new("/sys/fs/cgroup/freezer")
        );
        let err = locate_v1(&m, &p, "blkio", None).unwrap_err();
        assert!(err.contains("no blkio line"), "{err}");
        assert_eq!(choose_version(&m, Some("")), Some(Version::V1));
    }

    #[test]
    fn pure_v2_layout() {
        let m = parse_mountinfo(V2_MOUNTINFO);
        assert_eq!(m.len(), 1);
        assert!(m[0].v2);
        let p = parse_proc_cgroup("0::/user.slice/user-0.slice/session-3.scope\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].controllers.is_empty());
        assert_eq!(
            locate_v2(&m, &p, None).unwrap(),
            Path::new("/sys/fs/cgroup/user.slice/user-0.slice/session-3.scope")
        );
        let err = locate_v1(&m, &p, "memory", None).unwrap_err();
        assert!(err.contains("memory"), "{err}");
        assert_eq!(
            choose_version(&m, Some("cpuset cpu io memory hugetlb pids rdma misc\n")),
            Some(Version::V2)
        );
        // No controllers delegated and nothing on v1: still v2 (support() says what is missing).
        assert_eq!(choose_version(&m, Some("")), Some(Version::V2));
        assert_eq!(choose_version(&[], None), None);
    }

    #[test]
    fn proc_cgroup_lines() {
        let p = parse_proc_cgroup(HYBRID_PROC_CGROUP);
        assert_eq!(p.len(), 10);
        assert_eq!(p[0].hierarchy_id, 9);
        assert_eq!(p[0].controllers, ["name=systemd"]);
        assert_eq!(p[5].path, "/process_api/deac9002bd44aa608a6eab22a502e397");
        let p = parse_proc_cgroup("4:cpu,cpuacct:/a:b\ngarbage\n");
        assert_eq!(p.len(), 1, "garbage line skipped");
        assert_eq!(p[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(p[0].path, "/a:b", "a colon in the path is kept");
    }

    #[test]
    fn bind_mounted_subtree_and_escapes() {
        let mi = "50 40 0:33 /docker/abc /sys/fs/cgroup/my\\040mem rw - cgroup cgroup rw,memory\n";
        let m = parse_mountinfo(mi);
        assert_eq!(m[0].mount_point, Path::new("/sys/fs/cgroup/my mem"));
        assert_eq!(m[0].root, "/docker/abc");
        assert_eq!(
            group_dir(&m[0], "/docker/abc", None).unwrap(),
            Path::new("/sys/fs/cgroup/my mem")
        );
        assert_eq!(
            group_dir(&m[0], "/docker/abc/x", None).unwrap(),
            Path::new("/sys/fs/cgroup/my mem/x")
        );
        let err = group_dir(&m[0], "/docker/abcd", None).unwrap_err();
        assert!(err.contains("outside the root"), "{err}");
        // cgroup namespace: our group shown relative to the namespace root, above the mount.
        let root = CgroupMount {
            root: "/".into(),
            ..m[0].clone()
        };
        let err = group_dir(&root, "/../other", None).unwrap_err();
        assert!(err.contains("namespace"), "{err}");
        assert_eq!(unescape("a\\011b\\134c\\9"), "a\tb\\c\\9");
    }
}
