//! Command line and environment. Every flag can also be set through a `PINSERVE_*` variable, so
//! a Kubernetes manifest configures pinserve with `env:` entries alone.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::{Device, GraphOptimization, SessionOptions, runtime};

#[derive(Debug, Parser)]
#[command(
    name = "pinserve",
    version,
    about = "Serve one pinned ONNX model version over the Open Inference Protocol",
    long_about = "Serve one pinned ONNX model version over the Open Inference Protocol (KServe V2 / \
                  Triton REST) and /predict, with readiness that turns green only after the model \
                  has loaded and answered a warm-up inference, and Prometheus metrics labelled by \
                  model version for canary analysis."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a model version from a model repository and serve it over HTTP.
    Serve(ServeConfig),
    /// Print a model's inputs and outputs (name, datatype, shape; -1 marks a dynamic dimension).
    Inspect(InspectArgs),
}

const MODEL: &str = "Model";
const HTTP: &str = "HTTP";
const LOGGING: &str = "Logging";

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Model repository root, laid out DIR/NAME/VERSION/model.onnx (as Triton and TF Serving).
    #[arg(long, env = "PINSERVE_MODEL_REPOSITORY", value_name = "DIR", help_heading = MODEL)]
    pub model_repository: PathBuf,

    /// Name of the model to serve (a directory in the model repository).
    #[arg(
        long = "model-name",
        visible_alias = "model",
        env = "PINSERVE_MODEL_NAME",
        value_name = "NAME",
        help_heading = MODEL
    )]
    pub model_name: String,

    /// Version of the model to serve (a directory under the model's name). Pin it: the version
    /// is what /health, the v2 metadata and every metric's `version` label report.
    #[arg(
        long = "model-version",
        visible_alias = "version",
        env = "PINSERVE_MODEL_VERSION",
        value_name = "VERSION",
        help_heading = MODEL
    )]
    pub model_version: String,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Address to listen on. It is bound before the model loads, so probes get 503 rather
    /// than a refused connection while loading.
    #[arg(
        long,
        env = "PINSERVE_LISTEN",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR",
        help_heading = HTTP
    )]
    pub listen: SocketAddr,

    /// Largest request body accepted, in bytes; larger bodies are answered 413.
    #[arg(
        long,
        env = "PINSERVE_MAX_BODY_BYTES",
        default_value_t = 64 * 1024 * 1024,
        value_name = "BYTES",
        help_heading = HTTP
    )]
    pub max_body_bytes: usize,

    /// Seconds to keep serving after SIGTERM while /health answers 503, so that Kubernetes
    /// removes the pod from its Service endpoints before the listener closes.
    #[arg(
        long,
        env = "PINSERVE_DRAIN_SECONDS",
        default_value_t = 5,
        value_name = "SECONDS",
        help_heading = HTTP
    )]
    pub drain_seconds: u64,

    /// Seconds in-flight requests get to finish once the listener has closed; requests still
    /// running after that are cut off so that shutdown always ends.
    #[arg(
        long,
        env = "PINSERVE_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 30,
        value_name = "SECONDS",
        help_heading = HTTP
    )]
    pub shutdown_grace_seconds: u64,
}

impl ServeConfig {
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// How ONNX Runtime is found and how its sessions are built.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "ONNX Runtime")]
pub struct RuntimeArgs {
    /// Where inference runs: cpu, cuda (device 0) or cuda:N. Asking for CUDA where it cannot be
    /// used fails start-up with the reason; pinserve never falls back to the CPU silently.
    #[arg(
        long,
        env = "PINSERVE_DEVICE",
        default_value = "cpu",
        value_name = "DEVICE"
    )]
    pub device: Device,

    /// Threads ONNX Runtime uses within one operator [default: the CPUs this process may use].
    #[arg(long, env = "PINSERVE_INTRA_OP_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub intra_op_threads: Option<u16>,

    /// ONNX Runtime graph optimizations applied when the session is created.
    #[arg(
        long,
        env = "PINSERVE_GRAPH_OPTIMIZATION_LEVEL",
        value_enum,
        default_value_t = GraphOptimization::All,
        value_name = "LEVEL"
    )]
    pub graph_optimization_level: GraphOptimization,

    /// Path to libonnxruntime.so. Without it pinserve reads ORT_DYLIB_PATH, then looks beside
    /// its executable, in ../lib, and in ~/.local/share/pinserve/onnxruntime/VERSION/.
    #[arg(long, env = "PINSERVE_ONNXRUNTIME_LIB", value_name = "PATH")]
    pub onnxruntime_lib: Option<PathBuf>,
}

impl RuntimeArgs {
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            device: self.device,
            intra_op_threads: self
                .intra_op_threads
                .map_or_else(runtime::available_cpus, usize::from),
            graph_optimization: self.graph_optimization_level,
            library: self.onnxruntime_lib.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The .onnx file to describe.
    pub path: PathBuf,

    /// Print JSON (the v2 metadata's inputs and outputs) instead of a table.
    #[arg(long, env = "PINSERVE_JSON")]
    pub json: bool,

    /// Path to libonnxruntime.so (see `pinserve serve --help`).
    #[arg(long, env = "PINSERVE_ONNXRUNTIME_LIB", value_name = "PATH")]
    pub onnxruntime_lib: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, global = true, env = "PINSERVE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = LOGGING)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `debug`, `pinserve=debug,ort=info`). ONNX
    /// Runtime's own messages are under the `ort` target; at info they describe every graph pass.
    #[arg(
        long,
        global = true,
        env = "PINSERVE_LOG_LEVEL",
        default_value = "info,ort=warn",
        value_name = "FILTER",
        help_heading = LOGGING
    )]
    pub log_level: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_a_pinserve_environment_variable() {
        let command = Cli::command();
        let mut commands = vec![&command];
        commands.extend(command.get_subcommands());
        for cmd in commands {
            for arg in cmd.get_arguments() {
                if arg.is_positional() || ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                let expected = format!(
                    "PINSERVE_{}",
                    arg.get_long().unwrap().to_uppercase().replace('-', "_")
                );
                assert_eq!(
                    env.as_deref(),
                    Some(expected.as_str()),
                    "flag --{}",
                    arg.get_long().unwrap()
                );
            }
        }
    }

    #[test]
    fn serve_accepts_the_documented_short_names() {
        let cli = Cli::try_parse_from([
            "pinserve",
            "serve",
            "--model-repository",
            "models",
            "--model",
            "iris",
            "--version",
            "3",
        ])
        .unwrap();
        let Command::Serve(config) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(config.model_name, "iris");
        assert_eq!(config.model_version, "3");
        assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.runtime.device, Device::Cpu);
        assert_eq!(config.drain(), Duration::from_secs(5));
    }

    #[test]
    fn intra_op_threads_must_be_positive() {
        let parsed = Cli::try_parse_from([
            "pinserve",
            "serve",
            "--model-repository",
            "m",
            "--model",
            "a",
            "--version",
            "1",
            "--intra-op-threads",
            "0",
        ]);
        assert!(parsed.is_err());
    }
}
