//! Graceful shutdown: SIGINT or SIGTERM cancels one root token, each task holds a child of it and
//! finishes its work (flush, write, commit); a second signal, or a grace period running out, ends
//! the process with a non-zero status.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit status when the process is stopped hard (second signal or grace timeout).
pub const HARD_STOP_STATUS: i32 = 130;

/// A root token cancelled by the first SIGINT or SIGTERM; the second one exits at once.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let root = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("Shutdown requested; finishing in-flight work (signal again to stop now).");
        root.cancel();
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::error!("Second signal; stopping without finishing in-flight work.");
        std::process::exit(HARD_STOP_STATUS);
    });
    Ok(token)
}

/// Runs `work` to its end, but once `shutdown` is cancelled gives it at most `grace` more.
///
/// # Errors
/// [`GraceExpired`] when the work did not finish within the grace period.
pub async fn with_grace<T>(
    work: impl Future<Output = T>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Result<T, GraceExpired> {
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => return Ok(done),
        () = shutdown.cancelled() => {}
    }
    tokio::time::timeout(grace, work)
        .await
        .map_err(|_| GraceExpired(grace))
}

/// The work did not finish within its grace period after shutdown was requested.
#[derive(Debug, thiserror::Error)]
#[error("work did not finish within the {0:?} grace period after shutdown was requested")]
pub struct GraceExpired(pub Duration);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_in_time_returns_its_result() {
        let token = CancellationToken::new();
        token.cancel();
        let work = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            7
        };
        assert_eq!(
            with_grace(work, &token, Duration::from_secs(5)).await.ok(),
            Some(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_grace_period_is_cut_off() {
        let token = CancellationToken::new();
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            cancel.cancel();
        });
        let work = std::future::pending::<()>();
        let err = with_grace(work, &token, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.0, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn work_runs_unbounded_until_shutdown() {
        let token = CancellationToken::new();
        let work = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "done"
        };
        assert_eq!(
            with_grace(work, &token, Duration::from_secs(1)).await.ok(),
            Some("done")
        );
    }
}
