//! The one job queue of a reproduction: training and analysis both hand their runs to
//! [`for_each_job`], which runs them `jobs` at a time on scoped threads.

use crate::train::TrainError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Calls `work(i)` for `i` in `0..n`, in order of `i`, on `jobs` threads (at least one, at
/// most `n`). After the first error, or once `stop` is set, no further item is started;
/// items already running finish. Returns the first error.
pub fn for_each_job(
    n: usize,
    jobs: usize,
    stop: &AtomicBool,
    work: impl Fn(usize) -> Result<(), TrainError> + Sync,
) -> Result<(), TrainError> {
    if n == 0 {
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    let failure = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, n) {
            scope.spawn(|| loop {
                if stop.load(Ordering::SeqCst) || failure.lock().expect("failure lock").is_some() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return;
                }
                if let Err(e) = work(i) {
                    failure.lock().expect("failure lock").get_or_insert(e);
                    return;
                }
            });
        }
    });
    match failure.into_inner().expect("failure lock") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_and_the_first_error_stops_the_queue() {
        let seen = Mutex::new(Vec::new());
        let never = AtomicBool::new(false);
        for_each_job(7, 3, &never, |i| {
            seen.lock().unwrap().push(i);
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        // One job: items after the failing one are never started.
        let started = AtomicUsize::new(0);
        let err = for_each_job(5, 1, &never, |i| {
            started.fetch_add(1, Ordering::SeqCst);
            if i == 2 {
                Err(TrainError::Invalid("item 2".into()))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            TrainError::Invalid("item 2".into()).to_string()
        );
        assert_eq!(started.load(Ordering::SeqCst), 3);
        // A stop before the start runs nothing.
        let stopped = AtomicBool::new(true);
        for_each_job(4, 2, &stopped, |_| panic!("started after stop")).unwrap();
    }
}
