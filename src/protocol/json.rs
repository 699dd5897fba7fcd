//! Tensor data in JSON, both ways, without an intermediate `serde_json::Value` tree: nested or
//! flat arrays are decoded straight into the typed buffer, and buffers are written straight from
//! their slices.

use std::fmt;

use half::{bf16, f16};
use serde::{
    Serialize, Serializer,
    de::{self, DeserializeSeed, Deserializer, SeqAccess, Unexpected, Visitor},
    ser::SerializeSeq,
};

use crate::model::{DataType, TensorData, tensor::with_buffer};

/// Why a JSON scalar cannot become an element of some type.
enum Reject {
    WrongKind,
    OutOfRange,
    NotAnInteger,
}

/// An element type that JSON scalars can be decoded into and encoded from.
trait JsonElement: Sized {
    const EXPECTED: &'static str;

    fn from_bool(_: bool) -> Result<Self, Reject> {
        Err(Reject::WrongKind)
    }
    fn from_i64(_: i64) -> Result<Self, Reject> {
        Err(Reject::WrongKind)
    }
    fn from_u64(_: u64) -> Result<Self, Reject> {
        Err(Reject::WrongKind)
    }
    fn from_f64(_: f64) -> Result<Self, Reject> {
        Err(Reject::WrongKind)
    }
    fn from_str(_: &str) -> Result<Self, Reject> {
        Err(Reject::WrongKind)
    }
    fn serialize_element<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
}

impl JsonElement for bool {
    const EXPECTED: &'static str = "a BOOL (true or false)";
    fn from_bool(value: bool) -> Result<Self, Reject> {
        Ok(value)
    }
    fn serialize_element<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(*self)
    }
}

impl JsonElement for String {
    const EXPECTED: &'static str = "a BYTES value (a string)";
    fn from_str(value: &str) -> Result<Self, Reject> {
        Ok(value.to_owned())
    }
    fn serialize_element<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

/// JSON integers, and floats with no fractional part (`3.0`), convert when in range.
macro_rules! integer_element {
    ($($ty:ty => $expected:literal),* $(,)?) => {$(
        impl JsonElement for $ty {
            const EXPECTED: &'static str = $expected;
            fn from_i64(value: i64) -> Result<Self, Reject> {
                <$ty>::try_from(value).map_err(|_| Reject::OutOfRange)
            }
            fn from_u64(value: u64) -> Result<Self, Reject> {
                <$ty>::try_from(value).map_err(|_| Reject::OutOfRange)
            }
            fn from_f64(value: f64) -> Result<Self, Reject> {
                if value.fract() != 0.0 || !value.is_finite() {
                    return Err(Reject::NotAnInteger);
                }
                // Outside i64/u64 no integer type here can hold it; `as` saturates, so check first.
                if (0.0..18_446_744_073_709_551_616.0).contains(&value) {
                    Self::from_u64(value as u64)
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&value) {
                    Self::from_i64(value as i64)
                } else {
                    Err(Reject::OutOfRange)
                }
            }
            fn serialize_element<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.serialize(serializer)
            }
        }
    )*};
}

integer_element!(
    u8 => "a UINT8 integer", u16 => "a UINT16 integer", u32 => "a UINT32 integer",
    u64 => "a UINT64 integer", i8 => "an INT8 integer", i16 => "an INT16 integer",
    i32 => "an INT32 integer", i64 => "an INT64 integer",
);

/// JSON numbers convert to floats; a finite number too large for the type is refused rather
/// than silently becoming infinity.
macro_rules! float_element {
    ($($ty:ty => $expected:literal, $from_f64:expr, $to_f64:expr;)*) => {$(
        impl JsonElement for $ty {
            const EXPECTED: &'static str = $expected;
            fn from_i64(value: i64) -> Result<Self, Reject> {
                <Self as JsonElement>::from_f64(value as f64)
            }
            fn from_u64(value: u64) -> Result<Self, Reject> {
                <Self as JsonElement>::from_f64(value as f64)
            }
            fn from_f64(value: f64) -> Result<Self, Reject> {
                let converted: $ty = ($from_f64)(value);
                if value.is_finite() && !($to_f64)(converted).is_finite() {
                    return Err(Reject::OutOfRange);
                }
                Ok(converted)
            }
            fn serialize_element<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let value: f64 = ($to_f64)(*self);
                if std::mem::size_of::<$ty>() == 8 {
                    serializer.serialize_f64(value)
                } else {
                    // Written as f32 so values print in their shortest round-tripping form.
                    serializer.serialize_f32(value as f32)
                }
            }
        }
    )*};
}

float_element!(
    f32 => "an FP32 number", |v: f64| v as f32, |v: f32| f64::from(v);
    f64 => "an FP64 number", |v: f64| v, |v: f64| v;
    f16 => "an FP16 number", f16::from_f64, f16::to_f64;
    bf16 => "a BF16 number", bf16::from_f64, bf16::to_f64;
);

/// Appends every scalar of a (possibly nested) JSON array to one buffer.
struct Flatten<'a, T>(&'a mut Vec<T>);

impl<'de, T: JsonElement> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<T: JsonElement> Flatten<'_, T> {
    fn push<E: de::Error>(
        self,
        converted: Result<T, Reject>,
        found: Unexpected<'_>,
    ) -> Result<(), E> {
        match converted {
            Ok(value) => {
                self.0.push(value);
                Ok(())
            }
            Err(Reject::WrongKind) => Err(E::invalid_type(found, &T::EXPECTED)),
            Err(Reject::OutOfRange) => Err(E::custom(format_args!(
                "{found} is out of range for {}",
                T::EXPECTED
            ))),
            Err(Reject::NotAnInteger) => Err(E::invalid_value(found, &T::EXPECTED)),
        }
    }
}

impl<'de, T: JsonElement> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} or an array of them", T::EXPECTED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.push(T::from_bool(value), Unexpected::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.push(T::from_i64(value), Unexpected::Signed(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.push(T::from_u64(value), Unexpected::Unsigned(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.push(T::from_f64(value), Unexpected::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.push(T::from_str(value), Unexpected::Str(value))
    }
}

fn flatten<'de, T: JsonElement, D: Deserializer<'de>>(
    deserializer: D,
    capacity: usize,
) -> Result<Vec<T>, D::Error> {
    let mut values = Vec::with_capacity(capacity);
    Flatten(&mut values).deserialize(deserializer)?;
    Ok(values)
}

/// Decodes a JSON scalar or (nested) array of `datatype` elements into a flat buffer.
/// `capacity` is a hint; callers bound it by the input size so a lying shape cannot make us
/// allocate more than the body could hold.
pub(crate) fn decode<'de, D: Deserializer<'de>>(
    datatype: DataType,
    deserializer: D,
    capacity: usize,
) -> Result<TensorData, D::Error> {
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(flatten(deserializer, capacity)?),
        DataType::Uint8 => TensorData::Uint8(flatten(deserializer, capacity)?),
        DataType::Uint16 => TensorData::Uint16(flatten(deserializer, capacity)?),
        DataType::Uint32 => TensorData::Uint32(flatten(deserializer, capacity)?),
        DataType::Uint64 => TensorData::Uint64(flatten(deserializer, capacity)?),
        DataType::Int8 => TensorData::Int8(flatten(deserializer, capacity)?),
        DataType::Int16 => TensorData::Int16(flatten(deserializer, capacity)?),
        DataType::Int32 => TensorData::Int32(flatten(deserializer, capacity)?),
        DataType::Int64 => TensorData::Int64(flatten(deserializer, capacity)?),
        DataType::Fp16 => TensorData::Fp16(flatten(deserializer, capacity)?),
        DataType::Bf16 => TensorData::Bf16(flatten(deserializer, capacity)?),
        DataType::Fp32 => TensorData::Fp32(flatten(deserializer, capacity)?),
        DataType::Fp64 => TensorData::Fp64(flatten(deserializer, capacity)?),
        DataType::Bytes => TensorData::Bytes(flatten(deserializer, capacity)?),
    })
}

/// Decodes raw JSON text (a `RawValue` captured from a request) into a flat buffer.
pub(crate) fn decode_raw(
    datatype: DataType,
    raw: &str,
    expected_len: usize,
) -> Result<TensorData, serde_json::Error> {
    // Every element takes at least two bytes of JSON ("0,"), which bounds the allocation.
    let capacity = expected_len.min(raw.len() / 2 + 1);
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    let data = decode(datatype, &mut deserializer, capacity)?;
    deserializer.end()?;
    Ok(data)
}

/// The shape of nested JSON arrays, learned while their scalars are decoded: every array at one
/// depth must have the same length, and every scalar must sit at the same depth.
#[derive(Default)]
struct Nesting {
    /// The length of the arrays at each depth, known once the first of them has closed.
    lengths: Vec<Option<usize>>,
    scalar_depth: Option<usize>,
    /// One more than the deepest array seen so far.
    array_depth: usize,
}

impl Nesting {
    fn open_array(&mut self, depth: usize) -> Result<(), String> {
        if self.scalar_depth.is_some_and(|scalars| depth >= scalars) {
            return Err(format!(
                "ragged nested arrays: an array at depth {depth}, where others hold numbers or strings"
            ));
        }
        self.array_depth = self.array_depth.max(depth + 1);
        Ok(())
    }

    fn close_array(&mut self, depth: usize, length: usize) -> Result<(), String> {
        if self.lengths.len() <= depth {
            self.lengths.resize(depth + 1, None);
        }
        match self.lengths[depth].replace(length) {
            Some(earlier) if earlier != length => Err(format!(
                "ragged nested arrays: an array at depth {depth} has {length} elements, an earlier one {earlier}"
            )),
            _ => Ok(()),
        }
    }

    fn scalar(&mut self, depth: usize) -> Result<(), String> {
        match self.scalar_depth {
            None if self.array_depth > depth => Err(format!(
                "ragged nested arrays: a value at depth {depth}, where others are arrays"
            )),
            None => {
                self.scalar_depth = Some(depth);
                Ok(())
            }
            Some(scalars) if scalars == depth => Ok(()),
            Some(scalars) => Err(format!(
                "ragged nested arrays: a value at depth {depth}, others at depth {scalars}"
            )),
        }
    }

    fn shape(&self) -> Vec<usize> {
        self.lengths
            .iter()
            .map(|length| length.unwrap_or(0))
            .collect()
    }
}

/// Scalars are checked for their depth, then decoded as [`Flatten`] decodes them.
macro_rules! shaped_scalars {
    ($($method:ident($ty:ty)),*) => {$(
        fn $method<E: de::Error>(self, value: $ty) -> Result<(), E> {
            self.nesting.scalar(self.depth).map_err(E::custom)?;
            Flatten(self.values).$method(value)
        }
    )*};
}

/// Like [`Flatten`], also learning the nesting's shape.
struct Shaped<'a, T> {
    values: &'a mut Vec<T>,
    nesting: &'a mut Nesting,
    depth: usize,
}

impl<'de, T: JsonElement> DeserializeSeed<'de> for Shaped<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: JsonElement> Visitor<'de> for Shaped<'_, T> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} or an array of them", T::EXPECTED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.nesting
            .open_array(self.depth)
            .map_err(de::Error::custom)?;
        let mut length = 0;
        while seq
            .next_element_seed(Shaped {
                values: &mut *self.values,
                nesting: &mut *self.nesting,
                depth: self.depth + 1,
            })?
            .is_some()
        {
            length += 1;
        }
        self.nesting
            .close_array(self.depth, length)
            .map_err(de::Error::custom)
    }

    shaped_scalars!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );
}

fn nested<T: JsonElement>(
    texts: &[&str],
    stacked: bool,
) -> Result<(Vec<usize>, Vec<T>), serde_json::Error> {
    let mut values = Vec::new();
    let mut nesting = Nesting::default();
    for text in texts {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        Shaped {
            values: &mut values,
            nesting: &mut nesting,
            depth: 0,
        }
        .deserialize(&mut deserializer)?;
        deserializer.end()?;
    }
    let mut shape = nesting.shape();
    if stacked {
        shape.insert(0, texts.len());
    }
    Ok((shape, values))
}

/// Decodes JSON text of (nested) arrays of `datatype` elements into a flat buffer and the shape
/// of the nesting, without a `Value` tree; ragged nesting is an error. With `stacked`, each of
/// `texts` is one row: all must have the same shape, and the result's is `[rows, ...that]`.
pub(crate) fn decode_nested(
    datatype: DataType,
    texts: &[&str],
    stacked: bool,
) -> Result<(Vec<usize>, TensorData), serde_json::Error> {
    macro_rules! each {
        ($($variant:ident),*) => {
            match datatype {
                $(DataType::$variant => {
                    let (shape, values) = nested(texts, stacked)?;
                    (shape, TensorData::$variant(values))
                })*
            }
        };
    }
    Ok(each!(
        Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Bf16, Fp32, Fp64,
        Bytes
    ))
}

/// A buffer written as a flat JSON array.
pub(crate) struct FlatJson<'a>(pub(crate) &'a TensorData);

impl Serialize for FlatJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        with_buffer!(self.0, values => serialize_nested(values, &[values.len()], serializer))
    }
}

/// Part of a buffer written as nested JSON arrays following `shape` (a scalar for `[]`).
/// `values` must hold exactly the shape's element count.
pub(crate) struct NestedJson<'a> {
    pub(crate) data: &'a TensorData,
    pub(crate) shape: &'a [usize],
    pub(crate) range: std::ops::Range<usize>,
}

impl Serialize for NestedJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        with_buffer!(self.data, values => serialize_nested(&values[self.range.clone()], self.shape, serializer))
    }
}

struct NestedSlice<'a, T> {
    values: &'a [T],
    shape: &'a [usize],
}

impl<T: JsonElement> Serialize for NestedSlice<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_nested(self.values, self.shape, serializer)
    }
}

fn serialize_nested<T: JsonElement, S: Serializer>(
    values: &[T],
    shape: &[usize],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let Some((&outer, inner)) = shape.split_first() else {
        return match values.first() {
            Some(value) => value.serialize_element(serializer),
            None => serializer.serialize_none(),
        };
    };
    let mut seq = serializer.serialize_seq(Some(outer))?;
    if inner.is_empty() {
        for value in values.iter().take(outer) {
            seq.serialize_element(&Scalar(value))?;
        }
    } else {
        let stride: usize = inner.iter().product();
        for row in 0..outer {
            let start = (row * stride).min(values.len());
            let end = (start + stride).min(values.len());
            seq.serialize_element(&NestedSlice {
                values: &values[start..end],
                shape: inner,
            })?;
        }
    }
    seq.end()
}

struct Scalar<'a, T>(&'a T);

impl<T: JsonElement> Serialize for Scalar<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_element(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(datatype: DataType, text: &str) -> Result<TensorData, String> {
        decode_raw(datatype, text, 16).map_err(|e| e.to_string())
    }

    #[test]
    fn decodes_flat_and_nested_arrays_alike() {
        assert_eq!(
            raw(DataType::Fp32, "[1, 2.5, -3]"),
            Ok(TensorData::Fp32(vec![1.0, 2.5, -3.0]))
        );
        assert_eq!(
            raw(DataType::Fp32, "[[1, 2.5], [-3, 4]]"),
            Ok(TensorData::Fp32(vec![1.0, 2.5, -3.0, 4.0]))
        );
        assert_eq!(raw(DataType::Int64, "7"), Ok(TensorData::Int64(vec![7])));
        assert_eq!(
            raw(DataType::Bool, "[[true], [false]]"),
            Ok(TensorData::Bool(vec![true, false]))
        );
        assert_eq!(
            raw(DataType::Bytes, r#"["a", "naïve ☃", ""]"#),
            Ok(TensorData::Bytes(vec![
                "a".into(),
                "naïve ☃".into(),
                "".into()
            ]))
        );
    }

    #[test]
    fn integer_types_check_range_and_integrality() {
        assert_eq!(
            raw(DataType::Int8, "[-128, 127, 3.0]"),
            Ok(TensorData::Int8(vec![-128, 127, 3]))
        );
        assert!(
            raw(DataType::Int8, "[128]")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            raw(DataType::Uint8, "[-1]")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            raw(DataType::Int64, "[1.5]")
                .unwrap_err()
                .contains("expected an INT64 integer")
        );
        assert_eq!(
            raw(DataType::Uint64, "[18446744073709551615]"),
            Ok(TensorData::Uint64(vec![u64::MAX]))
        );
        assert!(
            raw(DataType::Uint64, "[1e30]")
                .unwrap_err()
                .contains("out of range")
        );
    }

    #[test]
    fn floats_refuse_values_they_cannot_hold() {
        assert!(
            raw(DataType::Fp32, "[1e39]")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            raw(DataType::Fp16, "[70000]")
                .unwrap_err()
                .contains("out of range")
        );
        assert_eq!(
            raw(DataType::Fp16, "[0.5, 2]"),
            Ok(TensorData::Fp16(vec![
                f16::from_f32(0.5),
                f16::from_f32(2.0)
            ]))
        );
        assert_eq!(
            raw(DataType::Fp64, "[1e300]"),
            Ok(TensorData::Fp64(vec![1e300]))
        );
    }

    #[test]
    fn wrong_kinds_name_the_expected_type() {
        let err = raw(DataType::Fp32, r#"[1, "two"]"#).unwrap_err();
        assert!(
            err.contains(r#"invalid type: string "two", expected an FP32 number"#),
            "{err}"
        );
        assert!(
            raw(DataType::Bool, "[1]")
                .unwrap_err()
                .contains("expected a BOOL")
        );
        assert!(
            raw(DataType::Bytes, "[1]")
                .unwrap_err()
                .contains("expected a BYTES value")
        );
        assert!(
            raw(DataType::Fp32, "[null]")
                .unwrap_err()
                .contains("invalid type: null")
        );
        assert!(
            raw(DataType::Fp32, r#"{"a": 1}"#)
                .unwrap_err()
                .contains("invalid type: map")
        );
        assert!(raw(DataType::Fp32, "[1] 2").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(
            raw(DataType::Fp32, &deep)
                .unwrap_err()
                .contains("recursion limit")
        );
    }

    #[test]
    fn encodes_flat_and_nested() {
        let data = TensorData::Fp32(vec![1.0, 0.1, -2.5, 3.0]);
        assert_eq!(
            serde_json::to_string(&FlatJson(&data)).unwrap(),
            "[1.0,0.1,-2.5,3.0]"
        );
        let nested = NestedJson {
            data: &data,
            shape: &[2, 2],
            range: 0..4,
        };
        assert_eq!(
            serde_json::to_string(&nested).unwrap(),
            "[[1.0,0.1],[-2.5,3.0]]"
        );
        let row = NestedJson {
            data: &data,
            shape: &[2],
            range: 2..4,
        };
        assert_eq!(serde_json::to_string(&row).unwrap(), "[-2.5,3.0]");
        let scalar = NestedJson {
            data: &data,
            shape: &[],
            range: 3..4,
        };
        assert_eq!(serde_json::to_string(&scalar).unwrap(), "3.0");
    }

    #[test]
    fn half_precision_is_written_as_numbers() {
        let data = TensorData::Fp16(vec![f16::from_f32(0.5), f16::from_f32(-2.0)]);
        assert_eq!(
            serde_json::to_string(&FlatJson(&data)).unwrap(),
            "[0.5,-2.0]"
        );
        let data = TensorData::Bf16(vec![bf16::from_f32(1.5)]);
        assert_eq!(serde_json::to_string(&FlatJson(&data)).unwrap(), "[1.5]");
    }

    #[test]
    fn every_datatype_round_trips() {
        for datatype in DataType::ALL {
            let data = TensorData::filled_default(datatype, 3);
            let text = serde_json::to_string(&FlatJson(&data)).unwrap();
            assert_eq!(
                decode_raw(datatype, &text, 3).unwrap(),
                data,
                "{datatype}: {text}"
            );
        }
    }
}
