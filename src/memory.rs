//! Giving freed heap back to the operating system after a burst.
//!
//! glibc's allocator keeps the memory a burst freed (a thousand connections that trickled a
//! body, five thousand that each sent one request at once) as free chunks between the live ones
//! and gives back only what lies at the top of a heap: measured with `scripts/bench-overload`, 40
//! MiB stayed resident after 1,000 trickles had ended, 70 MiB after 5,000 clients fell idle.
//! jemalloc and mimalloc were measured too and held more at the peak (BENCHMARKS.md), so esgate
//! keeps glibc and asks it, from the helper thread, to return free pages (`malloc_trim`, which
//! walks every arena and releases whole free pages wherever they lie) once a second after
//! enough was freed. Nothing on a request's path waits for it: the hot path only adds to a
//! counter.

use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(feature = "server")]
use std::time::Duration;

/// Bytes freed since the last trim, as the places that free much note it (a parked or closed
/// connection, a buffered body given back): an estimate, only compared with [`TRIM_AFTER`].
static FREED: AtomicUsize = AtomicUsize::new(0);

#[cfg(feature = "server")]
/// How much must have been freed before a trim is worth its walk over the heap.
const TRIM_AFTER: usize = 4 << 20;

#[cfg(feature = "server")]
/// How often the helper thread looks.
const PERIOD: Duration = Duration::from_secs(1);

#[cfg(feature = "server")]
/// What hyper's buffers and the connection task of one client connection hold while it serves
/// (read and write buffers, the upstream connection's), and free when it is parked or closed.
pub(crate) const CONNECTION_BUFFERS: usize = 32 << 10;

/// Notes that about `bytes` of heap were just freed.
pub(crate) fn note_freed(bytes: usize) {
    FREED.fetch_add(bytes, Ordering::Relaxed);
}

#[cfg(feature = "server")]
/// Runs until `shutdown`: once a second, gives free heap back when enough was freed.
pub(crate) async fn give_back(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = ticks.tick() => {}
        }
        if FREED.load(Ordering::Relaxed) >= TRIM_AFTER {
            FREED.store(0, Ordering::Relaxed);
            trim();
        }
    }
}

/// Returns the free pages of every arena to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu", feature = "server"))]
#[allow(unsafe_code)]
fn trim() {
    extern "C" {
        /// glibc's `int malloc_trim(size_t pad)`.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` has no preconditions: it takes each arena's lock, as `malloc` does,
    // and only releases pages of free chunks. Its result says whether anything was released.
    let released = unsafe { malloc_trim(0) } != 0;
    tracing::trace!(released, "gave free heap back to the system");
}

/// Other allocators return memory on their own terms.
#[cfg(all(not(all(target_os = "linux", target_env = "gnu")), feature = "server"))]
fn trim() {}
