//! The policy's allocator inside its component: small allocations are
//! bumped from one arena, everything else goes to the standard allocator.
//!
//! Why: a policy instance lives for one call (the host makes a fresh one
//! per request and resets its memory after), and a call makes a few hundred
//! small allocations — the request's lists as the host lowers them, the
//! SDK's columns, the decisions, each debug value's name — that
//! wasm32-wasip2's allocator (dlmalloc) books one by one and the
//! post-return frees one by one. Here an allocation of up to
//! [`SMALL`] bytes is a pointer bump in an arena of [`ARENA`] bytes (taken
//! from the standard allocator at the first one), a free gives memory back
//! only when it is the last allocation (a stack's order: a temporary freed
//! before anything else was allocated), and a growing `Vec` that was the
//! last allocation grows in place. What the arena cannot serve (a larger
//! block, or any block once it is full) is the standard allocator's, as
//! before: a call never fails for the arena's sake, and at most [`ARENA`]
//! bytes of freed blocks wait for the instance's end. A reused instance
//! (`reuse_instance_calls` > 1) fills the arena once and then allocates as
//! before. Measured in BENCHMARKS.md (session 21).
//!
//! On by default for wasm32 builds (feature `call-arena`); a policy that
//! sets its own `#[global_allocator]` turns it off with
//! `default-features = false`. Native builds (unit tests) never use it.

use core::alloc::Layout;

/// Size of the arena, bytes: the small allocations of a call at a few
/// thousand candidates, well inside the 1 MiB initial heap the policies are
/// linked with (`.cargo/config.toml`), so taking it grows no memory.
pub const ARENA: usize = 256 << 10;

/// Largest allocation the arena serves, bytes; larger blocks (a request's
/// feature column at many candidates) go to the standard allocator.
pub const SMALL: usize = 16 << 10;

/// The arena's bookkeeping over addresses `[base, end)`: plain arithmetic,
/// tested natively; [`global`] applies it to memory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bump {
    base: usize,
    top: usize,
    end: usize,
}

impl Bump {
    /// No arena yet: serves nothing.
    pub const fn empty() -> Self {
        Bump {
            base: 0,
            top: 0,
            end: 0,
        }
    }

    /// Takes `[base, base + len)` as the arena.
    pub fn set(&mut self, base: usize, len: usize) {
        *self = Bump {
            base,
            top: base,
            end: base.saturating_add(len),
        };
    }

    /// Whether an arena was taken.
    pub fn is_set(&self) -> bool {
        self.end > self.base
    }

    /// The address of a block for `layout`, or `None` when the arena does
    /// not serve it (too large, or no room left).
    pub fn alloc(&mut self, layout: Layout) -> Option<usize> {
        if layout.size() > SMALL || !self.is_set() {
            return None;
        }
        let align = layout.align();
        let at = self.top.checked_add(align - 1)? & !(align - 1);
        let end = at.checked_add(layout.size())?;
        if end > self.end {
            return None;
        }
        self.top = end;
        Some(at)
    }

    /// Whether `addr` is in the arena (then only [`free`](Self::free) and
    /// [`resize`](Self::resize) may take it back).
    pub fn owns(&self, addr: usize) -> bool {
        addr >= self.base && addr < self.end
    }

    /// Frees the arena block at `addr` of `size` bytes: its room is given
    /// back if it is the last block, otherwise it waits for the instance's
    /// end.
    pub fn free(&mut self, addr: usize, size: usize) {
        if addr.checked_add(size) == Some(self.top) {
            self.top = addr;
        }
    }

    /// Resizes the arena block at `addr` from `old` to `new` bytes in
    /// place: always when it shrinks, when it grows only if it is the last
    /// block and the arena has the room. `false`: move it.
    pub fn resize(&mut self, addr: usize, old: usize, new: usize) -> bool {
        let last = addr.checked_add(old) == Some(self.top);
        if new <= old {
            if last {
                self.top = addr + new;
            }
            return true;
        }
        match addr.checked_add(new) {
            Some(end) if last && end <= self.end => {
                self.top = end;
                true
            }
            _ => false,
        }
    }
}

/// The global allocator of wasm32 builds (see the module docs).
#[cfg(all(target_arch = "wasm32", feature = "call-arena"))]
mod global {
    use super::{ARENA, Bump, SMALL};
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;
    use std::alloc::System;

    struct CallArena {
        bump: UnsafeCell<Bump>,
        /// Whether the arena was asked for (once: if the standard
        /// allocator could not give it, small blocks are its own).
        asked: UnsafeCell<bool>,
    }

    // SAFETY: a wasm32-wasip2 component instance runs one thread; nothing
    // touches the arena concurrently.
    unsafe impl Sync for CallArena {}

    #[global_allocator]
    static ALLOCATOR: CallArena = CallArena {
        bump: UnsafeCell::new(Bump::empty()),
        asked: UnsafeCell::new(false),
    };

    impl CallArena {
        /// The bookkeeping.
        ///
        /// # Safety
        /// One thread (see `Sync`), and no other reference to the
        /// bookkeeping alive.
        #[allow(clippy::mut_from_ref, reason = "one thread, one reference at a time")]
        unsafe fn bump(&self) -> &mut Bump {
            // SAFETY: the caller's.
            unsafe { &mut *self.bump.get() }
        }

        /// Takes the arena from the standard allocator, the first time a
        /// block it would serve is asked for.
        ///
        /// # Safety
        /// As [`bump`](Self::bump).
        unsafe fn take_arena(&self) {
            // SAFETY: the caller's.
            let asked = unsafe { &mut *self.asked.get() };
            if !*asked {
                *asked = true;
                // SAFETY: a valid, non-zero-sized layout.
                let base = unsafe { System.alloc(Layout::from_size_align_unchecked(ARENA, 16)) };
                if !base.is_null() {
                    // SAFETY: the caller's.
                    unsafe { self.bump() }.set(base as usize, ARENA);
                }
            }
        }
    }

    // SAFETY: arena blocks are disjoint ranges of one block the standard
    // allocator gave and never takes back; each is aligned as asked and
    // handed out once until freed; other blocks are the standard
    // allocator's, freed and resized by it.
    unsafe impl GlobalAlloc for CallArena {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY (all three): one thread; each reference to the
            // bookkeeping ends before the next is made.
            if layout.size() <= SMALL {
                unsafe { self.take_arena() };
            }
            match unsafe { self.bump() }.alloc(layout) {
                Some(addr) => addr as *mut u8,
                // SAFETY: the caller's layout, as `GlobalAlloc::alloc` takes it.
                None => unsafe { System.alloc(layout) },
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: one thread.
            let bump = unsafe { self.bump() };
            if bump.owns(ptr as usize) {
                bump.free(ptr as usize, layout.size());
            } else {
                // SAFETY: not the arena's, so the standard allocator's block.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: one thread.
            let bump = unsafe { self.bump() };
            if !bump.owns(ptr as usize) {
                // SAFETY: the standard allocator's block, the caller's sizes.
                return unsafe { System.realloc(ptr, layout, new_size) };
            }
            if bump.resize(ptr as usize, layout.size(), new_size) {
                return ptr;
            }
            // SAFETY: `new_size` with the block's alignment is the layout
            // `GlobalAlloc::realloc` promises valid.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: as `alloc`, then a copy between two live, disjoint
            // blocks of at least `min(old, new)` bytes, then the old freed.
            unsafe {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    core::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    fn arena() -> Bump {
        let mut b = Bump::empty();
        b.set(1000, 100);
        b
    }

    #[test]
    fn no_arena_serves_nothing() {
        assert_eq!(Bump::empty().alloc(layout(8, 8)), None);
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_bounded_by_the_arena() {
        let mut b = arena();
        assert_eq!(b.alloc(layout(3, 1)), Some(1000));
        // Aligned up past the first block.
        assert_eq!(b.alloc(layout(8, 8)), Some(1008));
        assert_eq!(b.alloc(layout(80, 4)), Some(1016));
        // 1096 + 8 > 1100: no room, the standard allocator's.
        assert_eq!(b.alloc(layout(8, 4)), None);
        assert_eq!(b.alloc(layout(4, 4)), Some(1096));
        assert!(b.owns(1099) && !b.owns(1100) && !b.owns(999));
    }

    #[test]
    fn large_blocks_are_not_the_arenas() {
        let mut b = Bump::empty();
        b.set(0x10000, 4 * SMALL);
        assert_eq!(b.alloc(layout(SMALL + 1, 8)), None);
        assert_eq!(b.alloc(layout(SMALL, 8)), Some(0x10000));
    }

    #[test]
    fn only_the_last_block_gives_its_room_back() {
        let mut b = arena();
        let x = b.alloc(layout(10, 1)).unwrap();
        let y = b.alloc(layout(10, 1)).unwrap();
        // Freed out of order: nothing comes back.
        b.free(x, 10);
        assert_eq!(b.alloc(layout(1, 1)), Some(1020));
        b.free(1020, 1);
        // The last one freed: its room is reused.
        b.free(y, 10);
        assert_eq!(b.alloc(layout(10, 1)), Some(y));
    }

    #[test]
    fn the_last_block_grows_in_place_others_move() {
        let mut b = arena();
        let x = b.alloc(layout(10, 1)).unwrap();
        assert!(b.resize(x, 10, 40), "last block grows");
        assert_eq!(b.alloc(layout(1, 1)), Some(1040));
        assert!(!b.resize(x, 40, 50), "no longer last: move");
        assert!(b.resize(x, 40, 20), "shrinks in place");
        let y = b.alloc(layout(1, 1)).unwrap();
        assert!(!b.resize(y, 1, 100), "past the arena's end: move");
        assert!(b.resize(y, 1, 59), "up to the end: in place");
        assert_eq!(b.alloc(layout(1, 1)), None, "full");
        // A shrinking last block gives its room back.
        assert!(b.resize(y, 59, 0));
        assert_eq!(b.alloc(layout(1, 1)), Some(y));
    }
}
