use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pinserve::{
    app,
    config::{Cli, Command, FetchConfig, ServeConfig},
    inspect, metrics, model, promote, shutdown, telemetry,
};

fn main() -> ExitCode {
    // SAFETY: nothing has started a thread yet.
    unsafe { model::runtime::opt_out_of_telemetry() };
    let cli = Cli::parse();
    if let Err(err) = telemetry::init_logging(&cli.log) {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Serve(config) => exit_now(report(serve(*config))),
        Command::Fetch(config) => report(fetch(&config)),
        Command::Register(config) => report(
            pinserve::register::run(&config)
                .map(|version| println!("{version}"))
                .map_err(Into::into),
        ),
        Command::Eval(config) => match pinserve::eval::command::run(&config) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(GATE_FAILED),
            Err(err) => report(Err(err.into())),
        },
        Command::Profile(config) => report(
            pinserve::profile::command::run(&config)
                .map(|profile| {
                    println!(
                        "profiled {} features and {} outputs of {} version {} on {} rows into {}",
                        profile.features.len(),
                        profile.predictions.len(),
                        profile.model.name,
                        profile.model.version,
                        profile.dataset.rows,
                        config.out.display()
                    )
                })
                .map_err(Into::into),
        ),
        Command::Inspect(args) => report(
            inspect::run(&args)
                .map(|table| print!("{table}"))
                .map_err(Into::into),
        ),
        Command::Promote(config) => report(
            runtime()
                .and_then(|runtime| Ok(runtime.block_on(promote::run(&config))?))
                .map(|summary| println!("{summary}")),
        ),
    }
}

/// `pinserve eval`'s status when the gate failed (1 is an error, 2 a usage error).
const GATE_FAILED: u8 = 3;

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let error = pinserve::registry::redact::error_chain(&*err);
            tracing::error!(%error, "pinserve stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// Ends `serve` through [`shutdown::exit_immediately`]: a loader thread can still be inside ONNX
/// Runtime when shutdown completes (a model read from a slow volume, say).
fn exit_now(code: ExitCode) -> ! {
    shutdown::exit_immediately(if code == ExitCode::SUCCESS { 0 } else { 1 })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pinserve-io")
        .build()
        .context("cannot start the async runtime")
}

/// `pinserve fetch`: a summary line on stdout once the directory is complete and verified.
fn fetch(config: &FetchConfig) -> anyhow::Result<()> {
    let manifest = runtime()?.block_on(app::fetch(config))?;
    let bytes: u64 = manifest.files.iter().map(|file| file.size).sum();
    println!(
        "fetched {} version {} into {} ({} files, {bytes} bytes, verified)",
        manifest.model,
        manifest.version,
        config.dest.display(),
        manifest.files.len()
    );
    Ok(())
}

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let shutdown = shutdown::signal_received();
        let metrics = metrics::install_recorder().context("cannot install the metrics recorder")?;
        tokio::spawn(metrics::run_upkeep(metrics.clone()));
        let listeners = app::Listeners::bind(&config).await?;
        app::run(config, listeners, Some(metrics), shutdown).await?;
        Ok(())
    });
    // A blocking task may still be reading a model (from a slow volume, say); the process is
    // ending, so it is not waited for.
    runtime.shutdown_background();
    result
}
