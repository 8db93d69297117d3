//! The allowlist as a compact classic-BPF program.
//!
//! seccompiler emits one compare-and-return block per system call, about 1,600
//! instructions for the allowlist: slow to load (the kernel checks and translates each
//! filter at install, per call) and walked linearly on every system call the command makes.
//! Allowed numbers are mostly contiguous, so this program checks merged ranges instead:
//! two instructions per range, a few dozen ranges.

use seccompiler::sock_filter;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JGT_K: u16 = 0x25;
const RET_K: u16 = 0x06;

/// Offsets into `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low 32 bits of `args[0]` (little-endian targets only).
const ARG0_LOW: u32 = 16;
#[cfg(not(target_endian = "little"))]
compile_error!("the allowlist program reads args[0] with the little-endian layout");

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Merges sorted, deduplicated numbers into inclusive ranges.
fn ranges(sorted: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &n in sorted {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// A program that returns `allow` for the numbers in `allowed`, and for `socket` only when
/// its first argument is one of `families`; `deny` for everything else; and kills the
/// process for another architecture's calls.
pub fn allowlist(
    audit_arch: u32,
    allowed: &[i64],
    socket: i64,
    families: &[u64],
    allow: u32,
    deny: u32,
) -> Result<Vec<sock_filter>, String> {
    let mut numbers: Vec<u32> = allowed
        .iter()
        .filter(|&&n| n != socket)
        .map(|&n| n as u32)
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    let ranges = ranges(&numbers);
    // Jump offsets are 8 bits: every jump below stays within the range section.
    if ranges.len() > 120 || families.len() > 100 {
        return Err("the allowlist has too many ranges for one BPF program".into());
    }

    let mut p = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, audit_arch, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR),
    ];
    // socket: its own block, then deny.
    let block = families.len() as u8 + 3; // ld, the compares, ret deny, ret allow
    p.push(jump(JEQ_K, socket as u32, 0, block));
    p.push(stmt(LD_W_ABS, ARG0_LOW));
    for (i, &family) in families.iter().enumerate() {
        // On a match, jump over the remaining compares and the deny to the allow.
        let to_allow = (families.len() - i) as u8;
        p.push(jump(JEQ_K, family as u32, to_allow, 0));
    }
    p.push(stmt(RET_K, deny));
    p.push(stmt(RET_K, allow));

    // Ranges, ascending: below a range's start means denied (every lower range already
    // failed); within it, allowed; above it, on to the next range.
    let base = p.len();
    let deny_at = base + 2 * ranges.len();
    let allow_at = deny_at + 1;
    for (i, &(lo, hi)) in ranges.iter().enumerate() {
        let at = base + 2 * i;
        p.push(jump(JGE_K, lo, 0, (deny_at - (at + 1)) as u8));
        p.push(jump(JGT_K, hi, 0, (allow_at - (at + 2)) as u8));
    }
    p.push(stmt(RET_K, deny));
    p.push(stmt(RET_K, allow));
    Ok(p)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions above, over (arch, nr, arg0).
    pub fn eval(program: &[sock_filter], arch: u32, nr: u32, arg0: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &program[pc];
            let next = |taken: bool| pc + 1 + if taken { i.jt } else { i.jf } as usize;
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        NR => nr,
                        ARCH => arch,
                        ARG0_LOW => arg0,
                        other => panic!("load of offset {other}"),
                    };
                    pc += 1;
                }
                JEQ_K => pc = next(acc == i.k),
                JGE_K => pc = next(acc >= i.k),
                JGT_K => pc = next(acc > i.k),
                RET_K => return i.k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_program_decides_exactly_like_the_lists() {
        let allowed: Vec<i64> = vec![0, 1, 2, 3, 5, 9, 10, 11, 41, 60, 61, 200, 435];
        let socket = 41;
        let families = [1u64, 2, 10, 16];
        let (allow, deny) = (0x7fff_0000, 0x0005_0026);
        let p = allowlist(0xc000_003e, &allowed, socket, &families, allow, deny).unwrap();
        for nr in (0..600).chain([0x4000_0000, 0x4000_0001, u32::MAX]) {
            for arg0 in [0u32, 1, 2, 10, 16, 40, 17] {
                let want = if nr as i64 == socket {
                    families.contains(&(arg0 as u64))
                } else {
                    allowed.contains(&(nr as i64))
                };
                let got = eval(&p, 0xc000_003e, nr, arg0);
                assert_eq!(got, if want { allow } else { deny }, "nr {nr} arg0 {arg0}");
            }
        }
        assert_eq!(eval(&p, 0x4000_0003, 0, 0), libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(ranges(&[1, 2, 3, 7, 8, 10]), [(1, 3), (7, 8), (10, 10)]);
    }
}
