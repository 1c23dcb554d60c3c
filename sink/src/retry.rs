//! Retries of database work with the settings' backoff, shared by the planner's DDL (in the
//! consumer loop) and the write stage: consumption is held while the database is retried.

use backon::BackoffBuilder;
use marketflow_core::metric;
use tokio_util::sync::CancellationToken;

use crate::error::ConsumeError;
use crate::settings::Settings;
use crate::stats::{Board, State};
use crate::writer::WriteError;

/// Retries of work that fails while the database is unavailable, with the settings' backoff:
/// `hold(true)` before the first retry and `hold(false)` once through, the board showing
/// `backing_off` meanwhile.
///
/// ```ignore
/// let mut retry = Retry::new(&settings, &board, &shutdown);
/// let done = loop {
///     match work().await {
///         Ok(done) => break retry.through(hold, done),
///         Err(e) => retry.wait(hold, e).await?,
///     }
/// };
/// ```
pub(crate) struct Retry<'a> {
    board: &'a Board,
    shutdown: &'a CancellationToken,
    delays: backon::ExponentialBackoff,
    retries: usize,
}

impl<'a> Retry<'a> {
    /// No retry made yet.
    pub(crate) fn new(
        settings: &Settings,
        board: &'a Board,
        shutdown: &'a CancellationToken,
    ) -> Self {
        Self {
            board,
            shutdown,
            delays: settings.backoff().build(),
            retries: 0,
        }
    }

    /// The work went through: `done`, after resuming consumption if it was held.
    pub(crate) fn through<T>(&mut self, hold: &mut (dyn FnMut(bool) + Send), done: T) -> T {
        if self.retries > 0 {
            hold(false);
            tracing::info!(
                retries = self.retries,
                "Database back; consumption resumed."
            );
            let mut status = self.board.lock();
            status.last_error = None;
            status.state = State::Running;
            self.retries = 0;
        }
        done
    }

    /// The work failed with `error`: waits before the next attempt if it is worth one.
    ///
    /// # Errors
    /// [`ConsumeError::GaveUp`] after the last retry or at shutdown, [`ConsumeError::Database`]
    /// when retrying cannot help.
    pub(crate) async fn wait(
        &mut self,
        hold: &mut (dyn FnMut(bool) + Send),
        error: WriteError,
    ) -> Result<(), ConsumeError> {
        let e = match error {
            WriteError::Transient(e) => e,
            WriteError::Fatal(e) => return Err(ConsumeError::Database(e)),
        };
        self.board.lock().last_error = Some(e.to_string());
        let Some(delay) = self.delays.next() else {
            return Err(ConsumeError::GaveUp {
                retries: self.retries,
                last: e.to_string(),
            });
        };
        if self.retries == 0 {
            hold(true);
            self.board.set_state(State::BackingOff);
        }
        self.retries += 1;
        metrics::counter!(metric::sink::DB_RETRIES).increment(1);
        tracing::warn!(error = %e, retry = self.retries, ?delay, "Database write failed; consumption paused, retrying.");
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.shutdown.cancelled() => Err(ConsumeError::GaveUp {
                retries: self.retries,
                last: format!("shutdown while retrying: {e}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use marketflow_core::Config;

    use super::*;
    use crate::db::DbError;

    fn settings(retries: usize) -> Settings {
        let mut config = Config::default();
        config.sink.max_retries = retries;
        config.sink.retry_backoff = Duration::from_millis(100);
        config.sink.retry_backoff_max = Duration::from_millis(100);
        Settings::parse(&config).unwrap()
    }

    fn unavailable() -> WriteError {
        WriteError::Transient(DbError::Transient("connection refused".into()))
    }

    #[tokio::test(start_paused = true)]
    async fn consumption_is_held_while_retrying_and_released_once_through() {
        let (settings, board, shutdown) = (settings(3), Board::new("g"), CancellationToken::new());
        let mut held = Vec::new();
        let mut hold = |on: bool| held.push(on);
        let mut retry = Retry::new(&settings, &board, &shutdown);
        retry.wait(&mut hold, unavailable()).await.unwrap();
        assert_eq!(board.snapshot().state, State::BackingOff);
        retry.wait(&mut hold, unavailable()).await.unwrap();
        assert_eq!(retry.through(&mut hold, 7), 7);
        assert_eq!(board.snapshot().state, State::Running);
        assert_eq!(board.snapshot().last_error, None);
        // Held once however many retries, released once.
        assert_eq!(held, [true, false]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_retry_gives_up_and_a_fatal_error_is_not_retried() {
        let (settings, board, shutdown) = (settings(1), Board::new("g"), CancellationToken::new());
        let mut hold = |_: bool| {};
        let mut retry = Retry::new(&settings, &board, &shutdown);
        retry.wait(&mut hold, unavailable()).await.unwrap();
        let gave_up = retry.wait(&mut hold, unavailable()).await.unwrap_err();
        assert!(
            matches!(gave_up, ConsumeError::GaveUp { retries: 1, .. }),
            "{gave_up}"
        );
        let mut retry = Retry::new(&settings, &board, &shutdown);
        let fatal = retry
            .wait(&mut hold, WriteError::Fatal("no such table".into()))
            .await
            .unwrap_err();
        assert!(matches!(fatal, ConsumeError::Database(_)), "{fatal}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_retry_wait() {
        let (settings, board, shutdown) = (settings(5), Board::new("g"), CancellationToken::new());
        shutdown.cancel();
        let mut retry = Retry::new(&settings, &board, &shutdown);
        let err = retry.wait(&mut |_| {}, unavailable()).await.unwrap_err();
        assert!(err.to_string().contains("shutdown while retrying"), "{err}");
    }
}
