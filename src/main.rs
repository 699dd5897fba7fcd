use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pinserve::{
    app,
    config::{Cli, Command, ServeConfig},
    inspect, metrics, shutdown, telemetry,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = telemetry::init_logging(&cli.log) {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "pinserve stopped with an error");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => serve(config),
        Command::Inspect(args) => {
            print!("{}", inspect::run(&args)?);
            Ok(())
        }
    }
}

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pinserve-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let metrics = metrics::install_recorder().context("cannot install the metrics recorder")?;
        tokio::spawn(metrics::run_upkeep(metrics.clone()));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        app::run(config, listener, Some(metrics), shutdown::signal_received()).await?;
        Ok(())
    })
}
