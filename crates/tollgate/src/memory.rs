//! The allocator's hand-back of freed memory (glibc): why Tollgate's resident memory returns to
//! its baseline after a burst of sign-ins or of large request heads.

/// Give large allocations back to the system when freed. Each password hash takes 19 MiB; glibc
/// otherwise raises its mmap threshold after the first one and keeps every such block in the
/// freeing thread's arena, so a burst of sign-ins leaves hundreds of MiB resident. Call at start-up.
pub(crate) fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
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
