//! The one way the workspace takes a `std::sync::Mutex`: a poisoned lock is taken over, not
//! turned into a panic.
//!
//! A lock is poisoned when a thread panicked while holding it. Turning that into a second panic
//! (`lock().unwrap()`) would take down the thread that only wanted to read a status, fill a cache
//! or record an error, often a librdkafka callback thread where a panic aborts the process, and
//! would hide the first panic behind the second. What these locks guard is plain data each update
//! leaves whole at every step (a cache map, a status, a slot for the first error, the next free
//! rate-limit slot), or state whose owner stops on the panic itself (a stage's engine, whose
//! panic ends the stage and whose state is then restored from Kafka); so the data is used as it
//! is. A lock guarding an invariant a half-done update could break must not use this.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking a poisoned lock over (see the module's documentation for why).
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_taken_over_with_its_data() {
        let mutex = Mutex::new(vec![1]);
        let poisoned = std::panic::catch_unwind(|| {
            let mut guard = mutex.lock().unwrap();
            guard.push(2);
            panic!("a panic while holding the lock");
        });
        assert!(poisoned.is_err());
        assert!(mutex.is_poisoned());
        lock(&mutex).push(3);
        assert_eq!(*lock(&mutex), vec![1, 2, 3]);
    }
}
