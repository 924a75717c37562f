//! The allocator's hand-back of freed memory (glibc): why Tollgate's resident memory returns to
//! its baseline after a burst of sign-ins or of large request heads.

/// Tune the allocator so that freed memory can go back to the system. Call at start-up.
/// - Large allocations are their own mappings, given back when freed. Each password hash takes
///   19 MiB; glibc otherwise raises its mmap threshold after the first one and keeps every such
///   block in the freeing thread's arena, so a burst of sign-ins leaves hundreds of MiB resident.
/// - One arena for all threads. `malloc_trim` hands back free pages inside an arena's heap, but
///   not the free space at the top of the per-thread arenas' heaps: after 1,500 connections with
///   large request heads, up to 8 MiB stayed resident in them (1 run in 3), against none with one
///   arena. Small allocations mostly come from each thread's cache, without the arena's lock.
pub(crate) fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Hand freed heap pages back to the system now (glibc keeps them in its arenas otherwise): the
/// accept loop calls it after connections close, so a burst of large request heads does not stay
/// resident.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
