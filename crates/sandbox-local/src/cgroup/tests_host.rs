//! Tests against the real cgroup filesystem of this host. They skip (with a message) when not
//! root or when the hierarchy is not usable, and remove everything they made.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;

const LIMITS: CgroupLimits = CgroupLimits {
    memory_bytes: 64 << 20,
    cpu_quota: Some(0.5),
    pids_max: 16,
};

/// Detected groups under a unique parent; dropping removes every child and the parent.
struct Host {
    groups: Cgroups,
}

impl Drop for Host {
    fn drop(&mut self) {
        for name in self.groups.children() {
            if let Some(cg) = self.groups.open(&name) {
                let _ = cg.kill_all();
                let _ = cg.remove();
            }
        }
        if let Err(e) = self.groups.remove_parents() {
            eprintln!("cleanup: {e}");
        }
    }
}

fn unique_parent() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("qbtest-{}-{nanos:x}-{n}", std::process::id())
}

/// `None` (after saying why) when this host cannot run the test.
fn host(force: Option<Version>, want: Version, need: &[&str]) -> Option<Host> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: not root");
        return None;
    }
    let mut opts = DetectOptions::new(&unique_parent());
    if let Some(v) = force {
        opts = opts.force(v);
    }
    let groups = match Cgroups::detect_with(&opts) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping: no usable cgroups: {e}");
            return None;
        }
    };
    let host = Host { groups };
    if host.groups.version() != want {
        eprintln!(
            "skipping: host uses {:?}, test needs {want:?}",
            host.groups.version()
        );
        return None;
    }
    for (what, ok) in host.groups.support() {
        if let (true, Err(why)) = (need.contains(&what), ok) {
            eprintln!("skipping: {what} unusable: {why}");
            return None;
        }
    }
    Some(host)
}

/// A `/bin/sh -c` child blocked on `read` until released, killed and reaped when dropped.
struct Child(std::process::Child);

impl Child {
    fn gated(script: &str) -> Child {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read x; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Child(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn release(&mut self) {
        let mut stdin = self.0.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "child {} still running",
                self.pid()
            );
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The group path of `pid` in the hierarchy whose `/proc/<pid>/cgroup` line has `controllers`.
fn proc_cgroup(pid: i32, controllers: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let _ = p.next();
            (p.next() == Some(controllers)).then(|| p.next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no {controllers} line in {text}"))
}

fn cpu_ns(cg: &Cgroup) -> u64 {
    cg.stats().unwrap().cpu_usage_ns
}

fn assert_removed(cg: &Cgroup) {
    cg.remove().unwrap();
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

const V1_ALL: &[&str] = &["memory", "cpu", "cpuacct", "pids", "freezer", "kill"];

#[test]
fn v1_host_limits_join_stats_kill_remove() {
    let Some(h) = host(None, Version::V1, V1_ALL) else {
        return;
    };
    let parent = h.groups.parent_name().to_owned();
    let cg = h.groups.create("sb", &LIMITS).unwrap();
    assert_eq!(
        cg.dirs().len(),
        5,
        "memory, cpu, cpuacct, pids, freezer: {:?}",
        cg.dirs()
    );
    let mut child = Child::gated("exec sleep 30");
    cg.join(child.pid()).unwrap();
    child.release();
    assert_eq!(cg.pids().unwrap(), [child.pid()]);
    let suffix = format!("/{parent}/sb");
    for c in ["memory", "cpu", "cpuacct", "pids", "freezer"] {
        assert!(proc_cgroup(child.pid(), c).ends_with(&suffix), "{c}");
        let me = proc_cgroup(std::process::id() as i32, c);
        assert!(
            !me.contains(&parent),
            "the test process itself joined {c}: {me}"
        );
    }

    let s = cg.stats().unwrap();
    assert!(s.pids >= 1, "{s:?}");
    assert_eq!(s.memory_limit_bytes, 64 << 20);
    assert_eq!(s.pids_max, 16);
    assert!(s.memory_peak_bytes.is_some());
    let cpu_dir = cg
        .dirs()
        .into_iter()
        .find(|d| d.join("cpu.cfs_quota_us").exists())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(cpu_dir.join("cpu.cfs_quota_us")).unwrap(),
        "50000\n"
    );
    assert_eq!(h.groups.children(), ["sb"]);
    let reopened = h.groups.open("sb").unwrap();
    assert_eq!(reopened, cg);

    cg.kill_all().unwrap();
    assert!(cg.pids().unwrap().is_empty());
    assert_eq!(child.wait(Duration::from_secs(5)).signal(), Some(9));
    assert_removed(&cg);
    assert!(h.groups.children().is_empty());
    let parents = h.groups.parent_dirs();
    drop(h);
    for p in parents {
        assert!(!p.exists(), "parent {} left behind", p.display());
    }
}

/// The value of `file` in whichever of the group's directories has it.
fn file(cg: &Cgroup, name: &str) -> String {
    cg.dirs()
        .into_iter()
        .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
        .unwrap_or_else(|| panic!("{name} not found"))
        .trim()
        .to_owned()
}

#[test]
fn v1_host_set_limits_raises_and_lowers_memory_and_swap_in_order() {
    let Some(h) = host(None, Version::V1, V1_ALL) else {
        return;
    };
    let cg = h.groups.create("lim", &LIMITS).unwrap();
    let has_memsw = cg
        .dirs()
        .iter()
        .any(|d| d.join("memory.memsw.limit_in_bytes").exists());
    for (mb, cpu, pids) in [(512u64, 1.5, 200u64), (128, 0.25, 8), (1024, 1.0, 512)] {
        let limits = CgroupLimits {
            memory_bytes: mb << 20,
            cpu_quota: Some(cpu),
            pids_max: pids,
        };
        cg.set_limits(&limits)
            .unwrap_or_else(|e| panic!("setting {mb} MB: {e}"));
        assert_eq!(file(&cg, "memory.limit_in_bytes"), (mb << 20).to_string());
        if has_memsw {
            assert_eq!(
                file(&cg, "memory.memsw.limit_in_bytes"),
                (mb << 20).to_string()
            );
        }
        assert_eq!(
            file(&cg, "cpu.cfs_quota_us"),
            ((cpu * 100_000.0) as u64).to_string()
        );
        assert_eq!(file(&cg, "pids.max"), pids.to_string());
    }
    // The counters read only three files but agree with the full statistics.
    let mut child = Child::gated("i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; exec sleep 30");
    cg.join(child.pid()).unwrap();
    child.release();
    sleep(Duration::from_millis(500));
    let c = cg.counters().unwrap();
    let s = cg.stats().unwrap();
    assert_eq!(
        (c.oom_kills, c.pids_limit_hits),
        (s.oom_kills, s.pids_limit_hits)
    );
    assert!(c.cpu_usage_ns > 0 && c.cpu_usage_ns <= s.cpu_usage_ns);
    cg.kill_all().unwrap();
    cg.remove().unwrap();
}

#[test]
fn v1_host_memory_hog_is_oom_killed() {
    let Some(h) = host(None, Version::V1, V1_ALL) else {
        return;
    };
    let cg = h.groups.create("hog", &LIMITS).unwrap();
    let mut child = Child::gated(
        "exec /usr/bin/python3 -c \"b=bytearray(200*2**20); b[::4096]=b'x'*(len(b)//4096)\"",
    );
    cg.join(child.pid()).unwrap();
    child.release();
    let status = child.wait(Duration::from_secs(30));
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let s = cg.stats().unwrap();
    assert!(s.oom_kills >= 1, "{s:?}");
    assert!(s.memory_peak_bytes.unwrap() <= 64 << 20, "{s:?}");
    assert_removed(&cg);
}

#[test]
fn v1_host_fork_loop_hits_pids_max() {
    let Some(h) = host(None, Version::V1, V1_ALL) else {
        return;
    };
    let cg = h.groups.create("forks", &LIMITS).unwrap();
    let mut child = Child::gated("i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; wait");
    cg.join(child.pid()).unwrap();
    child.release();
    let start = Instant::now();
    let s = loop {
        let s = cg.stats().unwrap();
        if s.pids_limit_hits > 0 || start.elapsed() > Duration::from_secs(10) {
            break s;
        }
        sleep(Duration::from_millis(20));
    };
    assert!(s.pids_limit_hits > 0, "{s:?}");
    assert!(s.pids <= 16, "{s:?}");
    cg.kill_all().unwrap();
    assert!(cg.pids().unwrap().is_empty());
    // dash may already have given up ("Cannot fork"); either way it is gone now.
    child.wait(Duration::from_secs(5));
    // pids.current drops once the killed tasks are reaped (ours above, the orphans by init).
    let start = Instant::now();
    while cg.stats().unwrap().pids > 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", cg.stats());
        sleep(Duration::from_millis(20));
    }
    assert_removed(&cg);
}

/// Freeze stops a busy loop's cpu time, thaw resumes it, kill_all on a frozen group empties it.
fn freeze_thaw_kill(cg: &Cgroup, frozen: impl Fn() -> bool) {
    let mut child = Child::gated("sleep 60 & while :; do :; done");
    cg.join(child.pid()).unwrap();
    child.release();
    let start = Instant::now();
    while cg.pids().unwrap().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "sleep did not start"
        );
        sleep(Duration::from_millis(10));
    }
    sleep(Duration::from_millis(100));
    assert!(!frozen());

    cg.freeze().unwrap();
    assert!(frozen());
    let before = cpu_ns(cg);
    sleep(Duration::from_millis(300));
    assert_eq!(cpu_ns(cg), before, "cpu time advanced while frozen");

    cg.thaw().unwrap();
    assert!(!frozen());
    let thawed = cpu_ns(cg);
    sleep(Duration::from_millis(300));
    assert!(cpu_ns(cg) > thawed, "cpu time did not advance after thaw");

    cg.freeze().unwrap();
    cg.kill_all().unwrap();
    assert!(cg.pids().unwrap().is_empty());
    assert!(!frozen(), "kill_all leaves the group thawed");
    assert_eq!(child.wait(Duration::from_secs(5)).signal(), Some(9));
    assert_removed(cg);
}

#[test]
fn v1_host_freeze_thaw_kill_all() {
    let Some(h) = host(None, Version::V1, V1_ALL) else {
        return;
    };
    let cg = h.groups.create("busy", &LIMITS).unwrap();
    let state = cg
        .dirs()
        .into_iter()
        .find(|d| d.join("freezer.state").exists())
        .unwrap()
        .join("freezer.state");
    freeze_thaw_kill(&cg, || {
        std::fs::read_to_string(&state).unwrap().trim() == "FROZEN"
    });
}

#[test]
fn v2_forced_on_hybrid_unified_mount() {
    let Some(h) = host(
        Some(Version::V2),
        Version::V2,
        &["freezer", "kill", "cpuacct"],
    ) else {
        return;
    };
    let parent = h.groups.parent_name().to_owned();
    let support = h.groups.support();
    for (what, ok) in &support {
        eprintln!("v2 support: {what}: {ok:?}");
    }
    let memory_ok = support.iter().any(|(w, ok)| *w == "memory" && ok.is_ok());
    if !memory_ok {
        // This host's unified mount has no memory/cpu/pids: limits are refused, cleanly.
        let err = h.groups.create("sb", &LIMITS).unwrap_err();
        assert!(
            matches!(err, CgroupError::Unsupported { what: "memory", .. }),
            "{err}"
        );
        assert!(h.groups.children().is_empty(), "nothing made");
    }
    let cg = h.groups.create("sb", &CgroupLimits::unlimited()).unwrap();
    assert_eq!(cg.version(), Version::V2);
    assert_eq!(cg.dirs().len(), 1);
    let dir = cg.dirs().remove(0);
    let probe = Child::gated("true");
    cg.join(probe.pid()).unwrap();
    assert_eq!(proc_cgroup(probe.pid(), ""), format!("/{parent}/sb"));
    assert!(!proc_cgroup(std::process::id() as i32, "").contains(&parent));
    drop(probe);
    let events = dir.join("cgroup.events");
    freeze_thaw_kill(&cg, || {
        stats::keyed(&std::fs::read_to_string(&events).unwrap(), "frozen") == Some(1)
    });
    assert!(!Path::new(&dir).exists());
}

const LEAF_ENV: &str = "QB_CGROUP_TEST_LEAF";

/// v2's "no internal processes" rule on the real kernel: a child process (it moves itself
/// between groups, so it must not be this test harness) sits in a non-root cgroup2 group and
/// detects; enabling a controller there fails with EBUSY, so detect must move it into
/// `<own>/qb-server` and then succeed. Uses a controller the cgroup2 mount offers (hugetlb on
/// this hybrid host) in place of memory/cpu/pids.
#[test]
fn v2_busy_own_group_moves_into_server_leaf() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: not root");
        return;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(mount) = detect::parse_mountinfo(&mountinfo)
        .into_iter()
        .find(|m| m.v2)
    else {
        eprintln!("skipping: no cgroup2 mount");
        return;
    };
    let offered = std::fs::read_to_string(mount.mount_point.join("cgroup.controllers")).unwrap();
    let Some(controller) = offered.split_whitespace().next() else {
        eprintln!("skipping: the cgroup2 root offers no controller");
        return;
    };
    let own = mount.mount_point.join(unique_parent());
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cgroup::tests_host::v2_server_leaf_child"])
        .args(["--include-ignored", "--nocapture", "--test-threads=1"])
        .env(LEAF_ENV, format!("{}\t{controller}", own.display()))
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("1 passed"),
        "the child test did not run: {log}"
    );
    assert!(!own.exists(), "{} left behind", own.display());
}

/// Puts things back however the child test ends.
struct LeafCleanup {
    mount: PathBuf,
    own: PathBuf,
    disable: Option<String>,
}

impl Drop for LeafCleanup {
    fn drop(&mut self) {
        let _ = fs::write(
            &self.mount.join("cgroup.procs"),
            &std::process::id().to_string(),
        );
        for d in [
            self.own.join("qb"),
            self.own.join("qb-server"),
            self.own.clone(),
        ] {
            if let Err(e) = fs::rmdir(&d, REMOVE_TIMEOUT) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Some(c) = &self.disable
            && let Err(e) = fs::write(&self.mount.join("cgroup.subtree_control"), &format!("-{c}"))
        {
            eprintln!("cleanup: {e}");
        }
    }
}

#[test]
#[ignore = "helper: run in a child process by v2_busy_own_group_moves_into_server_leaf"]
fn v2_server_leaf_child() {
    let Ok(spec) = std::env::var(LEAF_ENV) else {
        return;
    };
    let (own, controller) = spec.split_once('\t').unwrap();
    let own = PathBuf::from(own);
    let controller: &'static str = Box::leak(controller.to_owned().into_boxed_str());
    let controllers: &'static [&'static str] = Box::leak(Box::new([controller]));
    let mount = own.parent().unwrap().to_owned();
    let root_control = mount.join("cgroup.subtree_control");
    let enabled = stats::has_word(&fs::read(&root_control).unwrap(), controller);
    let _cleanup = LeafCleanup {
        mount: mount.clone(),
        own: own.clone(),
        disable: (!enabled).then(|| controller.to_owned()),
    };
    if !enabled {
        fs::write(&root_control, &format!("+{controller}")).unwrap();
    }
    fs::mkdir(&own, false).unwrap();
    let me = std::process::id() as i32;
    fs::write(&own.join("cgroup.procs"), &me.to_string()).unwrap();
    let name = own.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(proc_cgroup(me, ""), format!("/{name}"));
    // The precondition: our own group holds us, so enabling a controller is refused.
    let err = fs::write(
        &own.join("cgroup.subtree_control"),
        &format!("+{controller}"),
    );
    assert!(
        err.as_ref().is_err_and(|e| fs::is_errno(e, libc::EBUSY)),
        "{err:?}"
    );

    let opts = DetectOptions::new("qb")
        .force(Version::V2)
        .v2_controllers(controllers);
    let groups = Cgroups::detect_with(&opts).unwrap();
    assert_eq!(proc_cgroup(me, ""), format!("/{name}/qb-server"));
    assert!(
        fs::read(&own.join("cgroup.procs"))
            .unwrap()
            .trim()
            .is_empty()
    );
    assert_eq!(groups.parent_dirs(), [own.join("qb")]);
    for file in [
        "cgroup.subtree_control",
        "qb/cgroup.controllers",
        "qb/cgroup.subtree_control",
    ] {
        let text = fs::read(&own.join(file)).unwrap();
        assert!(stats::has_word(&text, controller), "{file}: {text:?}");
    }
    let sb = groups.create("sb", &CgroupLimits::unlimited()).unwrap();
    let text = fs::read(&own.join("qb/sb/cgroup.controllers")).unwrap();
    assert!(
        stats::has_word(&text, controller),
        "sandbox groups get it: {text:?}"
    );
    sb.remove().unwrap();
}
