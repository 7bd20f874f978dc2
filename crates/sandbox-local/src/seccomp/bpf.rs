//! A minimal classic-BPF assembler for seccomp programs.
//!
//! Only the handful of instructions the policy needs are produced: 32-bit
//! absolute loads from `struct seccomp_data`, `JEQ`/`JSET` with an immediate,
//! and `RET` with an immediate. Every conditional block is self-contained and
//! ends in `RET`, so jump offsets are local and small; the builders check that
//! each offset fits the 8-bit `jt`/`jf` fields instead of truncating it.

use std::mem::offset_of;

use libc::{seccomp_data, sock_filter};

/// `BPF_LD | BPF_W | BPF_ABS`: `A = *(u32 *)(seccomp_data + k)`.
pub(super) const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
/// `BPF_JMP | BPF_JEQ | BPF_K`: `pc += (A == k) ? jt : jf`.
pub(super) const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
/// `BPF_JMP | BPF_JSET | BPF_K`: `pc += (A & k) != 0 ? jt : jf`.
pub(super) const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
/// `BPF_RET | BPF_K`: return `k` as the seccomp action.
pub(super) const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offset of `seccomp_data.nr` (the syscall number, an `int`).
pub(super) const OFF_NR: u32 = offset_of!(seccomp_data, nr) as u32;
/// Offset of `seccomp_data.arch` (an `AUDIT_ARCH_*` value).
pub(super) const OFF_ARCH: u32 = offset_of!(seccomp_data, arch) as u32;

/// Offset of the low 32 bits of `seccomp_data.args[index]`.
///
/// The arguments are `u64`s in native byte order, so the low half is the
/// first word on little-endian machines and the second on big-endian ones.
pub(super) const fn arg_low(index: u8) -> u32 {
    assert!(index < 6, "syscalls have at most six arguments");
    let base = offset_of!(seccomp_data, args) as u32 + 8 * index as u32;
    if cfg!(target_endian = "big") {
        base + 4
    } else {
        base
    }
}

/// A non-jump instruction.
pub(super) const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A conditional jump; `jt`/`jf` count instructions to skip after this one.
///
/// Panics if an offset does not fit in the 8-bit field (a bug in the
/// generator, caught by the unit tests).
pub(super) fn jump(code: u16, k: u32, jt: usize, jf: usize) -> sock_filter {
    let fit = |off: usize| u8::try_from(off).expect("classic-BPF jump offset exceeds 255");
    sock_filter {
        code,
        jt: fit(jt),
        jf: fit(jf),
        k,
    }
}

/// `RET k`.
pub(super) const fn ret(action: u32) -> sock_filter {
    stmt(RET_K, action)
}

/// The action "fail the syscall with `errno`" (without running it).
pub(super) const fn ret_errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// What a block tests the low 32 bits of one syscall argument for.
pub(super) enum ArgTest<'a> {
    /// Any bit of the mask is set.
    AnyBits(u32),
    /// Equal to one of the values.
    OneOf(&'a [u32]),
}

/// A self-contained block, entered with any accumulator value:
///
/// ```text
///     LD   low32(args[arg])
///     <tests: on match jump to M>
///     RET  otherwise
/// M:  RET  on_match
/// ```
///
/// Every path ends in `RET`, so the block may clobber the accumulator and the
/// caller needs no jump out of it.
pub(super) fn arg_block(
    arg: u8,
    test: &ArgTest<'_>,
    on_match: u32,
    otherwise: u32,
) -> Vec<sock_filter> {
    let mut block = vec![stmt(LD_W_ABS, arg_low(arg))];
    match *test {
        ArgTest::AnyBits(mask) => block.push(jump(JSET_K, mask, 1, 0)),
        ArgTest::OneOf(values) => {
            assert!(
                !values.is_empty(),
                "an argument test needs at least one value"
            );
            let n = values.len();
            // From test i, skip the n-1-i remaining tests and `RET otherwise`.
            block.extend(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| jump(JEQ_K, v, n - i, 0)),
            );
        }
    }
    block.push(ret(otherwise));
    block.push(ret(on_match));
    block
}
