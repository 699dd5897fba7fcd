//! Shutdown signals. The first SIGTERM or SIGINT starts a graceful shutdown; a second one
//! exits at once, for the operator who does not want to wait out the drain.

use tokio::signal::unix::{SignalKind, signal};

/// Exit status for a shutdown cut short by a second signal (128 + SIGINT, by convention).
const FORCED_EXIT_CODE: i32 = 130;

/// Resolves on the first SIGTERM or SIGINT, and arranges for a second one to exit the process.
pub async fn signal_received() {
    let (mut terminate, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(error = %err, "cannot listen for shutdown signals; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("received SIGTERM"),
        _ = interrupt.recv() => tracing::info!("received SIGINT"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::warn!("second shutdown signal: exiting now");
        std::process::exit(FORCED_EXIT_CODE);
    });
}
