//! The kernels' thread pool: how many threads the CPU kernels use, and
//! running work on them. The trainer sets the count once (`--threads`) and
//! uses the same pool for its host-side optimiser and sampler.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

static THREADS: AtomicUsize = AtomicUsize::new(1);
static POOL: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

/// Sets how many threads the sequence kernels may use (at least 1).
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// How many threads the sequence kernels may use.
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// The kernels' thread pool, of [`threads`] threads (kept across calls: a
/// step spends tens of microseconds per part, too little to start threads for).
fn pool() -> Arc<rayon::ThreadPool> {
    let n = threads();
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    match &*guard {
        Some((k, p)) if *k == n => p.clone(),
        _ => {
            let p = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("charlstm-kernel-{i}"))
                    .build()
                    .expect("kernel thread pool"),
            );
            *guard = Some((n, p.clone()));
            p
        }
    }
}

/// Runs `f` on the kernel threads: Burn's global pool when it has the asked
/// size (which Burn's flex backend uses for its own threaded operations: two
/// pools on the same cores would have their idle workers spinning against
/// each other), else the kernels' own pool.
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if threads() == rayon::current_num_threads() {
        f()
    } else {
        pool().install(f)
    }
}

/// Runs `f` on a thread of the kernels' pool (Burn's global one when it has
/// the asked size, as for every parallel region), so
/// that the parallel regions inside it split their work by stealing: the
/// calling thread runs one part and one other thread wakes for the other.
/// Called from outside the pool, every region instead hands all its parts
/// to the pool's threads and waits for them: two wake-ups and a hand-back
/// per region, more than a 64-unit model's parts take to compute.
pub fn run_inside<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if threads() == 1 || rayon::current_thread_index().is_some() {
        return f();
    }
    if threads() == rayon::current_num_threads() {
        rayon::scope(|_| f())
    } else {
        pool().install(f)
    }
}

/// Runs `f` on every item on the kernel pool, results in order.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    if items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    on_pool(|| items.par_iter().map(&f).collect())
}

/// Runs `f` on every item, mutably, on the kernel pool (as [`parallel_map`]).
pub fn parallel_for_each_mut<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync + Send) {
    use rayon::prelude::*;
    if items.len() <= 1 || threads() == 1 {
        items.iter_mut().for_each(f);
    } else {
        on_pool(|| items.par_iter_mut().for_each(&f));
    }
}

/// Held by the tests that change the thread count (tests run in parallel).
#[cfg(test)]
pub(crate) static TEST_THREAD_COUNT: Mutex<()> = Mutex::new(());
