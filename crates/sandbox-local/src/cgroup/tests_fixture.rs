//! Fixture tests: a tempdir poses as /proc and /sys/fs/cgroup, and a fake kernel populates
//! each new directory with the interface files cgroupfs would create.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

const GIB: &str = "9223372036854771712\n";

/// Which hierarchy a fixture path is in: the component after `.../sys/fs/cgroup/`.
fn hierarchy(path: &Path) -> String {
    let s = path.to_string_lossy();
    let rest = &s[s.find("/sys/fs/cgroup/").expect("fixture path") + 15..];
    rest.split('/').next().unwrap_or_default().to_owned()
}

fn put(dir: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
}

/// What cgroupfs v1 puts into a new group of each hierarchy (the parts we use).
fn populate_v1(dir: &Path, memsw: bool) {
    let h = hierarchy(dir);
    put(dir, &[("cgroup.procs", ""), ("tasks", "")]);
    if h == "memory" {
        put(
            dir,
            &[
                ("memory.limit_in_bytes", GIB),
                ("memory.usage_in_bytes", "0\n"),
                ("memory.max_usage_in_bytes", "0\n"),
                ("memory.stat", "cache 0\ntotal_inactive_file 0\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                ),
            ],
        );
        if memsw {
            put(dir, &[("memory.memsw.limit_in_bytes", GIB)]);
        }
    }
    if h.split(',').any(|c| c == "cpu") {
        put(
            dir,
            &[
                ("cpu.cfs_period_us", "100000\n"),
                ("cpu.cfs_quota_us", "-1\n"),
            ],
        );
    }
    if h.split(',').any(|c| c == "cpuacct") {
        put(dir, &[("cpuacct.usage", "0\n")]);
    }
    // "broken" groups lack pids.max, so that applying the limits fails half way.
    if h == "pids" && !dir.ends_with("broken") {
        put(
            dir,
            &[
                ("pids.max", "max\n"),
                ("pids.current", "0\n"),
                ("pids.events", "max 0\n"),
            ],
        );
    }
    if h == "freezer" {
        put(dir, &[("freezer.state", "THAWED\n")]);
    }
}

fn fake_v1(dir: &Path) {
    populate_v1(dir, true);
}

fn fake_v1_noswap(dir: &Path) {
    populate_v1(dir, false);
}

/// What cgroupfs v2 puts into a new group (with memory, cpu, pids enabled by the parent).
fn fake_v2(dir: &Path) {
    put(
        dir,
        &[
            ("cgroup.procs", ""),
            ("cgroup.threads", ""),
            ("cgroup.controllers", "cpu memory pids\n"),
            ("cgroup.subtree_control", ""),
            ("cgroup.events", "populated 0\nfrozen 0\n"),
            ("cgroup.freeze", "0\n"),
            ("cgroup.kill", ""),
            ("cpu.stat", "usage_usec 0\n"),
            ("cpu.max", "max 100000\n"),
            ("memory.max", "max\n"),
            ("memory.swap.max", "max\n"),
            ("memory.current", "0\n"),
            ("memory.stat", "inactive_file 0\n"),
            ("memory.events", "oom 0\noom_kill 0\n"),
            ("pids.max", "max\n"),
            ("pids.current", "0\n"),
            ("pids.events", "max 0\n"),
        ],
    );
}

const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/abc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

/// A tempdir with `proc/self/{mountinfo,cgroup}` and the given group directories.
fn tree(mountinfo: &str, cgroup: &str, dirs: &[&str]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("proc/self")).unwrap();
    fs::write(t.path().join("proc/self/mountinfo"), mountinfo).unwrap();
    fs::write(t.path().join("proc/self/cgroup"), cgroup).unwrap();
    for d in dirs {
        fs::create_dir_all(t.path().join(d)).unwrap();
    }
    t
}

fn hybrid_tree() -> tempfile::TempDir {
    let t = tree(
        HYBRID_MOUNTINFO,
        HYBRID_CGROUP,
        &[
            "sys/fs/cgroup/cpu",
            "sys/fs/cgroup/cpuacct",
            "sys/fs/cgroup/cpuset",
            "sys/fs/cgroup/memory/process_api/abc",
            "sys/fs/cgroup/freezer",
            "sys/fs/cgroup/pids",
            "sys/fs/cgroup/systemd",
            "sys/fs/cgroup/unified",
        ],
    );
    fs::write(
        t.path().join("sys/fs/cgroup/unified/cgroup.controllers"),
        "hugetlb\n",
    )
    .unwrap();
    t
}

fn opts(t: &tempfile::TempDir, populate: fn(&Path)) -> DetectOptions {
    DetectOptions::new("qb")
        .proc_root(t.path().join("proc"))
        .mount_prefix(t.path())
        .fake_kernel(populate)
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

const LIMITS: CgroupLimits = CgroupLimits {
    memory_bytes: 64 << 20,
    cpu_quota: Some(0.5),
    pids_max: 16,
};

#[test]
fn v1_hybrid_create_writes_limits_and_remove_removes() {
    let t = hybrid_tree();
    let cg = t.path().join("sys/fs/cgroup");
    let groups = Cgroups::detect_with(&opts(&t, fake_v1)).unwrap();
    assert_eq!(
        groups.version(),
        Version::V1,
        "memory is on v1, unified has only hugetlb"
    );
    let parents: Vec<PathBuf> = [
        "memory/process_api/abc/qb",
        "cpu/qb",
        "cpuacct/qb",
        "pids/qb",
        "freezer/qb",
    ]
    .iter()
    .map(|p| cg.join(p))
    .collect();
    assert_eq!(groups.parent_dirs(), parents);
    assert!(
        parents.iter().all(|p| p.is_dir()),
        "detect made the parents"
    );
    for (what, ok) in groups.support() {
        assert_eq!(ok, Ok(()), "{what}");
    }

    let sb = groups.create("sb1", &LIMITS).unwrap();
    assert_eq!(sb.version(), Version::V1);
    let mem = cg.join("memory/process_api/abc/qb/sb1");
    assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read(mem.join("memory.memsw.limit_in_bytes")), "67108864");
    assert_eq!(read(cg.join("cpu/qb/sb1/cpu.cfs_period_us")), "100000");
    assert_eq!(read(cg.join("cpu/qb/sb1/cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cg.join("pids/qb/sb1/pids.max")), "16");
    assert_eq!(
        read(cg.join("freezer/qb/sb1/freezer.state")),
        "THAWED\n",
        "untouched"
    );
    assert!(!cg.join("cpuset/qb").exists(), "cpuset is not used");
    let procs: Vec<PathBuf> = parents.iter().map(|p| p.join("sb1/cgroup.procs")).collect();
    assert_eq!(sb.procs_files(), procs);

    // Adoption and persistence.
    assert_eq!(groups.children(), ["sb1"]);
    assert_eq!(groups.open("sb1").as_ref(), Some(&sb));
    let json = serde_json::to_string(&sb).unwrap();
    let back: Cgroup = serde_json::from_str(&json).unwrap();
    assert_eq!(back.dirs(), sb.dirs());
    assert_eq!(back.name(), "sb1");

    let err = groups.create("sb1", &LIMITS).unwrap_err();
    assert!(
        matches!(&err, CgroupError::Exists { path } if *path == mem),
        "{err}"
    );
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        "67108864",
        "existing one untouched"
    );

    sb.remove().unwrap();
    assert!(sb.dirs().iter().all(|d| !d.exists()));
    sb.remove().unwrap();
    assert_eq!(groups.open("sb1"), None);
    assert!(groups.children().is_empty());
    groups.remove_parents().unwrap();
    assert!(parents.iter().all(|p| !p.exists()));
}

#[test]
fn v1_without_swap_accounting_skips_memsw_and_says_why() {
    let t = hybrid_tree();
    let groups = Cgroups::detect_with(&opts(&t, fake_v1_noswap)).unwrap();
    let support = groups.support();
    let swap = &support.iter().find(|(w, _)| *w == "memory_swap").unwrap().1;
    assert!(
        swap.as_ref().unwrap_err().contains("swapaccount=0"),
        "{swap:?}"
    );
    let sb = groups.create("sb", &LIMITS).unwrap();
    let mem = t.path().join("sys/fs/cgroup/memory/process_api/abc/qb/sb");
    assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");
    assert!(
        !mem.join("memory.memsw.limit_in_bytes").exists(),
        "no file created"
    );
    sb.remove().unwrap();
}

#[test]
fn failed_write_removes_everything_and_names_path_and_value() {
    let t = hybrid_tree();
    let groups = Cgroups::detect_with(&opts(&t, fake_v1)).unwrap();
    let err = groups.create("broken", &LIMITS).unwrap_err();
    let path = t.path().join("sys/fs/cgroup/pids/qb/broken/pids.max");
    match &err {
        CgroupError::Write { path: p, value, .. } => {
            assert_eq!(p, &path);
            assert_eq!(value, "16");
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&*path.to_string_lossy()) && msg.contains("\"16\""),
        "{msg}"
    );
    assert!(
        groups.children().is_empty(),
        "nothing half-made: {:?}",
        groups.children()
    );
    assert_eq!(groups.open("broken"), None);
}

#[test]
fn comounted_cpu_cpuacct_share_one_directory() {
    let t = tree(
        "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
         31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
         32 25 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
        "4:cpu,cpuacct:/svc\n9:memory:/svc\n10:pids:/svc\n",
        &[
            "sys/fs/cgroup/cpu,cpuacct/svc",
            "sys/fs/cgroup/memory/svc",
            "sys/fs/cgroup/pids/svc",
        ],
    );
    let groups = Cgroups::detect_with(&opts(&t, fake_v1)).unwrap();
    let support = groups.support();
    let freezer = &support.iter().find(|(w, _)| *w == "freezer").unwrap().1;
    assert!(
        freezer.as_ref().unwrap_err().contains("freezer"),
        "{freezer:?}"
    );
    let sb = groups.create("sb", &LIMITS).unwrap();
    let cpu = t.path().join("sys/fs/cgroup/cpu,cpuacct/svc/qb/sb");
    assert_eq!(sb.dirs().len(), 3, "{:?}", sb.dirs());
    assert!(sb.dirs().contains(&cpu));
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    fs::write(cpu.join("cpuacct.usage"), "123456\n").unwrap();
    assert_eq!(sb.stats().unwrap().cpu_usage_ns, 123456);
    let err = sb.freeze().unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::Unsupported {
                what: "freezer",
                ..
            }
        ),
        "{err}"
    );
    sb.remove().unwrap();
    assert!(!cpu.exists());
}

#[test]
fn v1_stats_come_from_the_right_files() {
    let t = hybrid_tree();
    let groups = Cgroups::detect_with(&opts(&t, fake_v1)).unwrap();
    let sb = groups.create("sb", &LIMITS).unwrap();
    let cg = t.path().join("sys/fs/cgroup");
    let mem = cg.join("memory/process_api/abc/qb/sb");
    put(
        &mem,
        &[
            ("memory.usage_in_bytes", "10485760\n"),
            (
                "memory.stat",
                "inactive_file 5\ntotal_inactive_file 1048576\n",
            ),
            ("memory.max_usage_in_bytes", "20971520\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
        ],
    );
    put(
        &cg.join("pids/qb/sb"),
        &[("pids.current", "3\n"), ("pids.events", "max 5\n")],
    );
    put(&cg.join("cpuacct/qb/sb"), &[("cpuacct.usage", "999\n")]);
    let s = sb.stats().unwrap();
    assert_eq!(
        s,
        CgroupStats {
            cpu_usage_ns: 999,
            memory_bytes: 10485760 - 1048576,
            memory_limit_bytes: 64 << 20,
            memory_peak_bytes: Some(20971520),
            pids: 3,
            pids_max: 16,
            pids_limit_hits: 5,
            oom_kills: 2,
        }
    );
    put(&mem, &[("memory.usage_in_bytes", "lots\n")]);
    let err = sb.stats().unwrap_err();
    assert!(
        matches!(&err, CgroupError::Parse { path, .. } if *path == mem.join("memory.usage_in_bytes")),
        "{err}"
    );
    sb.remove().unwrap();
    let err = sb.stats().unwrap_err();
    assert!(err.to_string().contains(&*mem.to_string_lossy()), "{err}");
}

fn v2_tree(controllers: &str) -> tempfile::TempDir {
    let t = tree(
        "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        "0::/system.slice/qb.service\n",
        &["sys/fs/cgroup/system.slice/qb.service"],
    );
    let own = t.path().join("sys/fs/cgroup/system.slice/qb.service");
    put(
        &own,
        &[
            ("cgroup.controllers", controllers),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", ""),
        ],
    );
    t
}

#[test]
fn v2_enables_controllers_and_writes_limits() {
    let t = v2_tree("cpuset cpu io memory pids\n");
    let own = t.path().join("sys/fs/cgroup/system.slice/qb.service");
    let groups = Cgroups::detect_with(&opts(&t, fake_v2)).unwrap();
    assert_eq!(groups.version(), Version::V2);
    assert_eq!(groups.parent_dirs(), [own.join("qb")]);
    assert_eq!(
        read(own.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    assert_eq!(
        read(own.join("qb/cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    for (what, ok) in groups.support() {
        assert_eq!(ok, Ok(()), "{what}");
    }

    let sb = groups.create("sb", &LIMITS).unwrap();
    let dir = own.join("qb/sb");
    assert_eq!(sb.dirs(), std::slice::from_ref(&dir));
    assert_eq!(sb.procs_files(), [dir.join("cgroup.procs")]);
    assert_eq!(read(dir.join("memory.max")), "67108864");
    assert_eq!(read(dir.join("memory.swap.max")), "0");
    assert_eq!(read(dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(dir.join("pids.max")), "16");

    let free = groups.create("free", &CgroupLimits::unlimited()).unwrap();
    let fdir = own.join("qb/free");
    assert_eq!(read(fdir.join("memory.max")), "max");
    assert_eq!(read(fdir.join("cpu.max")), "max 100000");
    assert_eq!(read(fdir.join("pids.max")), "max");
    assert_eq!(groups.children(), ["free", "sb"]);

    put(
        &dir,
        &[
            ("cpu.stat", "usage_usec 1500\nuser_usec 1000\n"),
            ("memory.current", "4096000\n"),
            ("memory.stat", "anon 1\ninactive_file 96000\n"),
            ("memory.peak", "5000000\n"),
            ("memory.events", "oom 1\noom_kill 1\n"),
            ("pids.current", "2\n"),
            ("pids.events", "max 4\n"),
        ],
    );
    assert_eq!(
        sb.stats().unwrap(),
        CgroupStats {
            cpu_usage_ns: 1_500_000,
            memory_bytes: 4_000_000,
            memory_limit_bytes: 64 << 20,
            memory_peak_bytes: Some(5_000_000),
            pids: 2,
            pids_max: 16,
            pids_limit_hits: 4,
            oom_kills: 1,
        }
    );
    assert_eq!(free.stats().unwrap().memory_limit_bytes, u64::MAX);

    sb.remove().unwrap();
    free.remove().unwrap();
    assert!(!dir.exists() && !fdir.exists());
    groups.remove_parents().unwrap();
    assert!(!own.join("qb").exists());
    assert!(own.exists(), "our own group is never removed");
}

#[test]
fn v2_server_already_in_its_leaf_keeps_the_same_parent() {
    let t = v2_tree("cpu memory pids\n");
    let own = t.path().join("sys/fs/cgroup/system.slice/qb.service");
    fs::create_dir(own.join("qb-server")).unwrap();
    fs::write(
        t.path().join("proc/self/cgroup"),
        "0::/system.slice/qb.service/qb-server\n",
    )
    .unwrap();
    let groups = Cgroups::detect_with(&opts(&t, fake_v2)).unwrap();
    assert_eq!(groups.parent_dirs(), [own.join("qb")]);
    assert_eq!(
        read(own.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
}

#[test]
fn v2_missing_controller_is_reported_and_refused() {
    let t = v2_tree("cpu pids\n");
    let groups = Cgroups::detect_with(&opts(&t, fake_v2)).unwrap();
    let own = t.path().join("sys/fs/cgroup/system.slice/qb.service");
    assert_eq!(read(own.join("cgroup.subtree_control")), "+cpu +pids");
    let support = groups.support();
    let memory = &support.iter().find(|(w, _)| *w == "memory").unwrap().1;
    assert!(
        memory.as_ref().unwrap_err().contains("not delegated"),
        "{memory:?}"
    );
    let err = groups.create("sb", &LIMITS).unwrap_err();
    assert!(
        matches!(err, CgroupError::Unsupported { what: "memory", .. }),
        "{err}"
    );
    assert!(groups.children().is_empty(), "nothing made");
    let no_mem = CgroupLimits {
        memory_bytes: u64::MAX,
        ..LIMITS
    };
    let sb = groups.create("sb", &no_mem).unwrap();
    assert_eq!(read(own.join("qb/sb/cpu.max")), "50000 100000");
    assert_eq!(read(own.join("qb/sb/memory.max")), "max\n", "not written");
    sb.remove().unwrap();
}

#[test]
fn bad_input_is_rejected() {
    let t = hybrid_tree();
    let groups = Cgroups::detect_with(&opts(&t, fake_v1)).unwrap();
    for name in ["", ".", "..", "a/b", "x\n"] {
        let err = groups.create(name, &LIMITS).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName(_)),
            "{name:?}: {err}"
        );
    }
    for quota in [0.0, -1.0, f64::NAN, 0.001] {
        let limits = CgroupLimits {
            cpu_quota: Some(quota),
            ..LIMITS
        };
        let err = groups.create("sb", &limits).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidLimit(_)),
            "{quota}: {err}"
        );
    }
    assert!(groups.children().is_empty());
    let sb = groups.create("sb", &LIMITS).unwrap();
    let me = std::process::id() as i32;
    for pid in [0, -1, me] {
        let err = sb.join(pid).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidPid { .. }),
            "{pid}: {err}"
        );
    }
    assert!(sb.pids().unwrap().is_empty(), "nothing written");
    sb.remove().unwrap();
}

#[test]
fn detection_errors_name_what_is_missing() {
    let t = tempfile::tempdir().unwrap();
    let err = Cgroups::detect_with(&DetectOptions::new("qb").proc_root(t.path())).unwrap_err();
    let expect = t.path().join("self/mountinfo");
    assert!(
        matches!(&err, CgroupError::Read { path, .. } if *path == expect),
        "{err}"
    );

    let t = tree("27 1 254:0 / / rw - ext4 /dev/vda rw\n", "0::/\n", &[]);
    let err = Cgroups::detect_with(&opts(&t, fake_v1)).unwrap_err();
    assert!(matches!(err, CgroupError::NotAvailable(_)), "{err}");

    let t = hybrid_tree();
    let err = Cgroups::detect_with(&opts(&t, fake_v1).clone_with_parent("a/b")).unwrap_err();
    assert!(matches!(err, CgroupError::InvalidName(_)), "{err}");
}

impl DetectOptions {
    fn clone_with_parent(mut self, parent: &str) -> Self {
        self.parent_name = parent.to_owned();
        self
    }
}
