//! The allocator's hand-back of freed memory (glibc): why Tollgate's resident memory returns to
//! its baseline after a burst of sign-ins or of large request heads.

/// Tune the allocator so that freed memory can go back to the system. Call at start-up.
/// - Large allocations are their own mappings, given back when freed. Each password hash takes
///   19 MiB; glibc otherwise raises its mmap threshold after the first one and keeps every such
///   block in the freeing thread's arena, so a burst of sign-ins leaves hundreds of MiB resident.
/// - One arena per serving thread (`serving_threads`, see `threads`) and one more, not glibc's
///   default of eight per core.
///   `malloc_trim` hands back free pages inside an arena's heap, but not the free space at the top
///   of the per-thread arenas' heaps: with the default, after 1,500 connections with large request
///   heads, up to 8 MiB stayed resident in them (1 run in 3). A single arena kept none, but the
///   serving threads then took turns on its lock: 2.7 futex calls per proxied request (glibc's
///   thread cache holds only 7 blocks of a size, which a request outruns). With one arena more
///   than there are serving threads, glibc (which hands the least busy arena to a thread once all
///   exist) seldom puts two serving threads on one: measured, no futex calls left, the gateway's
///   CPU per request from 44–60 to 35–48 µs and webhook intake's from 66 to 42–53 µs, and the
///   memory tests (`hostile.rs`) hold as with one arena.
pub(crate) fn tune_allocator(serving_threads: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, i32::try_from(serving_threads + 1).unwrap_or(i32::MAX));
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
