//! The kernels' thread pool: how many threads the CPU kernels use, and
//! running work on them. The trainer sets the count once (`--threads`) and
//! uses the same pool for its host-side optimiser and sampler.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
///
/// While `f` runs, the pool's other threads poll for work instead of
/// sleeping (unless turned off: [`set_keep_awake`]).
pub fn run_inside<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if threads() == 1 || rayon::current_thread_index().is_some() {
        return f();
    }
    let awake = || with_others_awake(f);
    if threads() == rayon::current_num_threads() {
        rayon::scope(|_| awake())
    } else {
        pool().install(awake)
    }
}

/// Whether [`run_inside`] keeps the pool's other threads polling (on, unless
/// the run's device is not the CPU: [`set_keep_awake`]).
static KEEP_AWAKE: AtomicBool = AtomicBool::new(true);

/// Whether [`run_inside`] keeps the pool's other threads polling for work
/// while it runs: the CLI turns it off for a GPU device, whose runs have no
/// CPU regions to wait for.
pub fn set_keep_awake(on: bool) {
    KEEP_AWAKE.store(on, Ordering::Relaxed);
}

/// Runs `f` on this pool thread while the pool's other threads poll for
/// work ([`keep_awake`]) instead of sleeping.
///
/// A rayon thread with nothing to do yields its core for 32 rounds and
/// then sleeps on a futex, and waking it costs the waker a system call and
/// the woken thread a scheduler round (an inter-processor interrupt
/// through the hypervisor on these virtual machines): longer than a
/// 64-unit model's part of a region takes, so the caller ran both parts
/// itself and paid the wake-up on top (two threads slower than one, 16%
/// of the samples in `futex_wake`). Spinning between regions is what the
/// OpenMP runtimes under PyTorch and TensorFlow do too. Not with more
/// threads than cores, where a poller would take the core of a thread
/// with work.
///
/// Why a poller never sits on top of `f`'s own frames: the pollers are
/// pushed onto this thread's queue before `f` makes any job, and other
/// threads steal from a queue oldest first, so a thread that holds one of
/// `f`'s jobs took every poller off the queue before it; only this thread,
/// waiting inside a region of `f`, can pop a poller, and that poller
/// returns at once. A side job of [`with_side_job`] is one of `f`'s jobs
/// like a region's parts, under the same argument. This assumes one
/// `run_inside` at a time on the pool (the CLI runs one training or
/// evaluation): a job of another caller that stole a poller while waiting
/// would stay under it until `f` ends.
fn with_others_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    /// Ends the polling when `f` returns or unwinds (else the scope
    /// would wait for the pollers forever).
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let others = rayon::current_num_threads().saturating_sub(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !KEEP_AWAKE.load(Ordering::Relaxed) || others + 1 > cores {
        return f();
    }
    let done = AtomicBool::new(false);
    let started = AtomicUsize::new(0);
    let poll = Poll {
        done: &done,
        started: &started,
        others,
        owner: rayon::current_thread_index(),
    };
    rayon::scope(|s| {
        let _done = Done(&done);
        for _ in 0..others {
            s.spawn(|_| keep_awake(&poll));
        }
        f()
    })
}

/// What the pollers of one [`with_others_awake`] share.
struct Poll<'a> {
    /// Set when the caller's work has ended.
    done: &'a AtomicBool,
    /// Pollers that have started (or returned at once, on the caller's thread).
    started: &'a AtomicUsize,
    /// Pollers spawned.
    others: usize,
    /// The caller's thread in the pool.
    owner: Option<usize>,
}

/// Polls the pool for work until `done`: runs what the caller's regions
/// hand out as soon as it is there. After 2 ms without work it gives its
/// core to any other runnable thread between polls, after 100 ms it naps
/// 1 ms between polls and after 1 s 10 ms (a validation pass, a checkpoint
/// being written: no region to wait for).
fn keep_awake(poll: &Poll<'_>) {
    use std::time::{Duration, Instant};
    poll.started.fetch_add(1, Ordering::AcqRel);
    if rayon::current_thread_index() == poll.owner {
        // taken by the caller's own thread while it waited in a region:
        // polling here would hold up the caller's frame beneath it
        return;
    }
    // Until every poller has a thread, a poll could steal the next
    // poller and leave a thread asleep: wait for the others (1 ms at most).
    let start = Instant::now();
    while poll.started.load(Ordering::Acquire) < poll.others
        && start.elapsed() < Duration::from_millis(1)
    {
        std::hint::spin_loop();
    }
    let mut idle_since = Instant::now();
    while !poll.done.load(Ordering::Acquire) {
        if let Some(rayon::Yield::Executed) = rayon::yield_now() {
            idle_since = Instant::now();
            continue;
        }
        let idle = idle_since.elapsed();
        if idle < Duration::from_millis(2) {
            std::hint::spin_loop();
        } else if idle < Duration::from_millis(100) {
            std::thread::yield_now();
        } else if idle < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs `main` on this thread and `side` on another kernel thread when the
/// pool has one (`side` waits in this thread's queue for a thread that polls
/// for work, as a region's parts do; a step's regions still find every other
/// thread once `side` is done); on one thread, or outside the pool, `side`
/// runs here after `main`. For work that can overlap a training step, such
/// as making the next batch.
pub fn with_side_job<A, B: Send>(
    main: impl FnOnce() -> A,
    side: impl FnOnce() -> B + Send,
) -> (A, B) {
    if threads() == 1 || rayon::current_thread_index().is_none() {
        let a = main();
        return (a, side());
    }
    let mut b = None;
    let a = rayon::in_place_scope(|s| {
        s.spawn(|_| b = Some(side()));
        main()
    });
    (a, b.expect("a scope ends after its jobs"))
}

/// Runs `f` on every item on the kernel pool, results in order.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    if items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    on_pool(|| items.par_iter().map(&f).collect())
}

/// [`parallel_map`] on items it takes: each `f` owns its item.
pub fn parallel_map_owned<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    if items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    on_pool(|| items.into_par_iter().map(&f).collect())
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

/// `f(first row, rows)` on blocks of `block` rows of `out` (`width`
/// values a row), over the threads; nothing for an empty `out`.
///
/// # Panics
/// On a non-empty `out` with `width` or `block` zero.
pub fn for_row_blocks(
    out: &mut [f32],
    width: usize,
    block: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if out.is_empty() {
        return;
    }
    assert!(
        width > 0 && block > 0,
        "rows of no values, or blocks of no rows"
    );
    let mut blocks: Vec<(usize, &mut [f32])> = out.chunks_mut(block * width).enumerate().collect();
    parallel_for_each_mut(&mut blocks, |(k, rows)| f(*k * block, rows));
}

/// A vector of `rows` rows of `width` values, written block by block of
/// `block` rows by `write(first row, rows)` over the threads, with
/// capacity for `spare` values more: each value is written once, where a
/// `vec![0.0; n]` first is a `memset` of all of them (a buffer of 1 MB to
/// 30 MB written again right after, in most steps of every recipe).
///
/// # Safety
/// `write` initializes every value of the rows it is given.
///
/// # Panics
/// On values to write in blocks of no rows, or a size past `usize`.
pub unsafe fn written_row_blocks(
    rows: usize,
    width: usize,
    block: usize,
    spare: usize,
    write: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let len = rows
        .checked_mul(width)
        .expect("a buffer's size overflows usize");
    let mut out: Vec<f32> = Vec::with_capacity(
        len.checked_add(spare)
            .expect("a buffer's size overflows usize"),
    );
    if len > 0 {
        assert!(block > 0, "blocks of no rows");
        let mut blocks: Vec<(usize, &mut [MaybeUninit<f32>])> = out.spare_capacity_mut()[..len]
            // whole rows, a block at most all of them (no product past `len`)
            .chunks_mut(block.min(rows) * width)
            .enumerate()
            .collect();
        parallel_for_each_mut(&mut blocks, |(k, rows)| write(*k * block, rows));
    }
    // SAFETY: the blocks cover the first `len` values, and `write`
    // initialized each (the caller's promise)
    unsafe { out.set_len(len) };
    out
}

/// `out` as written values.
///
/// # Safety
/// Every value of `out` is initialized.
pub(super) unsafe fn assume_written(out: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: MaybeUninit<f32> has f32's layout; the values are initialized
    unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `out` with every value written 0.
pub(super) fn zeroed(out: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    out.fill(MaybeUninit::new(0.0));
    // SAFETY: every value written just above
    unsafe { assume_written(out) }
}

/// Held by the tests that change the thread count (tests run in parallel).
#[cfg(test)]
pub(crate) static TEST_THREAD_COUNT: Mutex<()> = Mutex::new(());

/// [`TEST_THREAD_COUNT`] held by a test, which sets the count back to one
/// when dropped, also when an assertion fails.
#[cfg(test)]
pub(crate) struct TestThreads(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

#[cfg(test)]
impl TestThreads {
    pub(crate) fn lock() -> Self {
        TestThreads(TEST_THREAD_COUNT.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
impl Drop for TestThreads {
    fn drop(&mut self) {
        set_threads(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each block is given its first row and whole rows, the last one
    /// shorter; the vector holds the rows in order, with the spare
    /// capacity asked, on one thread and on two; no rows, no blocks.
    #[test]
    fn written_row_blocks_cover_every_row_once() {
        let _threads = TestThreads::lock();
        for threads in [1, 2] {
            set_threads(threads);
            let (rows, width, block) = (11, 3, 4);
            // SAFETY: each row is written whole
            let v = unsafe {
                written_row_blocks(rows, width, block, 5, |r0, out| {
                    assert!(r0 % block == 0 && out.len() == width * block.min(rows - r0));
                    for (i, x) in out.iter_mut().enumerate() {
                        x.write((r0 * width + i) as f32);
                    }
                })
            };
            let want: Vec<f32> = (0..rows * width).map(|i| i as f32).collect();
            assert_eq!(v, want, "{threads} threads");
            assert!(v.capacity() >= rows * width + 5);
            // SAFETY: no block to write
            let none = unsafe {
                written_row_blocks(0, width, block, 0, |_, _| panic!("a block of no rows"))
            };
            assert!(none.is_empty());
        }
    }

    /// `with_side_job` returns both results on one thread and on two, from
    /// inside the pool and from outside it; on two threads inside the pool
    /// `side` runs while `main` still runs (`main` waits up to 10 s for a
    /// flag `side` sets), and a panic in `side` reaches the caller. A hang
    /// fails after 60 s.
    #[test]
    fn side_jobs_overlap_and_return_both_results() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};
        let _threads = TestThreads::lock();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let items: Vec<u64> = (0..1000).collect();
            let main = || parallel_map(&items, |x| x * 3).iter().sum::<u64>();
            let side = || (0..1000u64).map(|x| x * x).sum::<u64>();
            let mut results = Vec::new();
            for n in [1, 2] {
                set_threads(n);
                results.push((n, "outside", with_side_job(main, side)));
                results.push((n, "inside", run_inside(|| with_side_job(main, side))));
            }
            let flag = AtomicBool::new(false);
            let wait_for_side = || {
                let start = Instant::now();
                while !flag.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(10) {
                    std::hint::spin_loop();
                }
                flag.load(Ordering::Acquire)
            };
            let set_flag = || flag.store(true, Ordering::Release);
            let overlapped = run_inside(|| with_side_job(wait_for_side, set_flag)).0;
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_inside(|| with_side_job(|| 1, || panic!("in the side job")))
            }))
            .is_err();
            tx.send((results, overlapped, panicked))
                .expect("test waits");
        });
        let (results, overlapped, panicked) = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("with_side_job did not return: {e}"));
        let want = (3 * 999 * 1000 / 2, 999 * 1000 * 1999 / 6);
        for (n, place, got) in results {
            assert_eq!(got, want, "{n} threads, {place} the pool");
        }
        assert!(overlapped, "on two threads the side job ran while main ran");
        assert!(panicked, "the side job's panic reaches the caller");
    }

    /// `run_inside` on two threads (pollers on, where the machine has two
    /// cores) and three, from outside the pool, with a region inside; and
    /// again with a panic: both return (the pollers stop when the work
    /// ends, by return or by unwinding). A hang fails after 60 s.
    #[test]
    fn run_inside_ends_its_pollers_on_return_and_on_panic() {
        let _threads = TestThreads::lock();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for n in [2, 3] {
                set_threads(n);
                let items: Vec<usize> = (0..64).collect();
                let doubled = run_inside(|| {
                    assert!(rayon::current_thread_index().is_some(), "on a pool thread");
                    parallel_map(&items, |x| 2 * x)
                });
                let unwound = std::panic::catch_unwind(|| run_inside(|| panic!("in the work")));
                tx.send((n, doubled, unwound.is_err())).expect("test waits");
            }
        });
        for n in [2, 3] {
            let (got, doubled, unwound) = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("run_inside on {n} threads did not return: {e}"));
            assert_eq!(got, n);
            assert_eq!(doubled, (0..64).map(|x| 2 * x).collect::<Vec<_>>());
            assert!(unwound, "the panic reaches the caller");
        }
    }
}
