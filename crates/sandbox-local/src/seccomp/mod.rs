//! The seccomp filter for sandboxed processes.
//!
//! Sandboxed programs already run as an unprivileged uid in their own
//! namespaces, with no capabilities and `no_new_privs`. This filter is the last
//! layer: it allows everything by default and denies the syscalls a sandbox
//! never needs (see [`Filter::denied_syscalls`]), so that bash, coreutils,
//! python with numpy/pandas, pip, compilers, threads and sockets keep working.
//!
//! The program, in order:
//!
//! 1. `seccomp_data.arch` must be the native ABI (`AUDIT_ARCH_X86_64` or
//!    `AUDIT_ARCH_AARCH64`), else `SECCOMP_RET_KILL_PROCESS`: this closes the
//!    i386 (`int 0x80`) and arm32 compat ABIs, whose numbers differ.
//! 2. x86_64 only: a syscall number with the x32 bit (`0x40000000`) set fails
//!    with `ENOSYS`. That is exactly what the (usual) kernel built without
//!    x32 support answers, so no program behaves differently than on a stock
//!    host, and no x32 call ever reaches the kernel, which closes the
//!    "same syscall under another number" bypass of the table.
//! 3. The table, one `JEQ nr` per syscall. Unconditional rules return
//!    `ERRNO`; argument-dependent rules (`clone`, `personality`, `ioctl`,
//!    `socket`) run a small self-contained block that always ends in `RET`.
//!    Argument checks compare the low 32 bits, which is what the kernel uses
//!    for these arguments (`int`/`unsigned int`; legacy `clone` truncates its
//!    flags with `lower_32_bits`), so garbage in the high half neither
//!    bypasses a rule nor triggers one.
//! 4. Otherwise `SECCOMP_RET_ALLOW`.
//!
//! Because every syscall without an argument rule gets a constant answer, the
//! kernel's per-syscall action cache (Linux 5.11+) skips the filter entirely
//! for them; only `clone`, `ioctl`, `personality` and `socket` run it.

mod bpf;
mod policy;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;

use self::bpf::{ArgTest, JEQ_K, LD_W_ABS, OFF_ARCH, OFF_NR};
use self::policy::{Check, RULES};

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!("the sandbox's seccomp policy supports Linux on x86_64 and aarch64 only");

/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;
/// `AUDIT_ARCH_AARCH64`: `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7;

/// `__X32_SYSCALL_BIT`: marks x32-ABI syscall numbers on x86_64.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The compiled filter for the sandbox's processes.
///
/// Build it once with [`Filter::sandbox`] before forking; [`Filter::install`]
/// neither allocates nor takes locks, so it can run between `fork` and
/// `execve`.
pub struct Filter {
    insns: Vec<libc::sock_filter>,
}

impl Filter {
    /// Compiles the sandbox policy (see the module docs and
    /// [`Filter::denied_syscalls`]) into a classic-BPF program.
    ///
    /// # Panics
    ///
    /// Only on a bug in the built-in table (an offset or the program size out
    /// of range); the unit tests build it.
    pub fn sandbox() -> Filter {
        let allow = libc::SECCOMP_RET_ALLOW;
        let mut p = vec![
            bpf::stmt(LD_W_ABS, OFF_ARCH),
            bpf::jump(JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
            bpf::ret(libc::SECCOMP_RET_KILL_PROCESS),
            bpf::stmt(LD_W_ABS, OFF_NR),
        ];
        #[cfg(target_arch = "x86_64")]
        p.extend([
            bpf::jump(bpf::JSET_K, X32_SYSCALL_BIT, 0, 1),
            bpf::ret(bpf::ret_errno(libc::ENOSYS)),
        ]);
        for rule in RULES {
            let nr = u32::try_from(rule.nr).expect("syscall numbers are small and non-negative");
            let block = match rule.check {
                Check::Always(errno) => vec![bpf::ret(bpf::ret_errno(errno))],
                Check::AnyBits { arg, mask, errno } => {
                    bpf::arg_block(arg, &ArgTest::AnyBits(mask), bpf::ret_errno(errno), allow)
                }
                Check::OneOf { arg, values, errno } => {
                    bpf::arg_block(arg, &ArgTest::OneOf(values), bpf::ret_errno(errno), allow)
                }
                Check::NoneBut { arg, values, errno } => {
                    bpf::arg_block(arg, &ArgTest::OneOf(values), allow, bpf::ret_errno(errno))
                }
            };
            // Not this syscall: skip its block. The accumulator still holds `nr`.
            p.push(bpf::jump(JEQ_K, nr, 0, block.len()));
            p.extend(block);
        }
        p.push(bpf::ret(allow));
        assert!(
            p.len() <= libc::BPF_MAXINSNS as usize,
            "seccomp program too long"
        );
        Filter { insns: p }
    }

    /// The number of BPF instructions in the program.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Always `false`: a filter has at least its architecture check.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Installs the filter on the calling thread, from which every child
    /// (`fork`, `clone`, threads) and every `execve` inherits it. It cannot be
    /// removed.
    ///
    /// Sets `no_new_privs` first (`prctl(PR_SET_NO_NEW_PRIVS, 1)`), which the
    /// kernel requires for an unprivileged filter; it is idempotent, so a caller
    /// that already set it loses nothing. Uses `seccomp(SECCOMP_SET_MODE_FILTER)`
    /// without `SECCOMP_FILTER_FLAG_TSYNC`: it is meant for the sandbox's
    /// single-threaded init; other threads of a multi-threaded caller stay
    /// unfiltered.
    ///
    /// Async-signal-safe: it makes two syscalls and neither allocates nor
    /// locks, so it may run between `fork` and `execve`.
    ///
    /// # Errors
    ///
    /// The `errno` of the failing `prctl` or `seccomp` call (e.g. `EINVAL` on
    /// a kernel without seccomp filters).
    pub fn install(&self) -> io::Result<()> {
        let Ok(len) = u16::try_from(self.insns.len()) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let prog = libc::sock_fprog {
            len,
            filter: self.insns.as_ptr().cast_mut(),
        };
        let (one, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
        // SAFETY: PR_SET_NO_NEW_PRIVS reads only its integer arguments (passed
        // as `unsigned long`, as the variadic prototype expects) and touches no
        // memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `prog` describes `self.insns` (`len` instructions, checked
        // above), which outlives the call; the kernel only reads the program,
        // copying it before it returns, and keeps no pointer to our memory.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_uint,
                &raw const prog,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The policy's rules as `(syscall name, reason)`, for docs and tests.
    ///
    /// Lists every syscall the filter can refuse, including those refused only
    /// for some arguments (`clone`, `personality`, `ioctl`, `socket`) and
    /// `clone3` (which fails with `ENOSYS`); the reason says which.
    pub fn denied_syscalls() -> impl Iterator<Item = (&'static str, &'static str)> {
        RULES
            .iter()
            .map(|r| (r.name.strip_prefix("SYS_").unwrap_or(r.name), r.reason))
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("len", &self.insns.len())
            .finish()
    }
}
