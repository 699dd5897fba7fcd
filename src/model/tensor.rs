//! Tensors as pinserve moves them between the wire and ONNX Runtime: a shape and one typed,
//! row-major buffer. Keeping the element type in the enum (rather than bytes plus a tag) lets
//! the wire decoders write straight into the buffer ONNX Runtime will read.

use std::fmt;

use half::{bf16, f16};

/// Element types, named as the Open Inference Protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    /// Variable-length strings; ONNX `tensor(string)`.
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's name: `FP32`, `INT64`, `BYTES`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub(crate) fn from_protocol_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|dt| dt.as_str() == name)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One typed buffer per element type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Bf16(Vec<bf16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<String>),
}

/// Runs the same expression on whichever buffer a [`TensorData`] holds.
macro_rules! with_buffer {
    ($data:expr, $buf:ident => $body:expr) => {
        match $data {
            TensorData::Bool($buf) => $body,
            TensorData::Uint8($buf) => $body,
            TensorData::Uint16($buf) => $body,
            TensorData::Uint32($buf) => $body,
            TensorData::Uint64($buf) => $body,
            TensorData::Int8($buf) => $body,
            TensorData::Int16($buf) => $body,
            TensorData::Int32($buf) => $body,
            TensorData::Int64($buf) => $body,
            TensorData::Fp16($buf) => $body,
            TensorData::Bf16($buf) => $body,
            TensorData::Fp32($buf) => $body,
            TensorData::Fp64($buf) => $body,
            TensorData::Bytes($buf) => $body,
        }
    };
}
pub(crate) use with_buffer;

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Bf16(_) => DataType::Bf16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        with_buffer!(self, buf => buf.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `index` as a number (`false`/`true` as 0 and 1); `None` for strings or past the
    /// end. What statistics over any numeric tensor read.
    pub(crate) fn number_at(&self, index: usize) -> Option<f64> {
        Some(match self {
            TensorData::Bool(v) => f64::from(u8::from(*v.get(index)?)),
            TensorData::Uint8(v) => f64::from(*v.get(index)?),
            TensorData::Uint16(v) => f64::from(*v.get(index)?),
            TensorData::Uint32(v) => f64::from(*v.get(index)?),
            TensorData::Uint64(v) => *v.get(index)? as f64,
            TensorData::Int8(v) => f64::from(*v.get(index)?),
            TensorData::Int16(v) => f64::from(*v.get(index)?),
            TensorData::Int32(v) => f64::from(*v.get(index)?),
            TensorData::Int64(v) => *v.get(index)? as f64,
            TensorData::Fp16(v) => v.get(index)?.to_f64(),
            TensorData::Bf16(v) => v.get(index)?.to_f64(),
            TensorData::Fp32(v) => f64::from(*v.get(index)?),
            TensorData::Fp64(v) => *v.get(index)?,
            TensorData::Bytes(_) => return None,
        })
    }

    /// Element `index` of a string tensor; `None` for numbers or past the end.
    pub(crate) fn text_at(&self, index: usize) -> Option<&str> {
        match self {
            TensorData::Bytes(v) => v.get(index).map(String::as_str),
            _ => None,
        }
    }

    /// `len` default values of `datatype`: zeros, `false` or empty strings.
    pub(crate) fn filled_default(datatype: DataType, len: usize) -> TensorData {
        match datatype {
            DataType::Bool => TensorData::Bool(vec![false; len]),
            DataType::Uint8 => TensorData::Uint8(vec![0; len]),
            DataType::Uint16 => TensorData::Uint16(vec![0; len]),
            DataType::Uint32 => TensorData::Uint32(vec![0; len]),
            DataType::Uint64 => TensorData::Uint64(vec![0; len]),
            DataType::Int8 => TensorData::Int8(vec![0; len]),
            DataType::Int16 => TensorData::Int16(vec![0; len]),
            DataType::Int32 => TensorData::Int32(vec![0; len]),
            DataType::Int64 => TensorData::Int64(vec![0; len]),
            DataType::Fp16 => TensorData::Fp16(vec![f16::ZERO; len]),
            DataType::Bf16 => TensorData::Bf16(vec![bf16::ZERO; len]),
            DataType::Fp32 => TensorData::Fp32(vec![0.0; len]),
            DataType::Fp64 => TensorData::Fp64(vec![0.0; len]),
            DataType::Bytes => TensorData::Bytes(vec![String::new(); len]),
        }
    }
}

/// The number of elements a shape holds, or `None` when the product overflows `usize`.
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
}

/// A shape plus a buffer whose length is the shape's element count.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// A buffer whose length does not match its shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shape {shape:?} holds {expected} values, but {actual} were given")]
pub struct ShapeMismatch {
    pub(crate) shape: Vec<usize>,
    pub(crate) expected: String,
    pub(crate) actual: usize,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, ShapeMismatch> {
        match element_count(&shape) {
            Some(count) if count == data.len() => Ok(Tensor { shape, data }),
            count => Err(ShapeMismatch {
                expected: count
                    .map_or_else(|| "more than usize::MAX".to_owned(), |c| c.to_string()),
                shape,
                actual: data.len(),
            }),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub(crate) fn datatype(&self) -> DataType {
        self.data.datatype()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_round_trip() {
        for dt in DataType::ALL {
            assert_eq!(DataType::from_protocol_name(dt.as_str()), Some(dt));
        }
        assert_eq!(DataType::from_protocol_name("fp32"), None);
        assert_eq!(DataType::from_protocol_name("FLOAT"), None);
    }

    #[test]
    fn tensor_checks_length_against_shape() {
        assert!(Tensor::new(vec![2, 3], TensorData::Fp32(vec![0.0; 6])).is_ok());
        let err = Tensor::new(vec![2, 3], TensorData::Fp32(vec![0.0; 5])).unwrap_err();
        assert_eq!(err.expected, "6");
        assert_eq!(err.actual, 5);
        assert!(Tensor::new(vec![], TensorData::Int64(vec![7])).is_ok());
        assert!(Tensor::new(vec![0, 4], TensorData::Bytes(vec![])).is_ok());
    }

    #[test]
    fn overflowing_shapes_are_rejected_not_wrapped() {
        assert_eq!(element_count(&[usize::MAX, 2]), None);
        let err = Tensor::new(vec![usize::MAX, 2], TensorData::Bool(vec![])).unwrap_err();
        assert!(err.to_string().contains("more than"));
    }

    #[test]
    fn filled_default_has_requested_type_and_length() {
        for dt in DataType::ALL {
            let data = TensorData::filled_default(dt, 3);
            assert_eq!(data.datatype(), dt);
            assert_eq!(data.len(), 3);
        }
    }
}
