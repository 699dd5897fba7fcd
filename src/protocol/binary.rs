//! Tensor data in the binary tensor data extension of the Open Inference Protocol: elements in
//! little-endian byte order, row major, no padding; BOOL as one byte (0 or 1); each BYTES element
//! as a 4-byte little-endian length followed by its bytes. Triton's own clients send and ask for
//! tensors this way, and it removes the float-to-text cost of JSON for large tensors.

use half::{bf16, f16};

use crate::model::{DataType, TensorData};

/// Why a tensor's bytes cannot be read as its datatype.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BinaryError {
    #[error("{got} bytes cannot hold {elements} {datatype} values ({width} bytes each)")]
    WrongSize {
        got: usize,
        elements: usize,
        datatype: DataType,
        width: usize,
    },
    #[error("BOOL element {index} is the byte {byte}; only 0 and 1 are booleans")]
    NotABool { index: usize, byte: u8 },
    #[error("BYTES element {index}: {problem}")]
    BadBytesElement { index: usize, problem: String },
    #[error("{extra} bytes follow the last of the {elements} BYTES elements")]
    TrailingBytes { extra: usize, elements: usize },
}

/// Reads `elements` values of `datatype` from `bytes`, which must hold exactly those.
pub(crate) fn decode(
    datatype: DataType,
    bytes: &[u8],
    elements: usize,
) -> Result<TensorData, BinaryError> {
    macro_rules! numeric {
        ($variant:ident, $ty:ty) => {{
            const WIDTH: usize = std::mem::size_of::<$ty>();
            check_size(bytes, elements, datatype, WIDTH)?;
            TensorData::$variant(
                bytes
                    .chunks_exact(WIDTH)
                    .map(|chunk| <$ty>::from_le_bytes(chunk.try_into().expect("exact chunks")))
                    .collect(),
            )
        }};
    }
    Ok(match datatype {
        DataType::Bool => {
            check_size(bytes, elements, datatype, 1)?;
            TensorData::Bool(
                bytes
                    .iter()
                    .enumerate()
                    .map(|(index, &byte)| match byte {
                        0 => Ok(false),
                        1 => Ok(true),
                        _ => Err(BinaryError::NotABool { index, byte }),
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        DataType::Uint8 => {
            check_size(bytes, elements, datatype, 1)?;
            TensorData::Uint8(bytes.to_vec())
        }
        DataType::Int8 => {
            check_size(bytes, elements, datatype, 1)?;
            TensorData::Int8(bytes.iter().map(|&byte| byte as i8).collect())
        }
        DataType::Uint16 => numeric!(Uint16, u16),
        DataType::Uint32 => numeric!(Uint32, u32),
        DataType::Uint64 => numeric!(Uint64, u64),
        DataType::Int16 => numeric!(Int16, i16),
        DataType::Int32 => numeric!(Int32, i32),
        DataType::Int64 => numeric!(Int64, i64),
        DataType::Fp16 => numeric!(Fp16, f16),
        DataType::Bf16 => numeric!(Bf16, bf16),
        DataType::Fp32 => numeric!(Fp32, f32),
        DataType::Fp64 => numeric!(Fp64, f64),
        DataType::Bytes => TensorData::Bytes(decode_bytes(bytes, elements)?),
    })
}

fn check_size(
    bytes: &[u8],
    elements: usize,
    datatype: DataType,
    width: usize,
) -> Result<(), BinaryError> {
    if elements.checked_mul(width) == Some(bytes.len()) {
        Ok(())
    } else {
        Err(BinaryError::WrongSize {
            got: bytes.len(),
            elements,
            datatype,
            width,
        })
    }
}

/// Length-prefixed elements. ONNX Runtime's string tensors hold UTF-8, so other bytes are refused.
fn decode_bytes(mut bytes: &[u8], elements: usize) -> Result<Vec<String>, BinaryError> {
    // Each element takes at least its 4-byte length, which bounds what a lying shape can allocate.
    let mut strings = Vec::with_capacity(elements.min(bytes.len() / 4));
    for index in 0..elements {
        let problem = |problem: String| BinaryError::BadBytesElement { index, problem };
        let Some((length, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(problem(format!(
                "the data ends before its 4-byte length ({} bytes left)",
                bytes.len()
            )));
        };
        let length = u32::from_le_bytes(*length) as usize;
        if rest.len() < length {
            return Err(problem(format!(
                "its length is {length} bytes but only {} are left",
                rest.len()
            )));
        }
        let (element, rest) = rest.split_at(length);
        let element = std::str::from_utf8(element)
            .map_err(|err| problem(format!("not UTF-8 text ({err})")))?;
        strings.push(element.to_owned());
        bytes = rest;
    }
    if bytes.is_empty() {
        Ok(strings)
    } else {
        Err(BinaryError::TrailingBytes {
            extra: bytes.len(),
            elements,
        })
    }
}

/// Appends `data` to `out` in the extension's layout; returns the number of bytes written.
pub fn encode(data: &TensorData, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    macro_rules! numeric {
        ($values:expr) => {{
            out.reserve(std::mem::size_of_val($values.as_slice()));
            for value in $values {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }};
    }
    match data {
        TensorData::Bool(values) => out.extend(values.iter().map(|&value| u8::from(value))),
        TensorData::Uint8(values) => out.extend_from_slice(values),
        TensorData::Int8(values) => out.extend(values.iter().map(|&value| value as u8)),
        TensorData::Uint16(values) => numeric!(values),
        TensorData::Uint32(values) => numeric!(values),
        TensorData::Uint64(values) => numeric!(values),
        TensorData::Int16(values) => numeric!(values),
        TensorData::Int32(values) => numeric!(values),
        TensorData::Int64(values) => numeric!(values),
        TensorData::Fp16(values) => numeric!(values),
        TensorData::Bf16(values) => numeric!(values),
        TensorData::Fp32(values) => numeric!(values),
        TensorData::Fp64(values) => numeric!(values),
        TensorData::Bytes(values) => {
            for value in values {
                let length =
                    u32::try_from(value.len()).expect("a tensor element is smaller than 4 GiB");
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(value.as_bytes());
            }
        }
    }
    out.len() - start
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn round_trip(data: TensorData) {
        let mut bytes = Vec::new();
        let written = encode(&data, &mut bytes);
        assert_eq!(written, bytes.len());
        let datatype = data.datatype();
        assert_eq!(decode(datatype, &bytes, data.len()).unwrap(), data);
    }

    #[test]
    fn every_datatype_round_trips() {
        round_trip(TensorData::Bool(vec![true, false, true]));
        round_trip(TensorData::Uint8(vec![0, 255]));
        round_trip(TensorData::Int8(vec![-128, 127]));
        round_trip(TensorData::Uint16(vec![0, u16::MAX]));
        round_trip(TensorData::Int16(vec![i16::MIN, 7]));
        round_trip(TensorData::Uint32(vec![u32::MAX]));
        round_trip(TensorData::Int32(vec![-1, 1]));
        round_trip(TensorData::Uint64(vec![u64::MAX]));
        round_trip(TensorData::Int64(vec![i64::MIN, 0]));
        round_trip(TensorData::Fp16(vec![
            f16::from_f32(1.5),
            f16::NEG_INFINITY,
        ]));
        round_trip(TensorData::Bf16(vec![bf16::from_f32(-2.0)]));
        round_trip(TensorData::Fp32(vec![0.1, f32::MAX]));
        round_trip(TensorData::Fp64(vec![1e-300, -0.0]));
        round_trip(TensorData::Bytes(vec![
            "yes".into(),
            String::new(),
            "é".into(),
        ]));
    }

    #[test]
    fn layout_is_the_one_triton_clients_use() {
        let mut out = Vec::new();
        encode(&TensorData::Fp32(vec![1.0, -2.0]), &mut out);
        assert_eq!(out, [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
        out.clear();
        encode(&TensorData::Bytes(vec!["ab".into(), "c".into()]), &mut out);
        assert_eq!(out, [2, 0, 0, 0, b'a', b'b', 1, 0, 0, 0, b'c']);
    }

    #[test]
    fn sizes_that_do_not_match_the_shape_are_refused() {
        assert_eq!(
            decode(DataType::Fp32, &[0; 7], 2).unwrap_err().to_string(),
            "7 bytes cannot hold 2 FP32 values (4 bytes each)"
        );
        assert!(decode(DataType::Int64, &[0; 8], usize::MAX).is_err());
        assert_eq!(
            decode(DataType::Bool, &[1, 2], 2).unwrap_err(),
            BinaryError::NotABool { index: 1, byte: 2 }
        );
    }

    #[test]
    fn malformed_bytes_elements_are_named() {
        let short = decode(DataType::Bytes, &[5, 0, 0, 0, b'a'], 1).unwrap_err();
        assert!(short.to_string().contains("element 0"), "{short}");
        let truncated = decode(DataType::Bytes, &[1, 0, 0, 0, b'a', 1, 0], 2).unwrap_err();
        assert!(truncated.to_string().contains("element 1"), "{truncated}");
        let not_utf8 = decode(DataType::Bytes, &[1, 0, 0, 0, 0xff], 1).unwrap_err();
        assert!(not_utf8.to_string().contains("not UTF-8"), "{not_utf8}");
        let trailing = decode(DataType::Bytes, &[0, 0, 0, 0, 9], 1).unwrap_err();
        assert_eq!(
            trailing,
            BinaryError::TrailingBytes {
                extra: 1,
                elements: 1
            }
        );
        // A huge element count with little data fails without allocating for the count.
        assert!(decode(DataType::Bytes, &[0, 0, 0, 0], usize::MAX).is_err());
    }

    proptest! {
        #[test]
        fn any_float_tensor_round_trips(values in proptest::collection::vec(any::<f32>(), 0..64)) {
            let mut bytes = Vec::new();
            encode(&TensorData::Fp32(values.clone()), &mut bytes);
            let TensorData::Fp32(back) = decode(DataType::Fp32, &bytes, values.len()).unwrap() else {
                unreachable!("decoded as FP32");
            };
            prop_assert!(back.iter().zip(&values).all(|(a, b)| a.to_bits() == b.to_bits()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), elements in 0usize..20) {
            for datatype in [DataType::Bytes, DataType::Bool, DataType::Fp16, DataType::Int32] {
                let _ = decode(datatype, &bytes, elements);
            }
        }
    }
}
