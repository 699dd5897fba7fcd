//! Just enough of the protobuf wire format to read the ZipMap nodes of an ONNX file's main
//! graph. ONNX Runtime keeps node attributes to itself (its C API exposes none for a loaded
//! session), and a whole protobuf crate with generated ONNX types would be a large dependency
//! for three fields.

use super::zipmap::ClassLabels;

/// Why the model file could not be read as an ONNX `ModelProto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtoError {
    #[error("the protobuf data end in the middle of a field")]
    Truncated,
    #[error("the protobuf data hold a field of unknown wire type {0}")]
    WireType(u64),
    #[error("a string field is not UTF-8")]
    NotUtf8,
}

/// One field's payload, by wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one message, in file order.
struct Fields<'a> {
    rest: &'a [u8],
}

fn fields(message: &[u8]) -> Fields<'_> {
    Fields { rest: message }
}

fn varint(bytes: &mut &[u8]) -> Result<u64, ProtoError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(ProtoError::Truncated)?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ProtoError::Truncated)
}

fn take<'a>(bytes: &mut &'a [u8], count: u64) -> Result<&'a [u8], ProtoError> {
    let count = usize::try_from(count).map_err(|_| ProtoError::Truncated)?;
    if count > bytes.len() {
        return Err(ProtoError::Truncated);
    }
    let (taken, rest) = bytes.split_at(count);
    *bytes = rest;
    Ok(taken)
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u64, Payload<'a>), ProtoError> {
        let key = varint(&mut self.rest)?;
        let payload = match key & 7 {
            0 => Payload::Varint(varint(&mut self.rest)?),
            1 => take(&mut self.rest, 8).map(|_| Payload::Fixed)?,
            2 => {
                let length = varint(&mut self.rest)?;
                Payload::Bytes(take(&mut self.rest, length)?)
            }
            5 => take(&mut self.rest, 4).map(|_| Payload::Fixed)?,
            other => return Err(ProtoError::WireType(other)),
        };
        Ok((key >> 3, payload))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Payload<'a>), ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        (!self.rest.is_empty()).then(|| self.field())
    }
}

/// The length-delimited values of field `number` in `message`.
fn messages(message: &[u8], number: u64) -> impl Iterator<Item = Result<&[u8], ProtoError>> {
    fields(message).filter_map(move |field| match field {
        Ok((n, Payload::Bytes(bytes))) if n == number => Some(Ok(bytes)),
        Ok(_) => None,
        Err(err) => Some(Err(err)),
    })
}

fn text(bytes: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtoError::NotUtf8)
}

// Field numbers from onnx.proto.
const MODEL_GRAPH: u64 = 7;
const GRAPH_NODE: u64 = 1;
const NODE_OUTPUT: u64 = 2;
const NODE_OP_TYPE: u64 = 4;
const NODE_ATTRIBUTE: u64 = 5;
const NODE_DOMAIN: u64 = 7;
const ATTRIBUTE_NAME: u64 = 1;
const ATTRIBUTE_INTS: u64 = 8;
const ATTRIBUTE_STRINGS: u64 = 9;

/// The outputs written by the `ai.onnx.ml` ZipMap nodes of the model's main graph, each with
/// the node's class labels.
pub(crate) fn zipmap_outputs(model: &[u8]) -> Result<Vec<(String, ClassLabels)>, ProtoError> {
    let mut found = Vec::new();
    for graph in messages(model, MODEL_GRAPH) {
        for node in messages(graph?, GRAPH_NODE) {
            if let Some(zipmap) = zipmap_node(node?)? {
                found.push(zipmap);
            }
        }
    }
    Ok(found)
}

fn zipmap_node(node: &[u8]) -> Result<Option<(String, ClassLabels)>, ProtoError> {
    let (mut op_type, mut domain, mut output) = (None, None, None);
    let mut labels = None;
    for field in fields(node) {
        match field? {
            (NODE_OP_TYPE, Payload::Bytes(bytes)) => op_type = Some(bytes),
            (NODE_DOMAIN, Payload::Bytes(bytes)) => domain = Some(bytes),
            (NODE_OUTPUT, Payload::Bytes(bytes)) if output.is_none() => output = Some(bytes),
            (NODE_ATTRIBUTE, Payload::Bytes(bytes)) => labels = labels.or(class_labels(bytes)?),
            _ => {}
        }
    }
    if op_type != Some(b"ZipMap") || domain != Some(b"ai.onnx.ml") {
        return Ok(None);
    }
    match (output, labels) {
        (Some(output), Some(labels)) => Ok(Some((text(output)?, labels))),
        _ => Ok(None),
    }
}

/// The labels an attribute holds when it is `classlabels_int64s` or `classlabels_strings`.
fn class_labels(attribute: &[u8]) -> Result<Option<ClassLabels>, ProtoError> {
    let (mut name, mut ints, mut strings) = (None, Vec::new(), Vec::new());
    for field in fields(attribute) {
        match field? {
            (ATTRIBUTE_NAME, Payload::Bytes(bytes)) => name = Some(bytes),
            // Two's complement: a negative int64 is a ten-byte varint.
            (ATTRIBUTE_INTS, Payload::Varint(value)) => ints.push(value as i64),
            (ATTRIBUTE_INTS, Payload::Bytes(mut packed)) => {
                while !packed.is_empty() {
                    ints.push(varint(&mut packed)? as i64);
                }
            }
            (ATTRIBUTE_STRINGS, Payload::Bytes(bytes)) => strings.push(text(bytes)?),
            _ => {}
        }
    }
    Ok(match name {
        Some(b"classlabels_int64s") => Some(ClassLabels::Int64(ints)),
        Some(b"classlabels_strings") => Some(ClassLabels::Strings(strings)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn bytes_field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
        encode_varint(number << 3 | 2, out);
        encode_varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn varint_field(number: u64, value: u64, out: &mut Vec<u8>) {
        encode_varint(number << 3, out);
        encode_varint(value, out);
    }

    /// A model whose graph holds one node of `op_type` writing `probabilities`, with `attribute`.
    fn model(op_type: &str, attribute: &[u8]) -> Vec<u8> {
        let mut node = Vec::new();
        bytes_field(NODE_OUTPUT, b"probabilities", &mut node);
        bytes_field(NODE_OP_TYPE, op_type.as_bytes(), &mut node);
        bytes_field(NODE_ATTRIBUTE, attribute, &mut node);
        bytes_field(NODE_DOMAIN, b"ai.onnx.ml", &mut node);
        let mut graph = Vec::new();
        bytes_field(GRAPH_NODE, &node, &mut graph);
        let mut model = Vec::new();
        varint_field(1, 10, &mut model);
        bytes_field(MODEL_GRAPH, &graph, &mut model);
        model
    }

    #[test]
    fn reads_integer_labels_unpacked_and_packed_negative_included() {
        let mut unpacked = Vec::new();
        bytes_field(ATTRIBUTE_NAME, b"classlabels_int64s", &mut unpacked);
        for value in [-1i64, 0, 7] {
            varint_field(ATTRIBUTE_INTS, value as u64, &mut unpacked);
        }
        let mut packed = Vec::new();
        bytes_field(ATTRIBUTE_NAME, b"classlabels_int64s", &mut packed);
        let mut values = Vec::new();
        for value in [-1i64, 0, 7] {
            encode_varint(value as u64, &mut values);
        }
        bytes_field(ATTRIBUTE_INTS, &values, &mut packed);
        for attribute in [unpacked, packed] {
            assert_eq!(
                zipmap_outputs(&model("ZipMap", &attribute)).unwrap(),
                vec![(
                    "probabilities".to_owned(),
                    ClassLabels::Int64(vec![-1, 0, 7])
                )]
            );
        }
    }

    #[test]
    fn reads_string_labels_and_ignores_other_nodes() {
        let mut attribute = Vec::new();
        bytes_field(ATTRIBUTE_NAME, b"classlabels_strings", &mut attribute);
        bytes_field(ATTRIBUTE_STRINGS, "setosa".as_bytes(), &mut attribute);
        bytes_field(ATTRIBUTE_STRINGS, "naïve".as_bytes(), &mut attribute);
        let labels = ClassLabels::Strings(vec!["setosa".into(), "naïve".into()]);
        assert_eq!(
            zipmap_outputs(&model("ZipMap", &attribute)).unwrap(),
            vec![("probabilities".to_owned(), labels)]
        );
        assert_eq!(zipmap_outputs(&model("Normalizer", &attribute)), Ok(vec![]));
    }

    #[test]
    fn truncated_data_are_an_error() {
        let mut attribute = Vec::new();
        bytes_field(ATTRIBUTE_NAME, b"classlabels_strings", &mut attribute);
        let whole = model("ZipMap", &attribute);
        assert_eq!(
            zipmap_outputs(&whole[..whole.len() - 3]),
            Err(ProtoError::Truncated)
        );
    }
}
