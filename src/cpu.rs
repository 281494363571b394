//! The CPU the calling thread runs on, as a shard hint for `sharded.rs`: read from
//! the rseq area glibc registers for every thread (one plain load beside the thread
//! pointer, kept current by the kernel), or from `sched_getcpu` where there is none.
//! Only a hint: a wrong or stale number costs contention, never correctness.

#[cfg(not(target_arch = "x86_64"))]
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{AtomicI64, Ordering};

/// `OFFSET` before the first look-up.
const UNKNOWN: i64 = i64::MIN;
/// No rseq area (glibc older than 2.35, or registration off or failed): use
/// `sched_getcpu`.
const NONE: i64 = i64::MIN + 1;

/// The rseq area's offset from the thread pointer (glibc's `__rseq_offset`, the
/// same for every thread of the process), or one of the markers above.
static OFFSET: AtomicI64 = AtomicI64::new(UNKNOWN);

/// The calling thread's CPU number.
#[inline]
pub(crate) fn current() -> usize {
    match rseq_current() {
        Some(cpu) => cpu,
        None => current_slow(),
    }
}

/// The calling thread's CPU number if the rseq area has it (one load beside the
/// thread pointer), else `None` (not looked up yet, or no area).
#[inline]
pub(crate) fn rseq_current() -> Option<usize> {
    // Relaxed: the offset is fixed for the process; any thread that reads a real
    // offset reads the one value ever stored there.
    let offset = OFFSET.load(Ordering::Relaxed);
    if offset <= NONE {
        return None;
    }
    // A thread whose registration failed reads a negative marker (-1 or -2), which is
    // still a hint: masked to the shard count, it names a shard like any number. So
    // no test here, on the path of every clone and drop.
    // SAFETY: a real offset was stored only after `look_up` found glibc's rseq area
    // registered (`__rseq_size` > 0), and glibc registers it for every thread it
    // starts, at that offset from the thread pointer, for the thread's whole life.
    Some(unsafe { rseq_cpu_id(offset) } as usize)
}

/// `current` without the rseq area: look it up the first time, else ask the kernel.
#[cold]
#[inline(never)]
fn current_slow() -> usize {
    // Relaxed: as in `rseq_current`.
    if OFFSET.load(Ordering::Relaxed) == UNKNOWN {
        look_up();
        return current();
    }
    sched_getcpu()
}

#[cold]
fn sched_getcpu() -> usize {
    // SAFETY: `sched_getcpu` only reads the calling thread's CPU number; -1 on
    // failure just picks the last shard.
    unsafe { libc::sched_getcpu() as usize }
}

/// Reads `cpu_id` (`struct rseq { u32 cpu_id_start; u32 cpu_id; .. }`).
///
/// # Safety
/// - `offset` is glibc's `__rseq_offset` and the rseq area is registered
///   (`__rseq_size` > 0).
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn rseq_cpu_id(offset: i64) -> u32 {
    let cpu: u32;
    // SAFETY: %fs's base is the thread pointer, so this is the same `cpu_id` read as
    // below, in one load relative to it (the caller's contract places the area).
    // The kernel rewrites it only while this thread is not running.
    unsafe {
        std::arch::asm!(
            "mov {cpu:e}, dword ptr fs:[{offset} + 4]",
            offset = in(reg) offset,
            cpu = out(reg) cpu,
            options(nostack, readonly, preserves_flags),
        );
    }
    cpu
}

/// As the x86_64 version, through the thread pointer.
///
/// # Safety
/// - As the x86_64 version.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
unsafe fn rseq_cpu_id(offset: i64) -> u32 {
    let area = thread_pointer().wrapping_offset(offset as isize);
    // The kernel rewrites `cpu_id` only while this thread is not running, so an
    // atomic view of it races with nothing.
    // SAFETY: the caller's contract puts this thread's registered `struct rseq` at
    // `area` (32-byte aligned, for the thread's life); `cpu_id` is its second `u32`.
    let cpu_id = unsafe { &*area.add(4).cast::<AtomicU32>() };
    // Relaxed: a hint, ordered against nothing.
    cpu_id.load(Ordering::Relaxed)
}

#[cfg(target_arch = "aarch64")]
#[inline]
fn thread_pointer() -> *const u8 {
    let tp: *const u8;
    // SAFETY: TPIDR_EL0 holds the thread pointer; reading it has no side effect.
    unsafe {
        std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags));
    }
    tp
}

/// Finds glibc's rseq registration once (`__rseq_offset`/`__rseq_size`, glibc 2.35+,
/// looked up at run time so that older glibc and other libcs still link).
#[cold]
fn look_up() {
    // Relaxed: every thread that races here stores the same value.
    OFFSET.store(rseq_offset().unwrap_or(NONE), Ordering::Relaxed);
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn rseq_offset() -> Option<i64> {
    // SAFETY: `dlsym` with a NUL-terminated name only looks the symbol up.
    let offset = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) };
    // SAFETY: as above.
    let size = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) };
    if offset.is_null() || size.is_null() {
        return None;
    }
    // SAFETY: glibc defines `__rseq_size` as `const unsigned int` and
    // `__rseq_offset` as `const ptrdiff_t`, both set before `main` and never
    // changed afterwards.
    let (offset, size) = unsafe { (*offset.cast::<isize>(), *size.cast::<u32>()) };
    (size > 0).then_some(offset as i64)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn rseq_offset() -> Option<i64> {
    None
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[allow(dead_code)]
fn thread_pointer() -> *const u8 {
    unreachable!("no rseq offset is ever stored on this architecture")
}

/// Where the CPU number comes from: the rseq area (`true`, the default when glibc
/// registered one) or `sched_getcpu` (`false`), so a benchmark can time both.
/// Returns whether the rseq area is in use afterwards.
pub(crate) fn use_rseq(rseq: bool) -> bool {
    let offset = if rseq {
        rseq_offset().unwrap_or(NONE)
    } else {
        NONE
    };
    // Relaxed: as in `look_up`.
    OFFSET.store(offset, Ordering::Relaxed);
    offset > NONE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rseq_cpu_number_is_the_one_sched_getcpu_reports() {
        let rseq = use_rseq(true);
        // Both read the CPU now; a migration between them is possible but rare, so
        // a few tries must agree at least once.
        let agree = (0..100).any(|_| current() == sched_getcpu());
        assert!(agree, "rseq in use: {rseq}");
        assert!(!use_rseq(false));
        assert!((0..100).any(|_| current() == sched_getcpu()));
        use_rseq(true);
    }
}
