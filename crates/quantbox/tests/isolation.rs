//! Isolation, proven by trying to break it: every test attempts an escape from inside a
//! sandbox and asserts that it fails, with a positive control where a silent failure of
//! the probe itself could pass the test. Each attack runs twice: as the unprivileged
//! sandbox user and as root of the sandbox's own user namespace, which owns the
//! sandbox's files and nothing else.

mod common;

use common::{Engine, require_root};
use serde_json::json;

const SYSCALL_PY: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *a):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    return r, ctypes.get_errno()
"#;

fn py(body: &str) -> String {
    format!("{SYSCALL_PY}\n{body}")
}

/// Declares one test per user for an attack `async fn name(user: &str)`.
macro_rules! as_user_and_root {
    ($attack:ident, $as_user:ident, $as_root:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $as_user() {
            if require_root(stringify!($as_user)) {
                $attack("user").await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $as_root() {
            if require_root(stringify!($as_root)) {
                $attack("root").await;
            }
        }
    };
}

as_user_and_root!(
    host_files,
    host_files_cannot_be_read_or_written_as_user,
    host_files_cannot_be_read_or_written_as_root
);
as_user_and_root!(
    host_processes,
    host_processes_cannot_be_seen_or_signalled_as_user,
    host_processes_cannot_be_seen_or_signalled_as_root
);
as_user_and_root!(
    another_sandbox,
    another_sandbox_cannot_be_seen_as_user,
    another_sandbox_cannot_be_seen_as_root
);
as_user_and_root!(
    network,
    the_network_is_loopback_only_as_user,
    the_network_is_loopback_only_as_root
);
as_user_and_root!(
    privileged_syscalls,
    privileged_syscalls_fail_as_user,
    privileged_syscalls_fail_as_root
);

async fn host_files(user: &str) {
    let e = Engine::start().await;
    let secret = format!("qb-secret-{}-{user}", std::process::id());
    let host_tmp = std::path::Path::new("/tmp").join(&secret);
    std::fs::write(&host_tmp, "host secret").unwrap();
    std::fs::write(e.dir.path().join(&secret), "host secret").unwrap();
    let id = e.create(json!({})).await;
    let sh = |cmd: String| {
        let (e, id) = (&e, id.clone());
        async move { e.sh_as(&id, &cmd, user).await }
    };

    // Host files are not where their host paths say, nor anywhere in the tree.
    let r = sh(format!("cat /tmp/{secret}")).await;
    assert_ne!(r["exit_code"], 0, "read a host file: {r}");
    let data_dir = e.dir.path().display().to_string();
    for path in [
        format!("{data_dir}/{secret}"),
        "/etc/shadow".into(),
        "/root/.bashrc".into(),
        "/work".into(),
    ] {
        let r = sh(format!("cat {path} || ls {path}")).await;
        assert_ne!(r["exit_code"], 0, "{path} is visible inside: {r}");
    }
    let found = e
        .ok_as(
            &id,
            &format!("find / -xdev -name '{secret}*' 2>/dev/null; echo done"),
            user,
        )
        .await;
    assert_eq!(found.trim(), "done", "found a host file by search: {found}");
    // The overlay's upper directory path is printed in mountinfo; it does not exist inside.
    let upper = e
        .ok_as(
            &id,
            "sed -n 's/.*upperdir=\\([^,]*\\).*/\\1/p' /proc/self/mountinfo | head -1",
            user,
        )
        .await;
    assert!(
        upper.trim().starts_with('/'),
        "no upperdir in mountinfo: {upper}"
    );
    let r = sh(format!("ls {}", upper.trim())).await;
    assert_ne!(
        r["exit_code"], 0,
        "the host path of the writable layer is reachable: {r}"
    );
    // /proc/1/root is init's root: the sandbox's own. init's fds and environment are not
    // readable, not even by root inside (init is not dumpable).
    let r = sh(format!("cat /proc/1/root/tmp/{secret}")).await;
    assert_ne!(r["exit_code"], 0);
    for probe in [
        "ls /proc/1/fd",
        "cat /proc/1/environ",
        "readlink /proc/1/fd/1",
        "cat /proc/1/mem",
    ] {
        let r = sh(probe.into()).await;
        assert_ne!(r["exit_code"], 0, "{probe} worked: {r}");
    }

    // Writes land in the sandbox's own layer, never in host files.
    let r = sh("echo pwned > /usr/bin/qb-write-test".into()).await;
    if user == "user" {
        assert_ne!(
            r["exit_code"], 0,
            "wrote into /usr as the sandbox user: {r}"
        );
    } else {
        assert_eq!(r["exit_code"], 0, "root owns the sandbox's /usr: {r}");
    }
    assert!(!std::path::Path::new("/usr/bin/qb-write-test").exists());
    e.ok_as(
        &id,
        &format!("echo sandbox > /tmp/{secret}; echo mine > /tmp/qb-mine"),
        user,
    )
    .await;
    assert_eq!(std::fs::read_to_string(&host_tmp).unwrap(), "host secret");
    assert!(!std::path::Path::new("/tmp/qb-mine").exists());
    // Devices of the host do not exist; new ones cannot be made.
    let r = sh("ls /dev/vda /dev/sda /dev/mem /dev/kmsg 2>&1".into()).await;
    assert_ne!(r["exit_code"], 0);
    let devs = e.ok_as(&id, "ls /dev | sort | tr '\\n' ' '", user).await;
    assert_eq!(
        devs.trim(),
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"
    );
    let r = sh("mknod /tmp/disk b 254 0".into()).await;
    assert_ne!(r["exit_code"], 0, "mknod worked: {r}");
    // Kernel settings are out of reach.
    for w in [
        "echo 1 > /proc/sys/kernel/sysrq",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        "sysctl -w vm.drop_caches=3",
    ] {
        let r = sh(w.into()).await;
        assert_ne!(r["exit_code"], 0, "{w} worked: {r}");
    }
    // Host-describing /proc files that exist on this kernel are masked by /dev/null.
    for f in ["kcore", "keys", "timer_list", "sysrq-trigger"] {
        if std::path::Path::new("/proc").join(f).exists() {
            let r = sh(format!("head -c 64 /proc/{f} | wc -c")).await;
            assert_eq!(r["stdout"], "0\n", "/proc/{f} is not masked: {r}");
        }
    }
    std::fs::remove_file(&host_tmp).unwrap();
    e.shutdown().await;
}

async fn host_processes(user: &str) {
    let e = Engine::start().await;
    let mut victim = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let vpid = victim.id();
    let id = e.create(json!({})).await;
    // Only the sandbox's own processes: init (1), the shell, ps.
    let ps = e.ok_as(&id, "ps -e -o pid=,comm= ", user).await;
    let pids: Vec<i64> = ps
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        pids.iter().all(|p| *p < 50),
        "host processes are visible: {ps}"
    );
    assert!(!ps.contains("sleep"), "{ps}");
    assert!(ps.lines().any(|l| l.trim().starts_with("1 ")), "{ps}");
    let r = e
        .sh_as(&id, &format!("kill -9 {vpid}; ls /proc/{vpid}"), user)
        .await;
    assert_ne!(r["exit_code"], 0, "{r}");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the host process was killed from inside"
    );
    // Killing init from inside does nothing: pid 1 ignores signals it has no handler
    // for, even from root of its namespace.
    let r = e
        .sh_as(&id, "kill -9 1; kill -TERM 1; sleep 0.2; echo alive", user)
        .await;
    assert!(r["stdout"].as_str().unwrap().contains("alive"));
    let r = e.sh(&id, "echo still").await;
    assert_eq!(
        r["stdout"], "still\n",
        "the sandbox died after signals to its init"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
    e.shutdown().await;
}

async fn another_sandbox(user: &str) {
    let e = Engine::start().await;
    let a = e.create(json!({"name": "a"})).await;
    let b = e.create(json!({"name": "b"})).await;
    e.ok(
        &a,
        "echo a-secret > /home/user/a-secret; echo a-secret > /tmp/a-secret",
    )
    .await;
    // A long-running process in A, started in the background of a finished command.
    e.ok(&a, "nohup sleep 300 >/dev/null 2>&1 & echo started")
        .await;
    let a_ps = e.ok(&a, "pgrep -x sleep").await;
    let a_sleep: i64 = a_ps.trim().parse().unwrap();
    let r = e
        .sh_as(&b, "ls /home/user/a-secret /tmp/a-secret", user)
        .await;
    assert_ne!(r["exit_code"], 0, "B sees A's files: {r}");
    let found = e
        .ok_as(
            &b,
            "find / -xdev -name 'a-secret' 2>/dev/null; pgrep -x sleep; echo done",
            user,
        )
        .await;
    assert_eq!(
        found.trim(),
        "done",
        "B sees A's files or processes: {found}"
    );
    // A's pid means nothing in B.
    let r = e.sh_as(&b, &format!("kill -9 {a_sleep}"), user).await;
    assert_ne!(r["exit_code"], 0);
    assert_eq!(
        e.ok(&a, "pgrep -x sleep").await.trim(),
        a_ps.trim(),
        "A's process was killed from B"
    );
    // Different hostnames and namespaces of every kind.
    assert_ne!(
        e.ok(&a, "hostname").await,
        e.ok_as(&b, "hostname", user).await
    );
    let ns = "readlink /proc/self/ns/ipc /proc/self/ns/net /proc/self/ns/mnt /proc/self/ns/user /proc/self/ns/pid /proc/self/ns/uts /proc/self/ns/cgroup";
    let a_ns = e.ok(&a, ns).await;
    let b_ns = e.ok_as(&b, ns, user).await;
    for (x, y) in a_ns.lines().zip(b_ns.lines()) {
        assert_ne!(x, y, "A and B share a namespace");
    }
    e.shutdown().await;
}

async fn network(user: &str) {
    let e = Engine::start().await;
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let id = e.create(json!({})).await;
    let ifaces = e
        .ok_as(
            &id,
            "awk -F: 'NR>2 {gsub(/ /,\"\",$1); print $1}' /proc/net/dev",
            user,
        )
        .await;
    assert_eq!(ifaces.trim(), "lo");
    let (code, out) = e
        .py_as(
            &id,
            &format!(
                "import socket\nfor addr in [('127.0.0.1', {port}), ('1.1.1.1', 53), ('10.0.2.2', 80), ('8.8.8.8', 443)]:\n    s = socket.socket(); s.settimeout(3)\n    try:\n        s.connect(addr); print('CONNECTED', addr)\n    except OSError as e:\n        print('refused', addr, e.errno)\n"
            ),
            user,
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("CONNECTED"),
        "reached a network address: {out}"
    );
    assert!(
        out.contains(&format!("refused ('127.0.0.1', {port}) 111")),
        "host loopback: {out}"
    );
    assert!(
        out.contains("refused ('1.1.1.1', 53) 101"),
        "no route expected: {out}"
    );
    let (_, dns) = e
        .py_as(&id, "import socket\ntry:\n    print(socket.gethostbyname('example.com'))\nexcept OSError as e:\n    print('no dns', e)", user)
        .await;
    assert!(dns.contains("no dns"), "{dns}");
    // Making an interface or a route needs CAP_NET_ADMIN, which nobody inside has.
    for cmd in [
        "ip link add qb0 type dummy",
        "ip route add default dev lo",
        "ip link set lo down",
    ] {
        let r = e.sh_as(&id, cmd, user).await;
        assert_ne!(r["exit_code"], 0, "{cmd} worked: {r}");
    }
    // Control: the sandbox's own loopback works.
    let (code, out) = e
        .py_as(&id, "import socket\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(1)\nc=socket.create_connection(s.getsockname(),2); a,_=s.accept(); c.send(b'ok'); print(a.recv(2).decode())", user)
        .await;
    assert_eq!((code, out.trim()), (0, "ok"));
    drop(host);
    e.shutdown().await;
}

/// The capabilities root keeps inside (CapBnd/CapEff mask of `sys::SANDBOX_ROOT_CAPS`).
fn root_caps_mask() -> String {
    let mask = quantbox_sandbox_local::sys::SANDBOX_ROOT_CAPS
        .iter()
        .fold(0u64, |m, c| m | (1 << c));
    format!("{mask:016x}")
}

async fn privileged_syscalls(user: &str) {
    let e = Engine::start().await;
    let id = e.create(json!({})).await;
    // Each line: name, the syscall, and the errnos that count as refused.
    let (code, out) = e
        .py_as(
            &id,
            &py(r#"
EPERM, EACCES, ENOSYS = 1, 13, 38
checks = {
  "mount": (lambda: libc.mount(b"none", b"/mnt", b"tmpfs", 0, None), (EPERM,)),
  "umount": (lambda: libc.umount2(b"/proc", 2), (EPERM,)),
  "unshare_user": (lambda: sc(272, 0x10000000)[0], (EPERM,)),
  "unshare_net": (lambda: sc(272, 0x40000000)[0], (EPERM,)),
  "unshare_mnt": (lambda: sc(272, 0x00020000)[0], (EPERM,)),
  "setns": (lambda: sc(308, os.open("/proc/self/ns/net", os.O_RDONLY), 0)[0], (EPERM,)),
  "clone_newpid": (lambda: sc(56, 0x20000000 | 17, 0, 0, 0, 0)[0], (EPERM,)),
  "clone3": (lambda: sc(435, 0, 0)[0], (ENOSYS,)),
  "init_module": (lambda: sc(175, 0, 0, 0)[0], (EPERM,)),
  "finit_module": (lambda: sc(313, 0, 0, 0)[0], (EPERM,)),
  "delete_module": (lambda: sc(176, 0, 0)[0], (EPERM,)),
  "ptrace_traceme": (lambda: sc(101, 0, 0, 0, 0)[0], (EPERM,)),
  "bpf": (lambda: sc(321, 0, 0, 0)[0], (EPERM,)),
  "perf_event_open": (lambda: sc(298, 0, 0, -1, -1, 0)[0], (EPERM,)),
  "keyctl": (lambda: sc(250, 0, 0, 0)[0], (EPERM,)),
  "reboot": (lambda: sc(169, 0xfee1dead, 672274793, 0x1234567, 0)[0], (EPERM,)),
  "kexec_load": (lambda: sc(246, 0, 0, 0, 0)[0], (EPERM,)),
  "settimeofday": (lambda: sc(164, 0, 0)[0], (EPERM,)),
  "open_by_handle_at": (lambda: sc(304, 0, 0, 0)[0], (EPERM,)),
  "chroot": (lambda: libc.chroot(b"/tmp"), (EPERM,)),
  "userfaultfd": (lambda: sc(323, 0)[0], (EPERM,)),
  "sethostname": (lambda: libc.sethostname(b"x", 1), (EPERM,)),
  "swapon": (lambda: sc(167, 0, 0)[0], (EPERM,)),
}
if os.getuid() != 0:
    checks["setuid0"] = (lambda: libc.setuid(0), (EPERM,))
bad = []
for name, (f, ok) in checks.items():
    ctypes.set_errno(0)
    r = f()
    err = ctypes.get_errno()
    if r != -1 or err not in ok:
        bad.append(f"{name}: returned {r}, errno {err}")
# ptrace of another process of the same user is refused too.
pid = os.fork()
if pid == 0:
    import time; time.sleep(5); os._exit(0)
r, err = sc(101, 16, pid, 0, 0)
if r != -1 or err != EPERM:
    bad.append(f"ptrace_attach: returned {r}, errno {err}")
os.kill(pid, 9); os.waitpid(pid, 0)
print("BAD" if bad else "ALL REFUSED", bad)
status = open("/proc/self/status").read()
print([l for l in status.splitlines() if l.startswith(("Cap", "NoNewPrivs", "Seccomp"))])
"#),
            user,
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ALL REFUSED"), "{out}");
    let caps = if user == "root" {
        root_caps_mask()
    } else {
        "0".repeat(16)
    };
    for line in [
        format!("CapPrm:\\t{caps}"),
        format!("CapEff:\\t{caps}"),
        format!("CapBnd:\\t{caps}"),
        "CapInh:\\t0000000000000000".into(),
        "CapAmb:\\t0000000000000000".into(),
        "NoNewPrivs:\\t1".into(),
        "Seccomp:\\t2".into(),
    ] {
        assert!(out.contains(&line), "{line} missing in {out}");
    }
    // The tools that wrap these fail the same way.
    for cmd in [
        "mount -t tmpfs none /mnt",
        "unshare -U true",
        "unshare -n true",
        "unshare -r true",
    ] {
        let r = e.sh_as(&id, cmd, user).await;
        assert_ne!(r["exit_code"], 0, "{cmd} worked: {r}");
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_binaries_do_not_escalate() {
    if !require_root("setuid_binaries_do_not_escalate") {
        return;
    }
    let e = Engine::start().await;
    let id = e.create(json!({})).await;
    let pid = e.init_pid(&id).unwrap();
    // The sandbox's root, as the host sees it.
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let base: u32 = map.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(base > 0, "sandbox root must not be host root: {map}");
    // A setuid-root copy of `id`, owned by the sandbox's root and by the host's root,
    // placed into the sandbox's writable layer from the host.
    let dir = e.sandbox_dir(&id).join("upper-root/opt/suid");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, owner) in [("id-sandbox-root", base), ("id-host-root", 0)] {
        let p = dir.join(name);
        std::fs::copy("/usr/bin/id", &p).unwrap();
        std::os::unix::fs::chown(&p, Some(owner), Some(owner)).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    }
    for name in ["id-sandbox-root", "id-host-root"] {
        let r = e
            .sh(&id, &format!("ls -l /opt/suid/{name}; /opt/suid/{name}"))
            .await;
        let out = r["stdout"].as_str().unwrap();
        assert!(
            out.contains("rws"),
            "the setuid bit is not visible, so the test proves nothing: {out}"
        );
        assert!(
            out.contains("uid=1000(user)") && !out.contains("euid="),
            "{name} escalated: {out}"
        );
    }
    // The host's own setuid programs do not help either.
    for cmd in [
        "su -c id root </dev/null",
        "/usr/bin/newgrp root </dev/null",
        "passwd -S root </dev/null",
    ] {
        let r = e.sh(&id, cmd).await;
        assert!(
            !r["stdout"].as_str().unwrap().contains("uid=0"),
            "{cmd}: {r}"
        );
    }
    let r = e
        .sh(&id, "ls -l /usr/bin/su && su -c 'id -u' root </dev/null")
        .await;
    assert_ne!(r["exit_code"], 0, "su worked: {r}");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_inside_owns_the_sandbox_and_is_no_one_outside() {
    if !require_root("root_inside_owns_the_sandbox_and_is_no_one_outside") {
        return;
    }
    let e = Engine::start().await;
    let id = e.create(json!({})).await;
    // Root inside can do what installing software needs: write /usr, chown, setuid to
    // the user.
    let out = e
        .ok_as(
            &id,
            "id -u; mkdir -p /usr/local/qbtool && echo tool > /usr/local/qbtool/bin && chown 1000:1000 /usr/local/qbtool/bin && \
             stat -c '%u %g' /usr/local/qbtool/bin && setpriv --reuid 1000 --regid 1000 --clear-groups id -u && echo done",
            "root",
        )
        .await;
    assert_eq!(out, "0\n1000 1000\n1000\ndone\n");
    // The user sees it; the host's /usr does not have it.
    assert_eq!(e.ok(&id, "cat /usr/local/qbtool/bin").await, "tool\n");
    assert!(!std::path::Path::new("/usr/local/qbtool").exists());
    // On the host, root's files belong to an unprivileged uid of the sandboxes' range.
    let upper = e.sandbox_dir(&id).join("upper-usr/local/qbtool");
    let meta = std::fs::metadata(&upper).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        1_000_000,
        "root inside is not host uid 1000000"
    );
    let file = std::fs::metadata(upper.join("bin")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&file), 1_001_000);
    e.shutdown().await;
}
