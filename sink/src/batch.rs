//! The batch: records gathered until it holds `batch_size` of them or its first one is
//! `batch_max_age` old, whichever comes first.

use std::time::Duration;

use tokio::time::Instant;

/// Records waiting to be written together.
#[derive(Debug)]
pub struct Batch<T> {
    items: Vec<T>,
    size: usize,
    max_age: Duration,
    opened: Option<Instant>,
}

impl<T> Batch<T> {
    /// An empty batch that is due at `size` items or `max_age` after its first.
    pub fn new(size: usize, max_age: Duration) -> Self {
        Self {
            items: Vec::with_capacity(size),
            size: size.max(1),
            max_age,
            opened: None,
        }
    }

    /// Adds an item; returns whether the batch is now full.
    pub fn push(&mut self, item: T) -> bool {
        if self.items.is_empty() {
            self.opened = Some(Instant::now());
        }
        self.items.push(item);
        self.is_full()
    }

    /// Whether it holds `size` items.
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.size
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many items it holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// When the batch is due by age; `None` while it is empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|opened| opened + self.max_age)
    }

    /// Whether it is full or old enough to be written.
    #[cfg(test)]
    pub fn is_due(&self) -> bool {
        self.is_full() || self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Waits until the batch is due by age; never returns while it is empty.
    #[cfg(test)]
    pub async fn expired(&self) {
        match self.deadline() {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }

    /// Empties the batch, returning its items.
    pub fn take(&mut self) -> Vec<T> {
        self.opened = None;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.size))
    }

    /// Keeps only the items `keep` says yes to (e.g. of partitions still assigned).
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.items.retain(keep);
        if self.items.is_empty() {
            self.opened = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_due_when_full() {
        let mut batch = Batch::new(3, Duration::from_secs(60));
        assert!(!batch.push(1));
        assert!(!batch.push(2));
        assert!(!batch.is_due());
        assert!(batch.push(3));
        assert!(batch.is_due());
        assert_eq!(batch.take(), [1, 2, 3]);
        assert!(batch.is_empty());
        assert_eq!(batch.deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_due_when_its_first_item_is_old_enough() {
        let mut batch = Batch::new(100, Duration::from_millis(500));
        let start = Instant::now();
        batch.push("a");
        tokio::time::advance(Duration::from_millis(300)).await;
        batch.push("b");
        assert!(!batch.is_due());
        batch.expired().await;
        // Due 500 ms after the first item, not the last.
        assert_eq!(Instant::now() - start, Duration::from_millis(500));
        assert!(batch.is_due());
        assert_eq!(batch.take(), ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_batch_never_expires() {
        let batch: Batch<u8> = Batch::new(10, Duration::from_millis(10));
        let waited = tokio::time::timeout(Duration::from_secs(3600), batch.expired()).await;
        assert!(waited.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_age_clock_restarts_with_the_next_batch() {
        let mut batch = Batch::new(100, Duration::from_secs(1));
        batch.push(1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(batch.is_due());
        batch.take();
        batch.push(2);
        assert!(!batch.is_due());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(batch.is_due());
        batch.retain(|_| false);
        assert_eq!(batch.deadline(), None);
    }
}
