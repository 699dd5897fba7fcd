//! What the wall-clock benchmarks share (each includes this file with `#[path]`, beside
//! `tests/common`), so each uses only part of it.
#![allow(dead_code)]

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use crate::common::Server;

/// The middle value (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Process start to the first `/health` 200 (weights loaded, warm-up run), polled every 2 ms.
pub async fn time_to_ready(args: &[&str], env: &[(&str, String)]) -> Duration {
    let started = Instant::now();
    let server = Server::start_with_env(args, env);
    loop {
        if server.get("/health").await.0 == 200 {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs `command` to its end; it must succeed (its stderr tells why not).
pub fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// How long `command` takes to run to its end; it must succeed.
pub fn timed(command: &mut Command) -> Duration {
    let started = Instant::now();
    run_ok(command);
    started.elapsed()
}
