//! Shutdown signals. The first SIGTERM or SIGINT starts a graceful shutdown; a second one
//! exits at once, for the operator who does not want to wait out the drain.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Exit status for a shutdown cut short by a second signal (128 + SIGINT, by convention).
const FORCED_EXIT_CODE: i32 = 130;

/// Installs the handlers now, so that a signal arriving before the returned future is first
/// polled is not lost (nor fatal: without a handler SIGTERM kills the process). The future
/// resolves on the first SIGTERM or SIGINT and arranges for a second one to exit the process.
/// Must be called inside a Tokio runtime.
pub fn signal_received() -> impl Future<Output = ()> {
    let handlers = signal(SignalKind::terminate())
        .and_then(|terminate| Ok((terminate, signal(SignalKind::interrupt())?)));
    async move {
        let (mut terminate, mut interrupt) = match handlers {
            Ok(handlers) => handlers,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for shutdown signals; stop with SIGKILL");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
        }
        tokio::spawn(exit_on_second_signal(terminate, interrupt));
    }
}

async fn exit_on_second_signal(mut terminate: Signal, mut interrupt: Signal) {
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::warn!("second shutdown signal: exiting now");
    exit_immediately(FORCED_EXIT_CODE);
}

/// Ends the process without running exit handlers. Inference can still be running inside ONNX
/// Runtime (or a loader thread inside session creation), and ONNX Runtime's C++ static
/// destructors, which `exit` runs, break it: in-flight requests were answered 500 and the
/// process could crash. Logs go to stderr, which is unbuffered; stdout is flushed first.
pub fn exit_immediately(status: i32) -> ! {
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: `_exit` only ends the process; nothing runs after it.
    unsafe { libc::_exit(status) }
}
