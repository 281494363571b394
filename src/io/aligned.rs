//! [`AlignedBuf`]: a heap buffer whose address is a multiple of a chosen power of
//! two, for O_DIRECT reads and io_uring ops that need stable, aligned memory.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// A zero-filled, fixed-length byte buffer aligned to `align` bytes. Its address
/// never moves while it lives (moving the `AlignedBuf` moves only the handle), which
/// is what kernel-side users of the memory need.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    align: usize,
}

// SAFETY: the buffer is uniquely owned heap memory, like a `Box<[u8]>`; `&AlignedBuf`
// only gives `&[u8]`.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above: shared references allow reads only.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes at an address that is a multiple of `align`, or `None` when
    /// `align` is not a power of two or the size overflows.
    pub fn new(len: usize, align: usize) -> Option<AlignedBuf> {
        let layout = Layout::from_size_align(len, align).ok()?;
        if len == 0 {
            // A zero-sized allocation is not allowed; an aligned dangling pointer is
            // what `Vec` uses for the same case and is never dereferenced for reads
            // or writes of more than zero bytes.
            // Built without provenance (not an integer cast), so Miri's strict
            // provenance checking accepts it.
            let ptr = NonNull::new(std::ptr::null_mut::<u8>().wrapping_add(align))?;
            return Some(AlignedBuf { ptr, len, align });
        }
        // SAFETY: `layout` has a non-zero size (checked above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Some(AlignedBuf { ptr, len, align })
    }

    /// The alignment of the address.
    pub fn align(&self) -> usize {
        self.align
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address, for handing to the kernel; stable while `self` lives.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialized (zero-filled at allocation) bytes
        // owned by `self` (or is dangling with `len == 0`), and `&self` excludes
        // writers for the borrow's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: `ptr` came from `alloc_zeroed` with exactly this size and alignment
        // (checked valid in `new`), and is freed once, here.
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len, self.align),
            )
        }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("align", &self.align)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedBuf;

    #[test]
    fn addresses_are_aligned_and_memory_is_zeroed() {
        for align in [1, 512, 4096] {
            for len in [0, 1, 4096, 10_000] {
                let mut buf = AlignedBuf::new(len, align).unwrap();
                assert_eq!(buf.as_mut_ptr() as usize % align, 0);
                assert!(buf.iter().all(|&b| b == 0));
                buf.fill(7);
                assert_eq!(buf.len(), len);
            }
        }
        assert!(AlignedBuf::new(8, 3).is_none(), "not a power of two");
    }
}
