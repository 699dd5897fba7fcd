//! Models as the batcher sees them: a synchronous [`Model`] that owns its runtime session and
//! runs on a dedicated thread. Nothing here knows about HTTP or JSON.

pub(crate) mod onnx;
mod onnx_proto;
pub mod runtime;
pub(crate) mod signature;
pub(crate) mod tensor;
pub(crate) mod zipmap;

use std::{path::PathBuf, sync::Arc};

pub use self::{
    onnx::OnnxModel,
    runtime::{Device, SessionOptions},
    signature::{Dim, Signature, TensorSpec},
    tensor::{DataType, Tensor, TensorData},
};
pub(crate) use self::{runtime::GraphOptimization, signature::InputError, zipmap::ClassLabels};

/// A loaded model. `run` takes `&mut self` because ONNX Runtime sessions do; one instance
/// therefore serves one thread.
pub trait Model: Send + 'static {
    fn signature(&self) -> &Arc<Signature>;

    /// Runs inference on inputs bound in signature order, returning the outputs at the given
    /// signature indices, in that order.
    fn run(&mut self, inputs: &[Tensor], outputs: &[usize]) -> Result<Vec<Tensor>, ModelError>;
}

/// Why a model could not be loaded or run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("cannot load model {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot run on device {device}: {message}")]
    Device { device: Device, message: String },
    #[error("ONNX Runtime failed: {0}")]
    Inference(String),
    #[error("the warm-up inference failed: {0}")]
    WarmUp(String),
}

/// Loads the model and runs one inference on the inputs `warm_up` makes for its signature, so
/// that the first real request pays no lazy-initialisation cost and a model that cannot run is
/// caught before readiness.
pub fn load_and_warm_up(
    path: &std::path::Path,
    options: &SessionOptions,
    warm_up: impl FnOnce(&Signature) -> Result<Vec<Tensor>, String>,
) -> Result<OnnxModel, ModelError> {
    let mut model = OnnxModel::load(path, options)?;
    let signature = Arc::clone(model.signature());
    let inputs = warm_up(&signature).map_err(ModelError::WarmUp)?;
    let all_outputs: Vec<usize> = (0..signature.outputs.len()).collect();
    model
        .run(&inputs, &all_outputs)
        .map_err(|err| ModelError::WarmUp(err.to_string()))?;
    Ok(model)
}
