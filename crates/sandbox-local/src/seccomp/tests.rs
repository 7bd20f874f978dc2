//! Tests of the seccomp filter.
//!
//! * A classic-BPF interpreter runs the generated program on synthetic
//!   `seccomp_data` (pure, no kernel involved): hand-written expectations, a
//!   differential check against the policy table, and a static check of the
//!   program's shape (jump targets, loads, final `RET`).
//! * [`installed_filter_in_a_child_process`] re-executes this test binary as a
//!   child that installs the real filter and probes real syscalls.

use std::collections::HashSet;
use std::mem::offset_of;

use libc::{EPERM, seccomp_data, sock_filter};

use super::bpf::{JEQ_K, JSET_K, LD_W_ABS, RET_K};
use super::policy::{Check, RULES};
use super::{AUDIT_ARCH_NATIVE, Filter};

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}
const DENY: u32 = errno(EPERM);
const ENOSYS: u32 = errno(libc::ENOSYS);

const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

// Opcodes the interpreter understands beyond those the generator emits.
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;

const SECCOMP_DATA_SIZE: usize = size_of::<seccomp_data>();

/// Serialises `seccomp_data` the way the kernel lays it out (native order).
fn data(arch: u32, nr: i64, args: [u64; 6]) -> [u8; SECCOMP_DATA_SIZE] {
    let mut d = [0u8; SECCOMP_DATA_SIZE];
    // The kernel stores the syscall number as an `int`.
    let nr = nr as i32;
    d[offset_of!(seccomp_data, nr)..][..4].copy_from_slice(&nr.to_ne_bytes());
    d[offset_of!(seccomp_data, arch)..][..4].copy_from_slice(&arch.to_ne_bytes());
    d[offset_of!(seccomp_data, instruction_pointer)..][..8]
        .copy_from_slice(&0x4000_1000u64.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        d[offset_of!(seccomp_data, args) + 8 * i..][..8].copy_from_slice(&a.to_ne_bytes());
    }
    d
}

/// A classic-BPF interpreter restricted to what seccomp allows; panics on
/// anything unexpected (unknown opcode, load out of range, running off the end).
fn run(prog: &[sock_filter], d: &[u8; SECCOMP_DATA_SIZE]) -> u32 {
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let ins = prog
            .get(pc)
            .unwrap_or_else(|| panic!("pc {pc} ran off the program"));
        let (k, jt, jf) = (ins.k, usize::from(ins.jt), usize::from(ins.jf));
        let cond = |c: bool| pc + 1 + if c { jt } else { jf };
        pc = match ins.code {
            LD_W_ABS => {
                let off = k as usize;
                assert!(
                    off.is_multiple_of(4) && off + 4 <= SECCOMP_DATA_SIZE,
                    "bad load offset {off}"
                );
                a = u32::from_ne_bytes(d[off..off + 4].try_into().unwrap());
                pc + 1
            }
            AND_K => {
                a &= k;
                pc + 1
            }
            JA => pc + 1 + k as usize,
            JEQ_K => cond(a == k),
            JGE_K => cond(a >= k),
            JGT_K => cond(a > k),
            JSET_K => cond(a & k != 0),
            RET_K => return k,
            other => panic!("unsupported opcode {other:#x} at {pc}"),
        };
    }
}

fn eval(arch: u32, nr: i64, args: [u64; 6]) -> u32 {
    run(&Filter::sandbox().insns, &data(arch, nr, args))
}

fn native(nr: i64, args: [u64; 6]) -> u32 {
    eval(AUDIT_ARCH_NATIVE, nr, args)
}

fn a0(x: u64) -> [u64; 6] {
    [x, 0, 0, 0, 0, 0]
}

fn a1(x: u64) -> [u64; 6] {
    [3, x, 0, 0, 0, 0]
}

/// An ioctl request as a syscall argument (`libc::Ioctl` is not `u64` on every libc).
#[allow(clippy::unnecessary_cast)]
fn request(r: libc::Ioctl) -> u64 {
    r as u64
}

const HIGH: u64 = 0xdead_beef_0000_0000;

#[test]
fn seccomp_program_is_well_formed() {
    let prog = Filter::sandbox().insns;
    let len = prog.len();
    assert!(len <= libc::BPF_MAXINSNS as usize && len > 5);
    assert_eq!(Filter::sandbox().len(), len);
    assert!(!Filter::sandbox().is_empty());
    for (pc, ins) in prog.iter().enumerate() {
        let next = pc + 1;
        match ins.code {
            LD_W_ABS => {
                assert!(
                    ins.k % 4 == 0 && (ins.k as usize) + 4 <= SECCOMP_DATA_SIZE,
                    "load at {pc}"
                );
                assert!(next < len, "load at {pc} falls off the end");
            }
            JEQ_K | JSET_K => {
                assert!(
                    next + usize::from(ins.jt) < len,
                    "jt of {pc} leaves the program"
                );
                assert!(
                    next + usize::from(ins.jf) < len,
                    "jf of {pc} leaves the program"
                );
            }
            RET_K => {}
            other => panic!("unexpected opcode {other:#x} at {pc}"),
        }
    }
    assert_eq!(prog[len - 1].code, RET_K, "the program must end in RET");
    // The first instructions check the architecture before anything else.
    assert_eq!(
        (prog[0].code, prog[0].k),
        (LD_W_ABS, offset_of!(seccomp_data, arch) as u32)
    );
    assert_eq!((prog[1].code, prog[1].k), (JEQ_K, AUDIT_ARCH_NATIVE));
    assert_eq!((prog[2].code, prog[2].k), (RET_K, KILL));
}

#[test]
fn seccomp_table_has_unique_syscalls_and_reasons() {
    let mut names = HashSet::new();
    let mut nrs = HashSet::new();
    for r in RULES {
        assert!(names.insert(r.name), "{} listed twice", r.name);
        assert!(
            nrs.insert(r.nr),
            "number {} ({}) listed twice",
            r.nr,
            r.name
        );
        assert!(r.reason.len() > 10, "{} needs a reason", r.name);
    }
    let listed: Vec<_> = Filter::denied_syscalls().collect();
    assert_eq!(listed.len(), RULES.len());
    assert!(listed.iter().any(|&(n, _)| n == "ptrace"));
    assert!(listed.iter().all(|(n, _)| !n.starts_with("SYS_")));
}

#[test]
fn seccomp_foreign_arch_is_killed() {
    let mut foreign = vec![AUDIT_ARCH_I386, AUDIT_ARCH_ARM, 0];
    foreign.push(if AUDIT_ARCH_NATIVE == AUDIT_ARCH_X86_64 {
        AUDIT_ARCH_AARCH64
    } else {
        AUDIT_ARCH_X86_64
    });
    for arch in foreign {
        // Allowed, denied and out-of-range numbers alike: the arch comes first.
        for nr in [0, 1, 3, 11, libc::SYS_mount, libc::SYS_clone3, 0x4000_0000] {
            assert_eq!(eval(arch, nr, [0; 6]), KILL, "arch {arch:#x} nr {nr}");
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_x32_numbers_get_enosys() {
    for nr in [0u32, 1, 56, 101, 165, 272, 435, 0x1ff, 0xffff] {
        let x32 = i64::from(0x4000_0000 | nr);
        assert_eq!(native(x32, [0; 6]), ENOSYS, "x32 nr {nr}");
    }
    // Anything with the x32 bit set, including "negative" numbers.
    assert_eq!(native(-1, [0; 6]), ENOSYS);
    assert_eq!(native(0xC000_0065, [0; 6]), ENOSYS);
}

/// The syscalls the brief requires to be denied, by x86_64 number (written
/// out, not taken from `libc`, to cross-check the table).
#[cfg(target_arch = "x86_64")]
const REQUIRED_DENIED_X86_64: &[(&str, i64)] = &[
    ("init_module", 175),
    ("finit_module", 313),
    ("delete_module", 176),
    ("kexec_load", 246),
    ("kexec_file_load", 320),
    ("reboot", 169),
    ("bpf", 321),
    ("perf_event_open", 298),
    ("userfaultfd", 323),
    ("keyctl", 250),
    ("add_key", 248),
    ("request_key", 249),
    ("mount", 165),
    ("umount2", 166),
    ("pivot_root", 155),
    ("chroot", 161),
    ("move_mount", 429),
    ("open_tree", 428),
    ("fsopen", 430),
    ("fsconfig", 431),
    ("fsmount", 432),
    ("fspick", 433),
    ("mount_setattr", 442),
    ("unshare", 272),
    ("setns", 308),
    ("ptrace", 101),
    ("process_vm_readv", 310),
    ("process_vm_writev", 311),
    ("kcmp", 312),
    ("pidfd_getfd", 438),
    ("clock_settime", 227),
    ("clock_adjtime", 305),
    ("settimeofday", 164),
    ("adjtimex", 159),
    ("swapon", 167),
    ("swapoff", 168),
    ("acct", 163),
    ("quotactl", 179),
    ("quotactl_fd", 443),
    ("lookup_dcookie", 212),
    ("nfsservctl", 180),
    ("uselib", 134),
    ("vhangup", 153),
    ("iopl", 172),
    ("ioperm", 173),
    ("syslog", 103),
    ("open_by_handle_at", 304),
    ("name_to_handle_at", 303),
    ("fanotify_init", 300),
    ("io_uring_setup", 425),
    ("io_uring_enter", 426),
    ("io_uring_register", 427),
    // Added by this policy.
    ("modify_ldt", 154),
    ("open_tree_attr", 467),
];

#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_required_syscalls_are_denied_x86_64() {
    for &(name, nr) in REQUIRED_DENIED_X86_64 {
        // Whatever the arguments.
        for args in [[0; 6], [u64::MAX; 6], a0(HIGH | 1)] {
            assert_eq!(native(nr, args), DENY, "{name} ({nr}) with {args:x?}");
        }
    }
}

#[test]
fn seccomp_ordinary_syscalls_are_allowed() {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut allowed = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_openat,
        libc::SYS_close,
        libc::SYS_mmap,
        libc::SYS_mprotect,
        libc::SYS_execve,
        libc::SYS_wait4,
        libc::SYS_futex,
        libc::SYS_prctl,
        libc::SYS_seccomp,
        libc::SYS_setuid,
        libc::SYS_setresuid,
        libc::SYS_setgroups,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_getrandom,
        libc::SYS_statx,
        libc::SYS_pidfd_open,
        libc::SYS_memfd_create,
        libc::SYS_rseq,
        libc::SYS_landlock_create_ruleset,
        libc::SYS_mseal,
        libc::SYS_set_mempolicy,
        libc::SYS_sethostname,
        libc::SYS_kill,
        450, // set_mempolicy_home_node
        457, // statmount
        458, // listmount
        459, // lsm_get_self_attr
        460, // lsm_set_self_attr
    ];
    #[cfg(target_arch = "x86_64")]
    allowed.extend([
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_arch_prctl,
        335, /* uretprobe */
    ]);
    for nr in allowed {
        for args in [[0; 6], [u64::MAX; 6]] {
            assert_eq!(native(nr, args), ALLOW, "nr {nr} with {args:x?}");
        }
    }
    // Beyond the table: unknown numbers reach the kernel, which says ENOSYS.
    assert_eq!(native(1000, [0; 6]), ALLOW);
}

#[test]
fn seccomp_clone_namespace_flags_are_denied() {
    let clone = libc::SYS_clone;
    let sigchld = libc::SIGCHLD as u64;
    let thread = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;
    assert_eq!(native(clone, a0(sigchld)), ALLOW, "fork");
    assert_eq!(native(clone, a0(thread)), ALLOW, "pthread_create");
    assert_eq!(
        native(
            clone,
            a0((libc::CLONE_VM | libc::CLONE_VFORK) as u64 | sigchld)
        ),
        ALLOW,
        "posix_spawn"
    );
    // The kernel ignores the high half (lower_32_bits): so do we.
    assert_eq!(native(clone, a0(HIGH | sigchld)), ALLOW, "high bits only");
    for flag in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWTIME,
    ] {
        let flag = flag as u64;
        assert_eq!(native(clone, a0(flag)), DENY, "{flag:#x}");
        assert_eq!(
            native(clone, a0(flag | sigchld)),
            DENY,
            "{flag:#x} | SIGCHLD"
        );
        assert_eq!(
            native(clone, a0(flag | thread | HIGH)),
            DENY,
            "{flag:#x} | thread | high"
        );
    }
    // The namespace check looks at args[0] only.
    assert_eq!(
        native(
            clone,
            [sigchld, u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX]
        ),
        ALLOW
    );
    // clone3: always ENOSYS, whatever it points to.
    assert_eq!(native(libc::SYS_clone3, [0; 6]), ENOSYS);
    assert_eq!(
        native(libc::SYS_clone3, [0x7fff_0000, 88, 0, 0, 0, 0]),
        ENOSYS
    );
    // unshare and setns: always.
    assert_eq!(
        native(libc::SYS_unshare, a0(libc::CLONE_NEWUSER as u64)),
        DENY
    );
    assert_eq!(
        native(libc::SYS_unshare, a0(libc::CLONE_FILES as u64)),
        DENY
    );
    assert_eq!(native(libc::SYS_setns, a0(3)), DENY);
}

#[test]
fn seccomp_ioctl_terminal_injection_is_denied() {
    let ioctl = libc::SYS_ioctl;
    for req in [
        libc::TCGETS,
        libc::TCSETS,
        libc::TIOCGWINSZ,
        libc::TIOCSWINSZ,
        libc::FIONREAD,
        libc::TIOCGPGRP,
    ] {
        assert_eq!(native(ioctl, a1(request(req))), ALLOW, "{req:#x}");
    }
    for req in [libc::TIOCSTI, libc::TIOCLINUX, libc::TIOCSETD] {
        let req = request(req);
        assert_eq!(native(ioctl, a1(req)), DENY, "{req:#x}");
        // `cmd` is an unsigned int: the high half must not smuggle it past.
        assert_eq!(
            native(ioctl, a1(HIGH | req)),
            DENY,
            "{req:#x} with high bits"
        );
        // The request is args[1], not the fd.
        assert_eq!(native(ioctl, [req, 0, 0, 0, 0, 0]), ALLOW, "{req:#x} as fd");
    }
}

#[test]
fn seccomp_personality_follows_the_docker_rule() {
    let personality = libc::SYS_personality;
    for p in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        assert_eq!(native(personality, a0(p)), ALLOW, "{p:#x}");
    }
    for p in [
        libc::ADDR_NO_RANDOMIZE as u64,
        0x0040_0000, /* READ_IMPLIES_EXEC */
        1,
        0x0040_0008,
    ] {
        assert_eq!(native(personality, a0(p)), DENY, "{p:#x}");
    }
    // `personality` takes an unsigned int: the kernel sees 0 here.
    assert_eq!(native(personality, a0(HIGH)), ALLOW);
    assert_eq!(
        native(personality, a0(HIGH | libc::ADDR_NO_RANDOMIZE as u64)),
        DENY
    );
}

#[test]
fn seccomp_socket_vsock_is_denied() {
    let socket = libc::SYS_socket;
    for family in [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
        libc::AF_PACKET,
    ] {
        assert_eq!(
            native(
                socket,
                [family as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0]
            ),
            ALLOW,
            "{family}"
        );
    }
    let vsock = libc::AF_VSOCK as u64;
    assert_eq!(native(socket, a0(vsock)), DENY);
    assert_eq!(native(socket, a0(HIGH | vsock)), DENY);
}

/// What the table says a call should get: an evaluation of [`RULES`] written
/// independently of the BPF generator.
fn model(nr: i64, args: [u64; 6]) -> u32 {
    if cfg!(target_arch = "x86_64") && (nr as u32) & 0x4000_0000 != 0 {
        return ENOSYS;
    }
    let Some(rule) = RULES.iter().find(|r| r.nr == nr) else {
        return ALLOW;
    };
    let low = |arg: u8| args[usize::from(arg)] as u32;
    match rule.check {
        Check::Always(e) => errno(e),
        Check::AnyBits {
            arg,
            mask,
            errno: e,
        } => {
            if low(arg) & mask != 0 {
                errno(e)
            } else {
                ALLOW
            }
        }
        Check::OneOf {
            arg,
            values,
            errno: e,
        } => {
            if values.contains(&low(arg)) {
                errno(e)
            } else {
                ALLOW
            }
        }
        Check::NoneBut {
            arg,
            values,
            errno: e,
        } => {
            if values.contains(&low(arg)) {
                ALLOW
            } else {
                errno(e)
            }
        }
    }
}

#[test]
fn seccomp_program_matches_the_table() {
    let prog = Filter::sandbox().insns;
    // Interesting values: every constant in the table, alone and with high bits.
    let mut values: Vec<u64> = vec![0, 1, 0xffff_ffff, u64::MAX, HIGH];
    for r in RULES {
        match r.check {
            Check::Always(_) => {}
            Check::AnyBits { mask, .. } => {
                values.extend(
                    (0..32)
                        .map(|b| 1u64 << b)
                        .filter(|b| (*b as u32) & mask != 0),
                );
                values.push(u64::from(!mask));
            }
            Check::OneOf { values: v, .. } | Check::NoneBut { values: v, .. } => {
                values.extend(v.iter().map(|&x| u64::from(x)));
                values.extend(v.iter().map(|&x| u64::from(x) + 1));
            }
        }
    }
    let with_high: Vec<u64> = values.iter().map(|v| v | HIGH).collect();
    values.extend(with_high);
    let mut checked = 0;
    for nr in 0..600i64 {
        let per_nr: &[u64] = if RULES
            .iter()
            .any(|r| r.nr == nr && !matches!(r.check, Check::Always(_)))
        {
            &values
        } else {
            &[0, u64::MAX]
        };
        for &v in per_nr {
            for slot in 0..6 {
                let mut args = [0u64; 6];
                args[slot] = v;
                let got = run(&prog, &data(AUDIT_ARCH_NATIVE, nr, args));
                assert_eq!(got, model(nr, args), "nr {nr} args {args:x?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 7000);
}

// ---------------------------------------------------------------------------
// The real filter, in a child process.
//
// The child is this test binary, re-executed with an environment variable and
// a filter naming `probe_child`. libtest runs tests on several threads, and
// after `fork` in a multi-threaded process only async-signal-safe calls are
// safe; the child's probes allocate, spawn threads and run commands, so a
// fresh process (`posix_spawn` via `Command`) is the safe way to get one.

const PROBE_ENV: &str = "QUANTBOX_SECCOMP_PROBE";

/// Every probe the child must report as `ok`.
const PROBES: &[&str] = &[
    "seccomp_mode_is_filter",
    "unshare_newuser",
    "mount",
    "bpf",
    "keyctl",
    "clone_newnet",
    "clone3",
    "ioctl_tiocsti",
    "ioctl_tiocsti_high_bits",
    "ioctl_tcgets_allowed",
    "personality_query_allowed",
    "personality_addr_no_randomize",
    "socket_vsock",
    "socket_inet_unix_netlink_allowed",
    "getpid",
    "fork_waitpid",
    "file_io",
    "thread_spawn",
    "exec_sh",
    "ptrace_traceme",
];

#[test]
fn installed_filter_in_a_child_process() {
    let exe = std::env::current_exe().unwrap();
    let module = module_path!();
    let test = format!(
        "{}::probe_child",
        module.split_once("::").map_or(module, |(_, rest)| rest)
    );
    let out = std::process::Command::new(exe)
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "status: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PROBES DONE"),
        "the probes did not run\n{report}"
    );
    for probe in PROBES {
        let line = format!("PROBE {probe}: ok");
        assert!(
            stdout.lines().any(|l| l == line),
            "probe {probe} failed\n{report}"
        );
    }
    assert!(!stdout.contains(": FAIL"), "{report}");
    assert!(out.status.success(), "{report}");
}

/// The child's side of [`installed_filter_in_a_child_process`]; does nothing
/// unless that test started this process.
#[test]
fn probe_child() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    // A watchdog: should a probe hang, SIGALRM kills this child and the
    // parent test fails instead of hanging.
    // SAFETY: alarm only arms a timer.
    unsafe { libc::alarm(120) };
    // libtest has printed "test ... " without a newline: start on a fresh line.
    println!();
    let failures = probes::run_all();
    println!("PROBES DONE");
    assert_eq!(failures, 0, "{failures} probe(s) failed");
}

mod probes {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    use libc::{EPERM, c_long};

    use super::super::Filter;

    /// The errno of the last failed call.
    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// `Ok` when a raw call returned -1 with `want`, else a description.
    fn expect_errno(rc: c_long, want: i32) -> Result<(), String> {
        let got = errno();
        if rc != -1 {
            Err(format!("rc {rc} (succeeded), want errno {want}"))
        } else if got == want {
            Ok(())
        } else {
            Err(format!(
                "rc {rc}, errno {got} ({}), want errno {want}",
                std::io::Error::from_raw_os_error(got)
            ))
        }
    }

    fn report(name: &str, result: Result<(), String>, failures: &mut u32) {
        match result {
            Ok(()) => println!("PROBE {name}: ok"),
            Err(e) => {
                *failures += 1;
                println!("PROBE {name}: FAIL {e}");
            }
        }
    }

    fn seccomp_mode() -> Result<String, String> {
        let status =
            std::fs::read_to_string("/proc/thread-self/status").map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| "no Seccomp: line".to_owned())
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid, writable array of two ints, as pipe2 requires.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Installs the filter on this thread, then probes. Returns the number of
    /// failed probes. Harmful probes are chosen so that, should the filter
    /// not work, they fail harmlessly with an errno other than the expected
    /// one (`mount` of a nonexistent filesystem type, `bpf`/`clone3` with a
    /// null attribute), and the probe that would alter this process
    /// (`PTRACE_TRACEME`) runs in a grandchild.
    pub(super) fn run_all() -> u32 {
        let mut failures = 0;
        let dir = tempfile::tempdir().unwrap();
        let (pipe_r, _pipe_w) = pipe();

        Filter::sandbox().install().expect("install the filter");

        let mode = seccomp_mode();
        report(
            "seccomp_mode_is_filter",
            if mode.as_deref() == Ok("2") {
                Ok(())
            } else {
                Err(format!("{mode:?}"))
            },
            &mut failures,
        );

        // SAFETY: unshare takes a flag word; it fails here without side effects.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
        report(
            "unshare_newuser",
            expect_errno(rc.into(), EPERM),
            &mut failures,
        );

        let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: all pointers are valid NUL-terminated strings or null (data);
        // the filesystem type does not exist, so even unfiltered it cannot mount.
        let rc = unsafe {
            libc::mount(
                c"none".as_ptr(),
                target.as_ptr(),
                c"quantbox-no-such-fs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        report("mount", expect_errno(rc.into(), EPERM), &mut failures);

        // SAFETY: BPF_MAP_CREATE with a null attribute of size 0 reads no memory.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                0 as libc::c_int,
                std::ptr::null::<u8>(),
                0 as libc::c_uint,
            )
        };
        report("bpf", expect_errno(rc, EPERM), &mut failures);

        // KEYCTL_GET_KEYRING_ID(KEY_SPEC_SESSION_KEYRING, create = 0): would succeed unfiltered.
        // SAFETY: integer arguments only.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                0 as libc::c_int,
                -3 as libc::c_int,
                0 as libc::c_int,
            )
        };
        report("keyctl", expect_errno(rc, EPERM), &mut failures);

        // SAFETY: with a null stack, clone behaves like fork; were the filter
        // broken, the child only calls `_exit` (async-signal-safe) and is reaped.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWNET | libc::SIGCHLD) as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc == 0 {
            // SAFETY: `_exit` is async-signal-safe and never returns.
            unsafe { libc::_exit(0) };
        }
        if rc > 0 {
            // SAFETY: `rc` is our child's pid; a null status pointer is allowed.
            unsafe { libc::waitpid(rc as libc::pid_t, std::ptr::null_mut(), 0) };
        }
        report("clone_newnet", expect_errno(rc, EPERM), &mut failures);

        // SAFETY: a null `clone_args` with size 0 is rejected before any memory is read.
        let rc =
            unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0 as libc::size_t) };
        report("clone3", expect_errno(rc, libc::ENOSYS), &mut failures);

        let fd = pipe_r.as_raw_fd();
        let byte = b'x';
        // SAFETY: TIOCSTI reads one byte from a valid pointer; `fd` is an open pipe.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCSTI, &raw const byte) };
        report(
            "ioctl_tiocsti",
            expect_errno(rc.into(), EPERM),
            &mut failures,
        );
        // SAFETY: as above; the kernel truncates the request to TIOCSTI.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_ioctl,
                fd,
                0xffff_ffff_0000_0000u64 | super::request(libc::TIOCSTI),
                &raw const byte,
            )
        };
        report(
            "ioctl_tiocsti_high_bits",
            expect_errno(rc, EPERM),
            &mut failures,
        );
        let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: TCGETS writes a `termios` into valid, writable memory. A pipe
        // is not a terminal, so the kernel (not the filter) answers ENOTTY.
        let rc = unsafe { libc::ioctl(fd, libc::TCGETS, termios.as_mut_ptr()) };
        report(
            "ioctl_tcgets_allowed",
            expect_errno(rc.into(), libc::ENOTTY),
            &mut failures,
        );

        // SAFETY: the query form changes nothing.
        let rc = unsafe { libc::personality(0xffff_ffff) };
        report(
            "personality_query_allowed",
            if rc >= 0 {
                Ok(())
            } else {
                Err(format!("errno {}", errno()))
            },
            &mut failures,
        );
        // SAFETY: an integer argument; denied, so no persona change.
        let rc = unsafe { libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong) };
        report(
            "personality_addr_no_randomize",
            expect_errno(rc.into(), EPERM),
            &mut failures,
        );

        // SAFETY: integer arguments; no fd is created.
        let rc = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if rc >= 0 {
            // SAFETY: `rc` is a socket we just created and own.
            drop(unsafe { OwnedFd::from_raw_fd(rc) });
        }
        report(
            "socket_vsock",
            expect_errno(rc.into(), EPERM),
            &mut failures,
        );
        let mut result = Ok(());
        for (family, ty, proto) in [
            (libc::AF_INET, libc::SOCK_STREAM, 0),
            (libc::AF_INET6, libc::SOCK_DGRAM, 0),
            (libc::AF_UNIX, libc::SOCK_STREAM, 0),
            (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
        ] {
            // SAFETY: integer arguments.
            let rc = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, proto) };
            if rc < 0 {
                result = Err(format!("socket({family}) errno {}", errno()));
            } else {
                // SAFETY: `rc` is a socket we just created and own.
                drop(unsafe { OwnedFd::from_raw_fd(rc) });
            }
        }
        report("socket_inet_unix_netlink_allowed", result, &mut failures);

        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        report(
            "getpid",
            if u32::try_from(pid) == Ok(std::process::id()) {
                Ok(())
            } else {
                Err(format!("{pid}"))
            },
            &mut failures,
        );

        // SAFETY: the child only calls `_exit` (async-signal-safe), which is all
        // a child of a multi-threaded process may do.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe { libc::_exit(7) };
        }
        let mut status = 0;
        let rc = if pid > 0 {
            // SAFETY: `status` is valid, writable memory for waitpid's report.
            unsafe { libc::waitpid(pid, &raw mut status, 0) }
        } else {
            -1
        };
        report(
            "fork_waitpid",
            if rc == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7 {
                Ok(())
            } else {
                Err(format!(
                    "fork {pid}, waitpid {rc}, status {status:#x}, errno {}",
                    errno()
                ))
            },
            &mut failures,
        );

        let file = dir.path().join("data.txt");
        let io = (|| -> std::io::Result<bool> {
            std::fs::write(&file, b"quantbox")?;
            let back = std::fs::read(&file)?;
            std::fs::remove_file(&file)?;
            Ok(back == b"quantbox")
        })();
        report(
            "file_io",
            if let Ok(true) = io {
                Ok(())
            } else {
                Err(format!("{io:?}"))
            },
            &mut failures,
        );

        // pthread_create tries clone3, gets ENOSYS, and falls back to clone.
        let joined = std::thread::spawn(|| 6 * 7).join();
        report(
            "thread_spawn",
            if let Ok(42) = joined {
                Ok(())
            } else {
                Err(format!("{joined:?}"))
            },
            &mut failures,
        );

        // posix_spawn (clone3 -> clone fallback), execve, a shell that forks a
        // subshell, and the filter still in force after exec.
        let script = "echo ok; echo $(echo sub); \
                      while read -r k v; do case $k in Seccomp:) echo \"mode=$v\";; esac; done < /proc/self/status";
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .output();
        report(
            "exec_sh",
            match &out {
                Ok(o) if o.status.success() && o.stdout == b"ok\nsub\nmode=2\n" => Ok(()),
                other => Err(format!("{other:?}")),
            },
            &mut failures,
        );

        // In a grandchild: were the filter broken, PTRACE_TRACEME would make
        // our test thread the tracer of a thread that libtest's `waitpid`
        // cannot reap, and the test would hang instead of failing.
        // SAFETY: the child makes only async-signal-safe calls (ptrace,
        // reading errno, `_exit`), all a child of a multi-threaded process may do.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: PTRACE_TRACEME ignores its other arguments;
            // `__errno_location` returns this thread's errno slot.
            let code = unsafe {
                let rc = libc::ptrace(
                    libc::PTRACE_TRACEME,
                    0,
                    std::ptr::null_mut::<u8>(),
                    std::ptr::null_mut::<u8>(),
                );
                let e = *libc::__errno_location();
                if rc == -1 && e == EPERM {
                    0
                } else if rc == -1 {
                    e.clamp(1, 254)
                } else {
                    255
                }
            };
            // SAFETY: see above.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        let rc = if pid > 0 {
            // SAFETY: `status` is valid, writable memory for waitpid's report.
            unsafe { libc::waitpid(pid, &raw mut status, 0) }
        } else {
            -1
        };
        report(
            "ptrace_traceme",
            if rc == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else {
                Err(format!(
                    "child status {status:#x} (exit code = errno, 255 = ptrace succeeded)"
                ))
            },
            &mut failures,
        );

        failures
    }
}
