//! The sandbox's seccomp policy, as data.
//!
//! The default is ALLOW: the filter is the last of several layers (user,
//! pid, mount, net, uts, ipc and cgroup namespaces, no capabilities,
//! `no_new_privs`) and only removes kernel surface an AI agent's programs never
//! need. Each rule names one syscall of the native ABI and says why it is
//! denied. Syscall numbers come from `libc::SYS_*`, so the table is correct
//! for whichever architecture it is compiled for.

use libc::{ENOSYS, EPERM, c_long};

/// Syscall numbers: everything in `libc`, plus the few it does not list yet.
#[allow(non_upper_case_globals)]
pub(super) mod nr {
    pub(super) use libc::*;

    /// `open_tree_attr(2)` (Linux 6.15); the same number on every architecture.
    pub(super) const SYS_open_tree_attr: super::c_long = 467;
}

/// What a rule does with a call of its syscall.
pub(super) enum Check {
    /// Always fail with this errno.
    Always(i32),
    /// Fail with `errno` when the low 32 bits of `args[arg]` have any bit of
    /// `mask` set; allow otherwise.
    AnyBits { arg: u8, mask: u32, errno: i32 },
    /// Fail with `errno` when the low 32 bits of `args[arg]` equal one of
    /// `values`; allow otherwise.
    OneOf {
        arg: u8,
        values: &'static [u32],
        errno: i32,
    },
    /// Allow only when the low 32 bits of `args[arg]` equal one of `values`;
    /// fail with `errno` otherwise.
    NoneBut {
        arg: u8,
        values: &'static [u32],
        errno: i32,
    },
}

/// One row of the policy table.
pub(super) struct Rule {
    /// The syscall's name, as in `SYS_<name>`.
    pub name: &'static str,
    /// The syscall's number on the native ABI.
    pub nr: c_long,
    /// What happens to a call.
    pub check: Check,
    /// Why: one line for docs and reviews.
    pub reason: &'static str,
}

/// A syscall denied with `EPERM` whatever its arguments.
macro_rules! deny {
    ($sys:ident, $reason:literal) => {
        Rule {
            name: stringify!($sys),
            nr: nr::$sys,
            check: Check::Always(EPERM),
            reason: $reason,
        }
    };
}

/// A syscall whose outcome depends on its arguments (or whose errno is not `EPERM`).
macro_rules! rule {
    ($sys:ident, $check:expr, $reason:literal) => {
        Rule {
            name: stringify!($sys),
            nr: nr::$sys,
            check: $check,
            reason: $reason,
        }
    };
}

/// Every namespace flag `clone(2)` accepts. `CLONE_NEWTIME` (0x80) lies in the
/// `CSIGNAL` byte, which legacy `clone` reads as the exit signal; no valid
/// signal number (< 65) has bit 0x80, so denying it costs nothing.
pub(super) const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u32;

/// `personality(2)` values ordinary programs use (Docker's rule): `PER_LINUX`,
/// `PER_LINUX32`, `UNAME26`, `PER_LINUX32 | UNAME26`, and `0xffffffff` (query).
pub(super) const ALLOWED_PERSONALITIES: &[u32] = &[
    0x0000_0000,
    0x0000_0008,
    0x0002_0000,
    0x0002_0008,
    0xffff_ffff,
];

/// Terminal ioctls the sandbox never needs.
pub(super) const DENIED_IOCTLS: &[u32] = &[
    libc::TIOCSTI as u32,
    libc::TIOCLINUX as u32,
    libc::TIOCSETD as u32,
];

/// Socket families denied to `socket(2)`.
pub(super) const DENIED_SOCKET_FAMILIES: &[u32] = &[libc::AF_VSOCK as u32];

/// The policy. Each syscall appears at most once (checked by the tests).
pub(super) const RULES: &[Rule] = &[
    // --- Kernel code and the machine itself ---
    deny!(
        SYS_init_module,
        "loads a kernel module: arbitrary code in the kernel"
    ),
    deny!(
        SYS_finit_module,
        "loads a kernel module from a file: arbitrary code in the kernel"
    ),
    deny!(SYS_delete_module, "unloads kernel modules"),
    deny!(SYS_kexec_load, "replaces the running kernel"),
    deny!(
        SYS_kexec_file_load,
        "replaces the running kernel (from files)"
    ),
    deny!(SYS_reboot, "reboots, halts or reconfigures Ctrl-Alt-Del"),
    deny!(SYS_swapon, "configures the host's swap"),
    deny!(SYS_swapoff, "configures the host's swap"),
    deny!(SYS_acct, "switches host-wide process accounting to a file"),
    deny!(SYS_quotactl, "manages filesystem quotas"),
    deny!(
        SYS_quotactl_fd,
        "manages filesystem quotas (by file descriptor)"
    ),
    deny!(
        SYS_syslog,
        "reads or clears the kernel log (leaks kernel addresses), sets the console log level"
    ),
    deny!(
        SYS_vhangup,
        "hangs up the controlling terminal; only getty/login use it"
    ),
    deny!(
        SYS_lookup_dcookie,
        "oprofile helper that resolves kernel dentry cookies to paths; obsolete"
    ),
    deny!(
        SYS_nfsservctl,
        "in-kernel NFS server control; removed in Linux 3.1"
    ),
    #[cfg(target_arch = "x86_64")]
    deny!(SYS_uselib, "obsolete a.out shared-library loader"),
    #[cfg(target_arch = "x86_64")]
    deny!(
        SYS_iopl,
        "raises the I/O privilege level: direct hardware port access"
    ),
    #[cfg(target_arch = "x86_64")]
    deny!(SYS_ioperm, "grants direct hardware I/O port access"),
    #[cfg(target_arch = "x86_64")]
    deny!(
        SYS_modify_ldt,
        "(added) installs LDT/16-bit segments; only Wine and DOSEMU need it, and it has a history of kernel bugs (CVE-2015-5157, CVE-2017-17053)"
    ),
    // --- Time: the clocks are not namespaced ---
    deny!(SYS_clock_settime, "sets a host-wide clock"),
    deny!(SYS_clock_adjtime, "adjusts a host-wide clock"),
    deny!(SYS_settimeofday, "sets the host's wall clock"),
    deny!(
        SYS_adjtimex,
        "adjusts the host's wall clock (NTP discipline)"
    ),
    // --- The filesystem view is fixed by the sandbox ---
    deny!(SYS_mount, "changes the mount table"),
    deny!(
        SYS_umount2,
        "changes the mount table (could uncover what the sandbox hides)"
    ),
    deny!(SYS_pivot_root, "changes the root filesystem"),
    deny!(
        SYS_chroot,
        "changes the root directory (an escape aid when combined with open fds)"
    ),
    deny!(SYS_move_mount, "new mount API: attaches/moves mounts"),
    deny!(SYS_open_tree, "new mount API: clones a mount tree"),
    deny!(
        SYS_open_tree_attr,
        "(added) new mount API (Linux 6.15): clones a mount tree with new attributes"
    ),
    deny!(SYS_fsopen, "new mount API: creates a filesystem context"),
    deny!(
        SYS_fsconfig,
        "new mount API: configures a filesystem context"
    ),
    deny!(SYS_fsmount, "new mount API: creates a mount from a context"),
    deny!(
        SYS_fspick,
        "new mount API: reconfigures an existing superblock"
    ),
    deny!(
        SYS_mount_setattr,
        "new mount API: changes mount properties (e.g. idmapping, read-only)"
    ),
    deny!(
        SYS_open_by_handle_at,
        "opens files by handle, bypassing path lookup: the 'shocker' container escape"
    ),
    deny!(
        SYS_name_to_handle_at,
        "produces file handles for open_by_handle_at; leaks inode identities"
    ),
    // --- Namespaces: the sandbox's set is final ---
    deny!(
        SYS_unshare,
        "creates namespaces; a nested user namespace unlocks CAP_SYS_ADMIN-only kernel code (a large attack surface)"
    ),
    deny!(SYS_setns, "joins other namespaces"),
    rule!(
        SYS_clone,
        Check::AnyBits {
            arg: 0,
            mask: CLONE_NAMESPACE_FLAGS,
            errno: EPERM
        },
        "denied only with a CLONE_NEW* flag in args[0] (same reason as unshare); plain fork/thread clones are allowed"
    ),
    rule!(
        SYS_clone3,
        Check::Always(ENOSYS),
        "ENOSYS: its flags live in user memory seccomp cannot inspect; glibc and Go then fall back to clone (as Docker/runc do)"
    ),
    // --- Other processes ---
    deny!(
        SYS_ptrace,
        "traces or controls other processes; a classic escape and information-leak vector"
    ),
    deny!(SYS_process_vm_readv, "reads another process's memory"),
    deny!(SYS_process_vm_writev, "writes another process's memory"),
    deny!(
        SYS_kcmp,
        "compares kernel objects of two processes (leaks kernel pointer ordering)"
    ),
    deny!(
        SYS_pidfd_getfd,
        "copies a file descriptor out of another process"
    ),
    // --- Large, bug-prone kernel subsystems ---
    deny!(
        SYS_bpf,
        "eBPF programs and maps: a large in-kernel attack surface"
    ),
    deny!(
        SYS_perf_event_open,
        "performance monitoring: side channels and a history of kernel bugs"
    ),
    deny!(
        SYS_userfaultfd,
        "lets user space stall kernel page faults, the standard way to win kernel races"
    ),
    deny!(
        SYS_keyctl,
        "kernel keyrings are not namespaced (keys of other users/containers, CVE-2016-0728)"
    ),
    deny!(SYS_add_key, "kernel keyrings are not namespaced"),
    deny!(
        SYS_request_key,
        "kernel keyrings are not namespaced; can call up to user space helpers"
    ),
    deny!(
        SYS_fanotify_init,
        "filesystem-wide event monitoring and permission decisions"
    ),
    deny!(
        SYS_io_uring_setup,
        "io_uring runs I/O without syscalls (invisible to seccomp) and has been a leading source of kernel exploits"
    ),
    deny!(SYS_io_uring_enter, "io_uring: see io_uring_setup"),
    deny!(SYS_io_uring_register, "io_uring: see io_uring_setup"),
    // --- Argument-dependent rules ---
    rule!(
        SYS_personality,
        Check::NoneBut {
            arg: 0,
            values: ALLOWED_PERSONALITIES,
            errno: EPERM
        },
        "denied unless PER_LINUX, PER_LINUX32, UNAME26, both, or the query 0xffffffff: other personas disable ASLR or enable legacy kernel paths (Docker's rule)"
    ),
    rule!(
        SYS_ioctl,
        Check::OneOf {
            arg: 1,
            values: DENIED_IOCTLS,
            errno: EPERM
        },
        "denied for TIOCSTI and TIOCLINUX (inject input into a terminal) and (added) TIOCSETD (line disciplines, e.g. n_gsm/n_hdlc, a recurring source of kernel exploits)"
    ),
    rule!(
        SYS_socket,
        Check::OneOf {
            arg: 0,
            values: DENIED_SOCKET_FAMILIES,
            errno: EPERM
        },
        "(added) denied for AF_VSOCK: VM-host sockets bypass the network namespace (the host runs in a VM) and have had kernel bugs (CVE-2021-26708)"
    ),
];
