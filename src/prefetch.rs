//! Cache prefetch hints for the delivery loops, which visit a different connection's memory at
//! every step: asking for the next connections' cache lines while the current one is handled
//! turns a chain of cache misses into overlapping ones.

/// Bytes per cache line on the CPUs tickfan runs on.
const CACHE_LINE_BYTES: usize = 64;

/// Asks the CPU to bring the first `bytes` bytes at `ptr` into its caches, without waiting
/// for them. A hint only: it reads nothing into the program and never faults, so a dangling
/// or stale pointer is allowed (the hint is then wasted). Does nothing on CPUs other than
/// x86_64.
#[inline(always)]
pub fn prefetch_bytes<T>(ptr: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // From the line that holds the first byte to the one that holds the last.
        let p = ptr.cast::<i8>();
        let first = p as usize % CACHE_LINE_BYTES;
        let mut off = 0;
        while off < first + bytes {
            // SAFETY: `_mm_prefetch` needs SSE, which is part of the x86_64 baseline every
            // x86_64 target enables. PREFETCHT0 is a hint: it does not read memory into
            // registers, raises no fault for any address, and changes no program state, so
            // any pointer (including a dangling one, hence `wrapping_add`) is sound.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).wrapping_sub(first)) };
            off += CACHE_LINE_BYTES;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ptr, bytes);
    }
}

/// [`prefetch_bytes`] over all of `value`.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    prefetch_bytes(value as *const T, std::mem::size_of::<T>());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_change_nothing_and_never_fault() {
        let big = [7u8; 1000];
        prefetch(&big);
        assert!(big.iter().all(|&b| b == 7));
        // A zero-capacity Vec's dangling pointer, a null pointer, and one far past the end.
        let empty: Vec<u64> = Vec::new();
        prefetch_bytes(empty.as_ptr(), 256);
        prefetch_bytes(std::ptr::null::<u8>(), 64);
        prefetch_bytes(big.as_ptr().wrapping_add(1 << 40), 128);
        prefetch(&());
        assert!(empty.is_empty());
    }
}
