//! Download progress: a progress bar when stderr is a terminal, otherwise a log line every few
//! seconds (so that `kubectl logs` of an init container shows a large download advancing), and
//! the fetch metrics.

use std::{io::IsTerminal, sync::Mutex, time::Duration};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use metrics::Counter;
use tokio::time::Instant;

use crate::metrics::ModelLabels;

const LOG_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    state: Mutex<State>,
    bytes_counter: Counter,
}

struct State {
    done: u64,
    started: Instant,
    last_logged: Instant,
}

impl Progress {
    pub(crate) fn new(labels: &ModelLabels, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(format!("fetching {} {}", labels.model, labels.version));
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            total,
            state: Mutex::new(State {
                done: 0,
                started: now,
                last_logged: now,
            }),
            bytes_counter: labels.fetch_bytes(),
        }
    }

    /// Counts `bytes` received from the network.
    pub(crate) fn received(&self, bytes: u64) {
        self.bytes_counter.increment(bytes);
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.done += bytes;
        if let Some(bar) = &self.bar {
            bar.set_position(state.done);
            return;
        }
        if state.last_logged.elapsed() >= LOG_INTERVAL {
            state.last_logged = Instant::now();
            let seconds = state.started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(
                bytes = state.done,
                total = self.total,
                percent = (100.0 * state.done as f64 / self.total.max(1) as f64)
                    .min(100.0)
                    .round(),
                megabytes_per_second = (state.done as f64 / seconds / 1e6 * 10.0).round() / 10.0,
                "fetch progress"
            );
        }
    }

    /// Takes back bytes that must be received again (a server ignored a range request).
    pub(crate) fn restarted(&self, bytes: u64) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.done = state.done.saturating_sub(bytes);
        if let Some(bar) = &self.bar {
            bar.set_position(state.done);
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
