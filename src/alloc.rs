//! The global allocator: mimalloc, called the way its size classes allow.
//!
//! The `mimalloc` crate's `GlobalAlloc` hands every request to
//! `mi_malloc_aligned`, also when the alignment asked for is one every
//! block of the size already has. mimalloc 3 serves that from its fast path
//! only for blocks of at most 1 KiB whose next free block happens to be
//! aligned; any larger request whose size class is not a power of two (a
//! 16 KiB read buffer's is, a 1.5 KiB head's or a 20 KiB one's is not)
//! falls through `mi_theap_malloc_zero_aligned_at_generic` into the
//! over-allocating path, about 190 instructions more per allocation
//! (callgrind: four such allocations per proxied request, 3.3% of its
//! instructions; benches/README.md, "Sixteenth session"). The crate's own
//! pull request to do what this module does (purpleprotocol/mimalloc_rust
//! #170) is not merged.
//!
//! The rule: every mimalloc block is a multiple of 8 bytes from a page
//! whose first block is 16-aligned (`MI_PAGE_MIN_START_BLOCK_ALIGN`), in
//! every build of it (padding, as its debug and secure builds add, is also
//! a multiple of 8). So a request aligned to at most 8 (nearly all: bytes,
//! pointers, integers) gets an aligned block from the plain `mi_malloc`,
//! `mi_zalloc` and `mi_realloc`. Larger alignments still go to the
//! `_aligned` functions: 16 would be safe for sizes that are multiples of
//! 16 only while no padding is added, and such requests are rare here.
//! `mi_free` frees both kinds.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc as the global allocator (see the module's doc).
pub struct Mimalloc;

/// Whether mimalloc's plain functions give a block aligned as `align`
/// asks, whatever its size.
#[inline]
fn natural(align: usize) -> bool {
    align <= 8
}

// SAFETY: every block comes from mimalloc, which is thread-safe; a block
// is aligned as its layout asks (the module's doc says why the plain
// functions give that where `natural` says so); `mi_free` and the realloc
// functions take blocks from either kind of allocation.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions accept any size.
        unsafe {
            if natural(layout.align()) {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if natural(layout.align()) {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps `layout.align()`.
        unsafe {
            if natural(layout.align()) {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes around every size class boundary up to 256 KiB, with every
    /// alignment up to 4 KiB: each block is aligned as asked, holds its
    /// bytes, and keeps them (and its alignment) through a realloc that
    /// grows it and one that shrinks it.
    #[test]
    fn every_block_is_aligned_as_asked_and_keeps_its_bytes() {
        let mut sizes = vec![1usize, 2, 3, 7, 8, 9, 15, 16, 17, 23, 24, 25, 40, 48, 56];
        let mut s = 64;
        while s <= 256 * 1024 {
            sizes.extend([s - 8, s - 1, s, s + 1, s + 8, s + s / 4, s + s / 2]);
            s *= 2;
        }
        for &size in &sizes {
            for shift in 0..=12 {
                let align = 1usize << shift;
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: non-zero sizes; each block is freed with the
                // layout it has.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    for i in 0..size {
                        *p.add(i) = i as u8;
                    }
                    let bigger = size * 3 + 5;
                    let q = Mimalloc.realloc(p, layout, bigger);
                    assert_eq!(q as usize % align, 0, "realloc to {bigger}, align {align}");
                    assert!((0..size).all(|i| *q.add(i) == i as u8));
                    let smaller = size.div_ceil(2);
                    let grown = Layout::from_size_align(bigger, align).unwrap();
                    let r = Mimalloc.realloc(q, grown, smaller);
                    assert_eq!(r as usize % align, 0, "realloc to {smaller}, align {align}");
                    assert!((0..smaller).all(|i| *r.add(i) == i as u8));
                    Mimalloc.dealloc(r, Layout::from_size_align(smaller, align).unwrap());

                    let z = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed size {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
