//! ONNX Runtime itself: finding its shared library, the process's one environment, and the
//! options every session is built with.
//!
//! pinserve loads `libonnxruntime` at run time (ort's `load-dynamic`) instead of linking it, so
//! one binary runs on the CPU wheel's library or the GPU wheel's, and a missing library is an
//! error message rather than a loader failure before `main`.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Mutex, OnceLock},
};

use ort::environment::Environment;

/// The ONNX Runtime release pinserve is built and tested against (the PyPI wheel's version).
pub(crate) const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// Where to look for the library when neither `--onnxruntime-lib` nor `ORT_DYLIB_PATH` names it,
/// in order. Documented in the README; `scripts/install-onnxruntime.sh` installs to the last one.
fn default_library_locations() -> Vec<PathBuf> {
    let file = library_file_name();
    let mut locations = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        locations.push(exe_dir.join(&file));
        locations.push(exe_dir.join("../lib").join(&file));
    }
    if let Some(data_dir) = user_data_dir() {
        locations.push(
            data_dir
                .join("pinserve/onnxruntime")
                .join(ONNXRUNTIME_VERSION)
                .join(&file),
        );
    }
    locations
}

fn library_file_name() -> String {
    format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

fn user_data_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")),
    }
}

/// The library to load: the one named explicitly, else the first default location that exists,
/// else the bare file name, which the system loader resolves (`LD_LIBRARY_PATH`, ldconfig).
fn locate_library(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    default_library_locations()
        .into_iter()
        .find(|candidate| candidate.exists())
        .unwrap_or_else(|| PathBuf::from(library_file_name()))
}

/// The variable ONNX Runtime reads, when its environment is created, to turn its telemetry off
/// completely. The API switch (`with_telemetry(false)`) comes too late: by then ONNX Runtime
/// 1.31 has written a device id and queued events (OS, CPU, executable path) under
/// `$HOME/.cache/Microsoft`.
const TELEMETRY_OPT_OUT_VARIABLE: &str = "ORT_DISABLE_TELEMETRY";

/// Sets [`TELEMETRY_OPT_OUT_VARIABLE`] to `1` unless the user set it. Returns whether it was
/// set here.
///
/// # Safety
/// Changes the process environment: call it before any other thread exists (first thing in
/// `main`), since reading the environment while it changes is undefined behaviour.
pub unsafe fn opt_out_of_telemetry() -> bool {
    if std::env::var_os(TELEMETRY_OPT_OUT_VARIABLE).is_some() {
        return false;
    }
    // SAFETY: the caller guarantees no other thread runs yet.
    unsafe { std::env::set_var(TELEMETRY_OPT_OUT_VARIABLE, "1") };
    true
}

/// ONNX Runtime could not be loaded or initialised.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeError(String);

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Loads the library and creates the process's environment on first call; later calls return
/// the same environment (ONNX Runtime allows one per process).
pub fn environment(explicit_library: Option<&Path>) -> Result<&'static Environment, RuntimeError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = locate_library(explicit_library);
    let builder = ort::init_from(&path).map_err(|err| {
        let err = loader_reason(&path).unwrap_or_else(|| err.to_string());
        RuntimeError(format!(
            "cannot load the ONNX Runtime library ({err}). pinserve needs libonnxruntime \
             {ONNXRUNTIME_VERSION} from the PyPI `onnxruntime` wheel: run \
             scripts/install-onnxruntime.sh, or point --onnxruntime-lib / ORT_DYLIB_PATH at it \
             (searched: {})",
            describe_search(explicit_library)
        ))
    })?;
    let env = builder
        .with_name("pinserve")
        .with_telemetry(false)
        .build()
        .map_err(|err| {
            RuntimeError(format!("cannot create the ONNX Runtime environment: {err}"))
        })?;
    tracing::info!(library = %path.display(), "loaded ONNX Runtime");
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// The system loader's own reason for refusing `path` (a missing file, a wrong architecture, an
/// unresolved dependency): ort reports only that loading failed.
fn loader_reason(path: &Path) -> Option<String> {
    // SAFETY: loading runs the library's initialisers. It is the library ONNX Runtime would have
    // been loaded from a moment ago, and the attempt is only made once that load has failed.
    match unsafe { libloading::Library::new(path) } {
        Ok(_) => None,
        Err(err) => {
            let mut reason = err.to_string();
            let mut cause = std::error::Error::source(&err);
            while let Some(inner) = cause {
                reason = format!("{reason}: {inner}");
                cause = inner.source();
            }
            Some(reason)
        }
    }
}

fn describe_search(explicit: Option<&Path>) -> String {
    if let Some(path) = explicit {
        return path.display().to_string();
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return format!("ORT_DYLIB_PATH={}", PathBuf::from(path).display());
    }
    let mut places: Vec<String> = default_library_locations()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    places.push(format!(
        "{} on the system library path",
        library_file_name()
    ));
    places.join(", ")
}

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(u32),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(text: &str) -> Result<Device, String> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|ordinal| ordinal.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device '{text}': expected cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// ONNX Runtime's graph optimization levels, as `--graph-optimization-level` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphOptimization {
    Disable,
    Basic,
    Extended,
    All,
}

impl From<GraphOptimization> for ort::session::builder::GraphOptimizationLevel {
    fn from(level: GraphOptimization) -> Self {
        use ort::session::builder::GraphOptimizationLevel as Level;
        match level {
            GraphOptimization::Disable => Level::Disable,
            GraphOptimization::Basic => Level::Level1,
            GraphOptimization::Extended => Level::Level2,
            GraphOptimization::All => Level::All,
        }
    }
}

/// How each ONNX Runtime session is built.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub device: Device,
    pub intra_op_threads: usize,
    /// Whether idle intra-op threads spin (ONNX Runtime's default) or sleep.
    pub intra_op_spinning: bool,
    pub graph_optimization: GraphOptimization,
    /// An explicit path to libonnxruntime; `None` searches the default locations.
    pub library: Option<PathBuf>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            device: Device::Cpu,
            intra_op_threads: available_cpus(),
            intra_op_spinning: false,
            graph_optimization: GraphOptimization::All,
            library: None,
        }
    }
}

/// CPUs this process may use (cgroup quotas included), the default for intra-op threads.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(Device::Cpu));
        assert_eq!("cuda".parse(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(Device::Cuda(3)));
        assert!("cuda:".parse::<Device>().is_err());
        assert!(
            "gpu"
                .parse::<Device>()
                .unwrap_err()
                .contains("expected cpu, cuda or cuda:N")
        );
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn explicit_library_wins() {
        let path = Path::new("/opt/ort/libonnxruntime.so");
        assert_eq!(locate_library(Some(path)), path);
    }

    #[test]
    fn default_locations_include_the_user_install() {
        let locations = default_library_locations();
        assert!(
            locations
                .iter()
                .any(|p| p.to_string_lossy().contains("pinserve/onnxruntime/1.31.1")),
            "{locations:?}"
        );
    }
}
