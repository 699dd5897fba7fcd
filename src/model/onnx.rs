//! The ONNX Runtime implementation of [`Model`]: one `ort` session, owned by the thread that
//! runs it (`Session::run` takes `&mut self`).

use std::{hash::Hash, path::Path, sync::Arc};

use ort::{
    session::{OutputSelector, RunOptions, Session, SessionInputValue, builder::SessionBuilder},
    value::{
        DynMap, DynMapValueType, DynValue, IntoTensorElementType, Outlet, TensorElementType,
        TensorRef, ValueType,
    },
};

use super::{
    Model, ModelError, onnx_proto,
    runtime::{self, Device, SessionOptions},
    signature::{Dim, Signature, TensorSpec},
    tensor::{DataType, Tensor, TensorData},
    zipmap::{self, ClassLabels},
};

/// A model loaded into an ONNX Runtime session.
pub struct OnnxModel {
    session: Session,
    signature: Arc<Signature>,
}

impl OnnxModel {
    /// Builds a session for the model file at `path` on the requested device. Asking for CUDA
    /// where it cannot be used is an error, never a silent fall-back to the CPU.
    pub fn load(path: &Path, options: &SessionOptions) -> Result<OnnxModel, ModelError> {
        let environment = runtime::environment(options.library.as_deref())?;
        let load_error = |err: ort::Error| ModelError::Load {
            path: path.to_path_buf(),
            message: err.to_string(),
        };
        let builder = Session::builder(environment)
            .and_then(|builder| {
                Ok(builder.with_optimization_level(options.graph_optimization.into())?)
            })
            .and_then(|builder| Ok(builder.with_intra_threads(options.intra_op_threads)?))
            .and_then(|builder| Ok(builder.with_intra_op_spinning(options.intra_op_spinning)?))
            .map_err(load_error)?;
        let mut builder = with_device(builder, options.device)?;
        let session = builder.commit_from_file(path).map_err(load_error)?;
        let signature = Arc::new(signature_of(&session, path)?);
        Ok(OnnxModel { session, signature })
    }
}

#[cfg(feature = "cuda")]
fn with_device(builder: SessionBuilder, device: Device) -> Result<SessionBuilder, ModelError> {
    let Device::Cuda(ordinal) = device else {
        return Ok(builder);
    };
    let device_id = i32::try_from(ordinal).map_err(|_| ModelError::Device {
        device,
        message: "device ordinal out of range".to_owned(),
    })?;
    let cuda = ort::ep::CUDA::default()
        .with_device_id(device_id)
        .build()
        .error_on_failure();
    builder
        .with_execution_providers([cuda])
        .map_err(|err| ModelError::Device {
            device,
            message: format!(
                "ONNX Runtime's CUDA execution provider could not be registered: {}. It needs \
                 the onnxruntime-gpu library (CUDA 13 build), CUDA 13 and cuDNN 9 libraries on the \
                 loader path, and a visible GPU",
                err.message().trim_end_matches('.')
            ),
        })
}

#[cfg(not(feature = "cuda"))]
fn with_device(builder: SessionBuilder, device: Device) -> Result<SessionBuilder, ModelError> {
    match device {
        Device::Cpu => Ok(builder),
        Device::Cuda(_) => Err(ModelError::Device {
            device,
            message: "this pinserve binary was built without CUDA support (cargo feature `cuda`)"
                .to_owned(),
        }),
    }
}

fn signature_of(session: &Session, path: &Path) -> Result<Signature, ModelError> {
    let zipmaps = zipmap_labels(session, path)?;
    let inputs = session
        .inputs()
        .iter()
        .map(|outlet| spec_of(outlet, "input"))
        .collect::<Result<_, _>>()?;
    let outputs = session
        .outputs()
        .iter()
        .map(|outlet| match outlet.dtype() {
            ValueType::Sequence(element) if is_float_map(element) => {
                zipmap_spec(outlet, element, &zipmaps)
            }
            _ => spec_of(outlet, "output"),
        })
        .collect::<Result<_, _>>()?;
    Ok(Signature { inputs, outputs })
}

/// `map(int64|string, float)`: what a ZipMap makes of each row.
fn is_float_map(element: &ValueType) -> bool {
    matches!(
        element,
        ValueType::Map {
            key: TensorElementType::Int64 | TensorElementType::String,
            value: TensorElementType::Float32,
        }
    )
}

/// The ZipMap nodes' labels, read from the file only when an output has a ZipMap's type (the
/// file is read a second time, which costs nothing for the small scikit-learn models that
/// have one).
fn zipmap_labels(session: &Session, path: &Path) -> Result<Vec<(String, ClassLabels)>, ModelError> {
    let has_zipmap = session.outputs().iter().any(
        |outlet| matches!(outlet.dtype(), ValueType::Sequence(element) if is_float_map(element)),
    );
    if !has_zipmap {
        return Ok(Vec::new());
    }
    let load_error = |message: String| ModelError::Load {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|err| load_error(err.to_string()))?;
    onnx_proto::zipmap_outputs(&bytes)
        .map_err(|err| load_error(format!("cannot read its ZipMap nodes' class labels: {err}")))
}

fn zipmap_spec(
    outlet: &Outlet,
    element: &ValueType,
    zipmaps: &[(String, ClassLabels)],
) -> Result<TensorSpec, ModelError> {
    let unsupported = |what: &str| {
        ModelError::Unsupported(format!(
            "output '{}' has type {}, but {what}",
            outlet.name(),
            outlet.dtype()
        ))
    };
    let labels = zipmaps
        .iter()
        .find(|(name, _)| name == outlet.name())
        .map(|(_, labels)| labels)
        .ok_or_else(|| unsupported("no ZipMap node with class labels writes it"))?;
    let key_matches = matches!(
        (element, labels),
        (
            ValueType::Map {
                key: TensorElementType::Int64,
                ..
            },
            ClassLabels::Int64(_)
        ) | (
            ValueType::Map {
                key: TensorElementType::String,
                ..
            },
            ClassLabels::Strings(_)
        )
    );
    if !key_matches || labels.is_empty() {
        return Err(unsupported(&format!(
            "its ZipMap holds {} {} labels",
            labels.len(),
            labels.key_type()
        )));
    }
    Ok(TensorSpec::zipmap(outlet.name(), labels.clone()))
}

fn spec_of(outlet: &Outlet, role: &str) -> Result<TensorSpec, ModelError> {
    let unsupported =
        |what: String| ModelError::Unsupported(format!("{role} '{}' {what}", outlet.name()));
    let ValueType::Tensor {
        ty,
        shape,
        dimension_symbols,
    } = outlet.dtype()
    else {
        return Err(unsupported(format!(
            "has type {}; pinserve serves tensors, and as outputs also scikit-learn's \
             ZipMap probabilities (seq(map(int64|string, float)))",
            outlet.dtype()
        )));
    };
    let datatype = datatype_of(*ty).ok_or_else(|| {
        unsupported(format!(
            "has element type {ty}, which pinserve does not serve"
        ))
    })?;
    let dims = shape
        .iter()
        .zip(dimension_symbols.iter())
        .map(|(&size, symbol)| match usize::try_from(size) {
            Ok(size) => Dim::Fixed(size),
            Err(_) => Dim::Dynamic(Some(symbol.clone()).filter(|s| !s.is_empty())),
        })
        .collect();
    Ok(TensorSpec::new(outlet.name(), datatype, dims))
}

fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// Lists the numeric variants once, so conversions to and from `ort` values cannot miss one.
macro_rules! for_numeric_variants {
    ($mac:ident!($($args:tt)*)) => {
        $mac!($($args)*; Bool bool, Uint8 u8, Uint16 u16, Uint32 u32, Uint64 u64, Int8 i8,
            Int16 i16, Int32 i32, Int64 i64, Fp16 half::f16, Bf16 half::bf16, Fp32 f32, Fp64 f64)
    };
}

/// A view of `tensor` for ONNX Runtime: numbers are not copied (the caller keeps the tensor,
/// for drift monitoring after the answer); strings are, as ONNX Runtime owns its own.
fn to_ort_value(tensor: &Tensor) -> ort::Result<SessionInputValue<'_>> {
    let shape = tensor.shape().to_vec();
    macro_rules! convert {
        ($data:expr, $shape:expr; $($variant:ident $ty:ty),*) => {
            match $data {
                $(TensorData::$variant(values) => SessionInputValue::from(TensorRef::from_array_view(($shape, &values[..]))?),)*
                TensorData::Bytes(strings) => SessionInputValue::from(ort::value::Tensor::from_string_array(($shape, &strings[..]))?.into_dyn()),
            }
        };
    }
    Ok(for_numeric_variants!(convert!(tensor.data(), shape)))
}

/// A ZipMap's maps as the `[N, C]` matrix in label order.
fn from_zipmap(name: &str, labels: &ClassLabels, value: &DynValue) -> Result<Tensor, ModelError> {
    let inference = |err: String| ModelError::Inference(format!("output '{name}': {err}"));
    let maps = value
        .try_extract_sequence::<DynMapValueType>()
        .map_err(|err| inference(err.to_string()))?;
    let data = match labels {
        ClassLabels::Int64(labels) => dense_maps(&maps, labels),
        ClassLabels::Strings(labels) => dense_maps(&maps, labels),
    }
    .map_err(inference)?;
    Tensor::new(vec![maps.len(), labels.len()], TensorData::Fp32(data))
        .map_err(|err| inference(err.to_string()))
}

fn dense_maps<K>(maps: &[DynMap], labels: &[K]) -> Result<Vec<f32>, String>
where
    K: IntoTensorElementType + Clone + Hash + Eq + ToString,
{
    let rows = maps
        .iter()
        .map(|map| map.try_extract_key_values::<K, f32>())
        .collect::<ort::Result<Vec<_>>>()
        .map_err(|err| err.to_string())?;
    zipmap::dense(labels, &rows).map_err(|err| err.to_string())
}

fn from_ort_value(spec: &TensorSpec, value: &DynValue) -> Result<Tensor, ModelError> {
    let name = spec.name.as_str();
    if let Some(labels) = &spec.class_labels {
        return from_zipmap(name, labels, value);
    }
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(ModelError::Inference(format!(
            "output '{name}' is not a tensor"
        )));
    };
    let to_usize = |shape: &[i64]| {
        shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect()
    };
    let inference = |err: ort::Error| ModelError::Inference(format!("output '{name}': {err}"));
    macro_rules! extract {
        ($ty_value:expr; $($variant:ident $ty:ty),*) => {
            match datatype_of($ty_value) {
                $(Some(DataType::$variant) => {
                    let (shape, values) = value.try_extract_tensor::<$ty>().map_err(inference)?;
                    (to_usize(shape), TensorData::$variant(values.to_vec()))
                })*
                Some(DataType::Bytes) => {
                    let (shape, strings) = value.try_extract_strings().map_err(inference)?;
                    (to_usize(shape), TensorData::Bytes(strings))
                }
                None => return Err(ModelError::Inference(format!("output '{name}' has element type {ty}"))),
            }
        };
    }
    let (shape, data) = for_numeric_variants!(extract!(*ty));
    Tensor::new(shape, data).map_err(|err| ModelError::Inference(format!("output '{name}': {err}")))
}

impl Model for OnnxModel {
    fn signature(&self) -> &Arc<Signature> {
        &self.signature
    }

    fn run(&mut self, inputs: &[Tensor], outputs: &[usize]) -> Result<Vec<Tensor>, ModelError> {
        let inference = |err: ort::Error| ModelError::Inference(err.to_string());
        let values = inputs
            .iter()
            .map(to_ort_value)
            .collect::<ort::Result<Vec<_>>>()
            .map_err(inference)?;
        let specs: Vec<&TensorSpec> = outputs
            .iter()
            .map(|&i| &self.signature.outputs[i])
            .collect();
        let selector = specs
            .iter()
            .fold(OutputSelector::no_default(), |sel, spec| {
                sel.with(spec.name.as_str())
            });
        let options = RunOptions::new().map_err(inference)?.with_outputs(selector);
        let results = self
            .session
            .run_with_options(&values[..], &options)
            .map_err(inference)?;
        specs
            .iter()
            .map(|spec| {
                let value = results.get(spec.name.as_str()).ok_or_else(|| {
                    ModelError::Inference(format!(
                        "ONNX Runtime returned no output '{}'",
                        spec.name
                    ))
                })?;
                from_ort_value(spec, value)
            })
            .collect()
    }
}
