//! What a model accepts and returns, read from the graph once at load time. Every request is
//! checked against it before it reaches ONNX Runtime, so a malformed request costs a clear 400
//! instead of an opaque runtime error (or worse, a runtime that reads past a short buffer).

use std::collections::HashMap;

use super::{
    tensor::{DataType, Tensor, TensorData},
    zipmap::ClassLabels,
};

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// Any size; ONNX may name it (`batch`), and inputs that share a name must agree on it.
    Dynamic(Option<String>),
}

/// Name, element type and shape of one model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub(crate) datatype: DataType,
    pub(crate) dims: Vec<Dim>,
    /// Set for an output that is a ZipMap in the graph (`seq(map(int64|string, float))`),
    /// served as FP32 `[N, C]` with its columns in this label order.
    pub(crate) class_labels: Option<ClassLabels>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, datatype: DataType, dims: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            dims,
            class_labels: None,
        }
    }

    /// A ZipMap output: FP32 `[N, C]`, one column per label.
    pub(crate) fn zipmap(name: impl Into<String>, labels: ClassLabels) -> TensorSpec {
        let dims = vec![Dim::Dynamic(None), Dim::Fixed(labels.len())];
        TensorSpec {
            class_labels: Some(labels),
            ..TensorSpec::new(name, DataType::Fp32, dims)
        }
    }

    /// The shape as the protocol reports it: `-1` for a dynamic dimension.
    pub(crate) fn protocol_shape(&self) -> Vec<i64> {
        self.dims
            .iter()
            .map(|dim| match dim {
                Dim::Fixed(size) => i64::try_from(*size).unwrap_or(i64::MAX),
                Dim::Dynamic(_) => -1,
            })
            .collect()
    }

    pub(crate) fn check_datatype(&self, given: DataType) -> Result<(), InputError> {
        if given == self.datatype {
            return Ok(());
        }
        Err(InputError::WrongDatatype {
            name: self.name.clone(),
            given: given.as_str().to_owned(),
            expected: self.datatype,
        })
    }

    pub(crate) fn check_shape(&self, shape: &[usize]) -> Result<(), InputError> {
        let wrong = |reason: String| InputError::WrongShape {
            name: self.name.clone(),
            given: shape.to_vec(),
            expected: self.protocol_shape(),
            reason,
        };
        if shape.len() != self.dims.len() {
            return Err(wrong(format!(
                "expected rank {}, got rank {}",
                self.dims.len(),
                shape.len()
            )));
        }
        for (axis, (dim, &size)) in self.dims.iter().zip(shape).enumerate() {
            if let Dim::Fixed(fixed) = dim
                && *fixed != size
            {
                return Err(wrong(format!(
                    "dimension {axis} must be {fixed}, got {size}"
                )));
            }
        }
        Ok(())
    }

    /// Whether dimension 0 is dynamic, so that requests can be stacked along it.
    fn has_dynamic_batch(&self) -> bool {
        matches!(self.dims.first(), Some(Dim::Dynamic(_)))
    }
}

/// The model's inputs and outputs, in graph order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// A request that does not fit the model's signature. Messages name the tensor and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("unknown input '{name}'; the model's inputs are {known}")]
    UnknownInput { name: String, known: String },
    #[error("input '{0}' is given more than once")]
    DuplicateInput(String),
    #[error("missing input '{name}' ({datatype} {shape:?})")]
    MissingInput {
        name: String,
        datatype: DataType,
        shape: Vec<i64>,
    },
    #[error("input '{name}': datatype {given} does not match the model's {expected}")]
    WrongDatatype {
        name: String,
        given: String,
        expected: DataType,
    },
    #[error("input '{name}': shape {given:?} does not match the model's {expected:?}: {reason}")]
    WrongShape {
        name: String,
        given: Vec<usize>,
        expected: Vec<i64>,
        reason: String,
    },
    #[error("input '{name}': {reason}")]
    BadData { name: String, reason: String },
    #[error(
        "inputs '{first}' and '{second}' disagree on dimension '{symbol}': {first_size} vs {second_size}"
    )]
    InconsistentDimension {
        symbol: String,
        first: String,
        first_size: usize,
        second: String,
        second_size: usize,
    },
    #[error("unknown output '{name}'; the model's outputs are {known}")]
    UnknownOutput { name: String, known: String },
    #[error("output '{0}' is requested more than once")]
    DuplicateOutput(String),
}

impl InputError {
    pub(crate) fn bad_data(name: &str, reason: impl ToString) -> InputError {
        InputError::BadData {
            name: name.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// ONNX Runtime copies strings as C strings, so an embedded NUL would silently truncate them.
fn check_no_nul(name: &str, tensor: &Tensor) -> Result<(), InputError> {
    let TensorData::Bytes(strings) = tensor.data() else {
        return Ok(());
    };
    match strings.iter().position(|s| s.contains('\0')) {
        Some(index) => Err(InputError::bad_data(
            name,
            format!(
                "element {index} contains a NUL character, which ONNX string tensors cannot hold"
            ),
        )),
        None => Ok(()),
    }
}

fn quoted_names(specs: &[TensorSpec]) -> String {
    let names: Vec<String> = specs.iter().map(|s| format!("'{}'", s.name)).collect();
    names.join(", ")
}

impl Signature {
    pub(crate) fn input(&self, name: &str) -> Result<&TensorSpec, InputError> {
        self.input_index(name).map(|index| &self.inputs[index])
    }

    fn input_index(&self, name: &str) -> Result<usize, InputError> {
        self.inputs
            .iter()
            .position(|spec| spec.name == name)
            .ok_or_else(|| InputError::UnknownInput {
                name: name.to_owned(),
                known: quoted_names(&self.inputs),
            })
    }

    /// Orders named tensors as the graph declares its inputs, refusing duplicates, missing
    /// inputs and named dimensions that differ between inputs.
    pub(crate) fn bind_inputs(
        &self,
        provided: Vec<(String, Tensor)>,
    ) -> Result<Vec<Tensor>, InputError> {
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        for (name, tensor) in provided {
            let index = self.input_index(&name)?;
            if slots[index].replace(tensor).is_some() {
                return Err(InputError::DuplicateInput(name));
            }
        }
        let tensors = slots
            .into_iter()
            .zip(&self.inputs)
            .map(|(slot, spec)| {
                slot.ok_or_else(|| InputError::MissingInput {
                    name: spec.name.clone(),
                    datatype: spec.datatype,
                    shape: spec.protocol_shape(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.check_named_dimensions(&tensors)?;
        for (spec, tensor) in self.inputs.iter().zip(&tensors) {
            check_no_nul(&spec.name, tensor)?;
        }
        Ok(tensors)
    }

    /// Whether requests can be stacked along dimension 0: every input and output has a dynamic
    /// first dimension. Such models treat dimension 0 as one shared batch dimension, as Triton
    /// does, even where the graph leaves it unnamed (skl2onnx does).
    pub(crate) fn is_batchable(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .all(TensorSpec::has_dynamic_batch)
    }

    fn check_named_dimensions(&self, tensors: &[Tensor]) -> Result<(), InputError> {
        const BATCH: &str = "batch (dimension 0)";
        let batchable = self.is_batchable();
        let mut seen: HashMap<&str, (&str, usize)> = HashMap::new();
        for (spec, tensor) in self.inputs.iter().zip(tensors) {
            for (axis, (dim, &size)) in spec.dims.iter().zip(tensor.shape()).enumerate() {
                let symbol = match dim {
                    Dim::Dynamic(_) if axis == 0 && batchable => BATCH,
                    Dim::Dynamic(Some(symbol)) => symbol.as_str(),
                    _ => continue,
                };
                match seen.get(symbol) {
                    Some(&(first, first_size)) if first_size != size => {
                        return Err(InputError::InconsistentDimension {
                            symbol: symbol.to_owned(),
                            first: first.to_owned(),
                            first_size,
                            second: spec.name.clone(),
                            second_size: size,
                        });
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(symbol, (&spec.name, size));
                    }
                }
            }
        }
        Ok(())
    }

    /// Indices of the requested outputs, in request order; all outputs when none are named.
    pub(crate) fn select_outputs<'a>(
        &self,
        requested: Option<impl IntoIterator<Item = &'a str>>,
    ) -> Result<Vec<usize>, InputError> {
        let Some(requested) = requested else {
            return Ok((0..self.outputs.len()).collect());
        };
        let mut indices = Vec::new();
        for name in requested {
            let index = self
                .outputs
                .iter()
                .position(|spec| spec.name == name)
                .ok_or_else(|| InputError::UnknownOutput {
                    name: name.to_owned(),
                    known: quoted_names(&self.outputs),
                })?;
            if indices.contains(&index) {
                return Err(InputError::DuplicateOutput(name.to_owned()));
            }
            indices.push(index);
        }
        Ok(indices)
    }

    /// Inputs for the warm-up run: dynamic dimensions of 1, filled with zeros (or empty strings).
    pub fn warmup_inputs(&self) -> Vec<Tensor> {
        self.inputs
            .iter()
            .map(|spec| {
                let shape: Vec<usize> = spec
                    .dims
                    .iter()
                    .map(|dim| match dim {
                        Dim::Fixed(size) => *size,
                        Dim::Dynamic(_) => 1,
                    })
                    .collect();
                let count = shape.iter().product();
                Tensor::new(shape, TensorData::filled_default(spec.datatype, count))
                    .expect("the element count is the product of the shape")
            })
            .collect()
    }
}

/// Signatures shared by the unit tests of the modules that check requests against one.
#[cfg(test)]
pub(crate) mod examples {
    use super::*;

    pub(crate) fn batch() -> Dim {
        Dim::Dynamic(Some("batch".to_owned()))
    }

    /// `width` values per row.
    pub(crate) fn matrix(name: &str, datatype: DataType, width: usize) -> TensorSpec {
        TensorSpec::new(name, datatype, vec![batch(), Dim::Fixed(width)])
    }

    /// One value per row.
    pub(crate) fn column(name: &str, datatype: DataType) -> TensorSpec {
        TensorSpec::new(name, datatype, vec![batch()])
    }

    /// A model of one input, `width` FP32 features per row, and `outputs`.
    pub(crate) fn one_input(input: &str, width: usize, outputs: Vec<TensorSpec>) -> Signature {
        Signature {
            inputs: vec![matrix(input, DataType::Fp32, width)],
            outputs,
        }
    }

    /// A churn model: a string and a number in, a label and class probabilities out.
    pub(crate) fn two_inputs() -> Signature {
        Signature {
            inputs: vec![
                TensorSpec::new("plan", DataType::Bytes, vec![batch(), Dim::Fixed(1)]),
                TensorSpec::new("tenure", DataType::Fp32, vec![batch(), Dim::Fixed(1)]),
            ],
            outputs: vec![
                TensorSpec::new("label", DataType::Int64, vec![batch()]),
                TensorSpec::new(
                    "probabilities",
                    DataType::Fp32,
                    vec![batch(), Dim::Fixed(2)],
                ),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{examples::two_inputs, *};

    fn plan(rows: usize) -> Tensor {
        Tensor::new(vec![rows, 1], TensorData::Bytes(vec!["basic".into(); rows])).unwrap()
    }

    fn tenure(rows: usize) -> Tensor {
        Tensor::new(vec![rows, 1], TensorData::Fp32(vec![1.0; rows])).unwrap()
    }

    #[test]
    fn binds_inputs_in_graph_order() {
        let bound = two_inputs()
            .bind_inputs(vec![("tenure".into(), tenure(2)), ("plan".into(), plan(2))])
            .unwrap();
        assert_eq!(bound[0].datatype(), DataType::Bytes);
        assert_eq!(bound[1].datatype(), DataType::Fp32);
    }

    #[test]
    fn refuses_missing_duplicate_and_unknown_inputs() {
        let sig = two_inputs();
        let missing = sig.bind_inputs(vec![("plan".into(), plan(1))]).unwrap_err();
        assert!(
            missing.to_string().contains("missing input 'tenure'"),
            "{missing}"
        );
        let duplicate = sig
            .bind_inputs(vec![("plan".into(), plan(1)), ("plan".into(), plan(1))])
            .unwrap_err();
        assert_eq!(duplicate, InputError::DuplicateInput("plan".into()));
        let unknown = sig
            .bind_inputs(vec![("age".into(), tenure(1))])
            .unwrap_err();
        assert!(
            unknown.to_string().contains("'plan', 'tenure'"),
            "{unknown}"
        );
    }

    #[test]
    fn strings_with_nul_are_refused() {
        let bad = Tensor::new(vec![1, 1], TensorData::Bytes(vec!["a\0b".into()])).unwrap();
        let err = two_inputs()
            .bind_inputs(vec![("plan".into(), bad), ("tenure".into(), tenure(1))])
            .unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[test]
    fn named_dimensions_must_agree_across_inputs() {
        let err = two_inputs()
            .bind_inputs(vec![("plan".into(), plan(2)), ("tenure".into(), tenure(3))])
            .unwrap_err();
        assert!(
            matches!(err, InputError::InconsistentDimension { ref symbol, .. } if symbol == "batch (dimension 0)")
        );
    }

    #[test]
    fn named_dimensions_beyond_the_batch_must_agree_too() {
        let seq = || Dim::Dynamic(Some("seq".into()));
        let sig = Signature {
            inputs: vec![
                TensorSpec::new("ids", DataType::Int64, vec![Dim::Fixed(1), seq()]),
                TensorSpec::new("mask", DataType::Int64, vec![Dim::Fixed(1), seq()]),
            ],
            outputs: vec![TensorSpec::new(
                "logits",
                DataType::Fp32,
                vec![Dim::Fixed(1), Dim::Fixed(2)],
            )],
        };
        let ids = |len: usize| Tensor::new(vec![1, len], TensorData::Int64(vec![0; len])).unwrap();
        assert!(
            sig.bind_inputs(vec![("ids".into(), ids(5)), ("mask".into(), ids(5))])
                .is_ok()
        );
        let err = sig
            .bind_inputs(vec![("ids".into(), ids(5)), ("mask".into(), ids(4))])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "inputs 'ids' and 'mask' disagree on dimension 'seq': 5 vs 4"
        );
    }

    #[test]
    fn unnamed_batch_dimensions_must_agree_when_the_model_is_batchable() {
        let unnamed = || Dim::Dynamic(None);
        let sig = Signature {
            inputs: vec![
                TensorSpec::new("plan", DataType::Bytes, vec![unnamed(), Dim::Fixed(1)]),
                TensorSpec::new("tenure", DataType::Fp32, vec![unnamed(), Dim::Fixed(1)]),
            ],
            outputs: vec![TensorSpec::new("label", DataType::Int64, vec![unnamed()])],
        };
        assert!(sig.is_batchable());
        let err = sig
            .bind_inputs(vec![("plan".into(), plan(2)), ("tenure".into(), tenure(1))])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("disagree on dimension 'batch (dimension 0)'"),
            "{err}"
        );

        let fixed_output = Signature {
            outputs: vec![TensorSpec::new(
                "total",
                DataType::Fp32,
                vec![Dim::Fixed(1)],
            )],
            ..sig
        };
        assert!(!fixed_output.is_batchable());
        assert!(
            fixed_output
                .bind_inputs(vec![("plan".into(), plan(2)), ("tenure".into(), tenure(1))])
                .is_ok()
        );
    }

    #[test]
    fn shape_checks_rank_and_fixed_dims() {
        let sig = two_inputs();
        let plan_spec = sig.input("plan").unwrap();
        assert!(plan_spec.check_shape(&[5, 1]).is_ok());
        assert!(plan_spec.check_shape(&[0, 1]).is_ok());
        let rank = plan_spec.check_shape(&[5]).unwrap_err().to_string();
        assert!(rank.contains("expected rank 2, got rank 1"), "{rank}");
        let fixed = plan_spec.check_shape(&[5, 2]).unwrap_err().to_string();
        assert!(fixed.contains("dimension 1 must be 1, got 2"), "{fixed}");
    }

    #[test]
    fn datatype_mismatch_names_both_types() {
        let sig = two_inputs();
        let err = sig
            .input("tenure")
            .unwrap()
            .check_datatype(DataType::Fp64)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 'tenure': datatype FP64 does not match the model's FP32"
        );
    }

    #[test]
    fn selects_outputs_by_name_in_request_order() {
        let sig = two_inputs();
        assert_eq!(sig.select_outputs(None::<Vec<&str>>).unwrap(), vec![0, 1]);
        assert_eq!(
            sig.select_outputs(Some(["probabilities"])).unwrap(),
            vec![1]
        );
        assert!(matches!(
            sig.select_outputs(Some(["score"])).unwrap_err(),
            InputError::UnknownOutput { .. }
        ));
        assert_eq!(
            sig.select_outputs(Some(["label", "label"])).unwrap_err(),
            InputError::DuplicateOutput("label".into())
        );
    }

    #[test]
    fn warmup_inputs_fit_the_signature() {
        let sig = two_inputs();
        let inputs = sig.warmup_inputs();
        let named = sig
            .inputs
            .iter()
            .map(|s| s.name.clone())
            .zip(inputs)
            .collect();
        assert!(sig.bind_inputs(named).is_ok());
    }

    #[test]
    fn protocol_shape_marks_dynamic_dims() {
        assert_eq!(two_inputs().outputs[1].protocol_shape(), vec![-1, 2]);
    }
}
