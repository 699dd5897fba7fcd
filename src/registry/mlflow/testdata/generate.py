"""Writes the MLmodel files the unit tests of src/registry/mlflow/mlmodel.rs read, as MLflow
3.17.2's `mlflow.onnx.log_model` writes them, for a one-node graph (`features` float32 [?, 4]
-> Relu -> `score`):

  plain.MLmodel    neither a signature nor an input example
  example.MLmodel  an ndarray input example, no signature (MLflow infers none for ONNX)
  signed.MLmodel   an inferred signature and a dict input example

    .venv-services/bin/python src/registry/mlflow/testdata/generate.py

Ids, times and the artifact path change with every run; nothing else does.
"""

import pathlib
import tempfile

import mlflow
import mlflow.onnx
import numpy as np
from mlflow.models import infer_signature
from onnx import TensorProto, helper

HERE = pathlib.Path(__file__).parent


def relu_model():
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 4])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 4])
    node = helper.make_node("Relu", ["features"], ["score"])
    graph = helper.make_graph([node], "relu", [features], [score])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def main():
    model = relu_model()
    example = np.array([[0.5, 1.0, -2.0, 3.0]], dtype=np.float32)
    signature = infer_signature({"features": example}, {"score": np.maximum(example, 0)})
    with tempfile.TemporaryDirectory() as store:
        mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
        mlflow.set_experiment(
            experiment_id=mlflow.create_experiment("fixtures", artifact_location=f"{store}/artifacts")
        )
        with mlflow.start_run():
            logged = {
                "plain": mlflow.onnx.log_model(model, name="plain"),
                "example": mlflow.onnx.log_model(model, name="example", input_example=example),
                "signed": mlflow.onnx.log_model(
                    model,
                    name="signed",
                    input_example={"features": example},
                    signature=signature,
                ),
            }
        for name, info in logged.items():
            directory = pathlib.Path(mlflow.artifacts.download_artifacts(info.model_uri))
            (HERE / f"{name}.MLmodel").write_text((directory / "MLmodel").read_text())


if __name__ == "__main__":
    main()
