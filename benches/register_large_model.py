"""Register a ~110 MB ONNX model in the MLflow server the fetch benchmark measures against.

An MLP 512-4096-4096-2048-256 (about 27.8 million float32 parameters) with fixed-seed weights,
logged with MLflow's defaults, so its weights land in an external-data file beside model.onnx as
they would for any real model of this size. Prints one JSON line: the registered name and
version, the artifact root and every file with its size, which the benchmark turns into the
URLs curl downloads.

Usage: .venv-services/bin/python benches/register_large_model.py TRACKING_URI
"""

from __future__ import annotations

import json
import sys

import mlflow
import numpy as np
import onnx
import requests
from onnx import TensorProto, helper, numpy_helper

NAME = "large-mlp"
SIZES = [512, 4096, 4096, 2048, 256]


def large_mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    nodes, initializers, previous = [], [], "x"
    for index, (fan_in, fan_out) in enumerate(zip(SIZES, SIZES[1:])):
        weight = (rng.standard_normal((fan_in, fan_out), dtype=np.float32) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{index}"),
            numpy_helper.from_array(np.zeros(fan_out, dtype=np.float32), f"b{index}"),
        ]
        output = "y" if index == len(SIZES) - 2 else f"h{index}"
        gemm = f"g{index}" if output != "y" else "y"
        nodes.append(helper.make_node("Gemm", [previous, f"w{index}", f"b{index}"], [gemm]))
        if output != "y":
            nodes.append(helper.make_node("Relu", [gemm], [output]))
        previous = output
    graph = helper.make_graph(
        nodes,
        NAME,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SIZES[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", SIZES[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def list_files(tracking: str, root: str, relative: str = "") -> list[dict]:
    path = f"{root}/{relative}".rstrip("/")
    answer = requests.get(f"{tracking}/api/2.0/mlflow-artifacts/artifacts", params={"path": path}, timeout=30)
    answer.raise_for_status()
    files = []
    for entry in answer.json().get("files", []):
        child = f"{relative}/{entry['path']}".lstrip("/")
        files += list_files(tracking, root, child) if entry["is_dir"] else [{"path": child, "size": int(entry["file_size"])}]
    return files


def main() -> None:
    tracking = sys.argv[1].rstrip("/")
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("pinserve-benchmarks")
    with mlflow.start_run():
        info = mlflow.onnx.log_model(large_mlp(), name="model", registered_model_name=NAME, pip_requirements=[])
    version = str(info.registered_model_version)
    uri = requests.get(
        f"{tracking}/api/2.0/mlflow/model-versions/get-download-uri",
        params={"name": NAME, "version": version},
        timeout=30,
    ).json()["artifact_uri"]
    root = uri.removeprefix("mlflow-artifacts:").lstrip("/")
    files = list_files(tracking, root)
    print(json.dumps({"name": NAME, "version": version, "root": root, "files": files}))


if __name__ == "__main__":
    main()
