//! The `MLmodel` file: which flavor's file is the model, the signature, and the input example,
//! as typed structs. Only the fields pinserve reads are declared; the rest are ignored.

use serde::Deserialize;

use super::{example::ExampleInfo, signature::MlflowSignature};

/// The parts of an `MLmodel` file pinserve uses.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct MlModel {
    #[serde(default)]
    flavors: Flavors,
    #[serde(default)]
    signature: Option<RawSignature>,
    #[serde(default)]
    saved_input_example_info: Option<ExampleInfo>,
}

#[derive(Debug, Default, Deserialize)]
struct Flavors {
    #[serde(default)]
    onnx: Option<OnnxFlavor>,
}

/// `flavors.onnx`: `data` is the model file, relative to the `MLmodel`.
#[derive(Debug, Deserialize)]
struct OnnxFlavor {
    data: String,
}

/// MLflow stores each half of the signature as a JSON string inside the YAML.
#[derive(Debug, Deserialize)]
struct RawSignature {
    #[serde(default)]
    inputs: Option<String>,
    #[serde(default)]
    outputs: Option<String>,
}

/// Why an `MLmodel` file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MlModelError {
    /// Boxed: the YAML error is large, and errors travel in every `Result` up to `app`.
    #[error("cannot read MLmodel: {0}")]
    Yaml(#[source] Box<serde_saphyr::Error>),
    #[error("the MLmodel signature is not valid JSON: {0}")]
    Signature(#[source] serde_json::Error),
}

impl MlModel {
    pub(crate) fn parse(text: &str) -> Result<MlModel, MlModelError> {
        serde_saphyr::from_str(text).map_err(|err| MlModelError::Yaml(Box::new(err)))
    }

    /// The file the `onnx` flavor names, if the model has that flavor.
    pub(crate) fn onnx_data(&self) -> Option<&str> {
        self.flavors
            .onnx
            .as_ref()
            .map(|flavor| flavor.data.as_str())
    }

    /// Where the version's input example is, if it was logged with one.
    pub(crate) fn input_example_info(&self) -> Option<&ExampleInfo> {
        self.saved_input_example_info.as_ref()
    }

    /// The signature, each half decoded from its JSON string.
    pub(crate) fn signature(&self) -> Result<Option<MlflowSignature>, MlModelError> {
        let Some(raw) = &self.signature else {
            return Ok(None);
        };
        let half = |json: &Option<String>| {
            json.as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(MlModelError::Signature)
        };
        Ok(Some(MlflowSignature {
            inputs: half(&raw.inputs)?,
            outputs: half(&raw.outputs)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DataType, Dim, Signature, TensorSpec};

    /// `MLmodel` files as MLflow 3.17.2's `mlflow.onnx.log_model` writes them, by
    /// `testdata/generate.py`.
    mod fixtures {
        pub(super) const PLAIN: &str = include_str!("testdata/plain.MLmodel");
        pub(super) const EXAMPLE: &str = include_str!("testdata/example.MLmodel");
        pub(super) const SIGNED: &str = include_str!("testdata/signed.MLmodel");
    }

    #[test]
    fn each_model_names_its_onnx_file_and_has_what_it_was_logged_with() {
        for (text, signed, with_example) in [
            (fixtures::PLAIN, false, false),
            (fixtures::EXAMPLE, false, true),
            (fixtures::SIGNED, true, true),
        ] {
            let mlmodel = MlModel::parse(text).unwrap();
            assert_eq!(mlmodel.onnx_data(), Some("model.onnx"));
            assert_eq!(mlmodel.signature().unwrap().is_some(), signed);
            assert_eq!(mlmodel.input_example_info().is_some(), with_example);
        }
    }

    #[test]
    fn a_signed_model_has_a_typed_signature_that_matches_its_graph() {
        let mlmodel = MlModel::parse(fixtures::SIGNED).unwrap();
        let signature = mlmodel.signature().unwrap().expect("a signature");
        let inputs = signature.inputs.as_deref().unwrap();
        assert_eq!(inputs[0].name.as_deref(), Some("features"));
        let spec = inputs[0].tensor_spec.as_ref().unwrap();
        assert_eq!(
            (spec.dtype.as_deref(), spec.shape.as_deref()),
            (Some("float32"), Some(&[-1, 4][..]))
        );
        let dims = vec![Dim::Dynamic(None), Dim::Fixed(4)];
        let graph = Signature {
            inputs: vec![TensorSpec::new("features", DataType::Fp32, dims.clone())],
            outputs: vec![TensorSpec::new("score", DataType::Fp32, dims)],
        };
        signature.check(&graph).unwrap();
    }

    #[test]
    fn the_signature_reads_back_as_the_json_mlflow_wrote() {
        let signature = MlModel::parse(fixtures::SIGNED)
            .unwrap()
            .signature()
            .unwrap()
            .unwrap();
        let spec = serde_json::json!({"name": "features", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}});
        let expected = serde_json::json!({"inputs": [spec], "outputs": [
            {"name": "score", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}
        ]});
        assert_eq!(signature.to_json(), expected);
    }

    #[test]
    fn a_model_without_the_onnx_flavor_has_no_data() {
        let mlmodel =
            MlModel::parse("flavors:\n  sklearn:\n    pickled_model: model.pkl\n").unwrap();
        assert_eq!(mlmodel.onnx_data(), None);
        assert!(mlmodel.signature().unwrap().is_none());
    }

    #[test]
    fn broken_files_and_signatures_say_what_is_wrong() {
        let err = MlModel::parse("flavors: [").unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read MLmodel: "),
            "{err}"
        );
        let broken = "signature:\n  inputs: '[{\"name\": '\n";
        let err = MlModel::parse(broken).unwrap().signature().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the MLmodel signature is not valid JSON: "),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
