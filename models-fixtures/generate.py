"""Generate pinserve's ONNX model fixtures and their golden inference results.

The fixtures form a model repository (``<name>/<version>/model.onnx``) that the
Rust tests serve, plus ``golden/<name>.json`` files holding Open Inference
Protocol (KServe V2) requests and the outputs ONNX Runtime produced for them.
They are built this way because:

* Everything is deterministic (fixed seeds, canonical serialization), so a rerun
  rewrites every committed file byte for byte and a diff means a real change.
* The goldens come from the same ONNX Runtime release (1.31.1, CPU, default
  session options) that pinserve loads, so the Rust side is checked against
  the reference implementation rather than against numbers we derived ourselves.
* Every float a golden holds is the exact float the model saw or returned,
  printed as the shortest decimal of that value widened to a double: parsing it
  as a double or as the narrower type gives back the same bits.
* Each fixture exercises one aspect of serving: a trained sklearn classifier
  with a held-out split (breast_cancer), several string and numeric inputs
  (churn_pipeline), the common dense MLP with a named dynamic batch dimension
  (tabular_mlp), boosted trees over the same features (tabular_gbdt), a fixed
  batch dimension (fixed_batch), every protocol datatype
  (all_dtypes), a lookup that ONNX Runtime itself fails on out-of-range ids
  (embedding_lookup) with two degraded later versions for the canary analysis,
  one failing some requests (2) and one too slow (3), a model large enough to
  make compute dominate (compute_mlp, not committed; ``--heavy``), and a
  truncated file that must fail to load (broken).
* Models are saved with IR version 10 and opsets ONNX Runtime 1.31 accepts: onnx
  1.23 would otherwise stamp IR version 14, which that release rejects.

Usage: ``.venv/bin/python models-fixtures/generate.py [--heavy | --only NAME ...]``
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument, InvalidProtobuf
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

ROOT = Path(__file__).resolve().parent
VERSION = "1"
IR_VERSION = 10
TARGET_OPSET = {"": 21, "ai.onnx.ml": 3}
PRODUCER = "pinserve models-fixtures/generate.py"

# ONNX Runtime's type strings mapped to the Open Inference Protocol datatypes.
V2_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(bfloat16)": "BF16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


@dataclass
class Case:
    """One golden request: input name -> array, in the model's input order."""

    name: str
    feeds: dict[str, np.ndarray]


@dataclass
class Fixture:
    """A serialized model plus its golden cases and side files (relative path -> text).

    Later versions of a model exist to degrade it for the canary-analysis test; they have no
    golden file (``golden/<name>.json`` is version 1's) but a ``check`` of the behaviour they
    are for, run against ONNX Runtime before anything is written.
    """

    name: str
    model_bytes: bytes
    cases: list[Case] = field(default_factory=list)
    extra_files: dict[str, str] = field(default_factory=dict)
    loadable: bool = True
    version: str = VERSION
    check: Callable[[ort.InferenceSession], None] | None = None


# --------------------------------------------------------------------------- #
# ONNX and ONNX Runtime helpers
# --------------------------------------------------------------------------- #


def serialize(model: onnx.ModelProto) -> bytes:
    """Pin the IR version and canonicalize the opset imports before serializing.

    skl2onnx lists the default domain twice (here it uses ai.onnx.ml operators
    only); sorting by domain makes the order independent of converter internals.
    """
    model.ir_version = IR_VERSION
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        assert opset.version <= TARGET_OPSET[opset.domain], f"opset too new: {opset}"
        assert versions.setdefault(opset.domain, opset.version) == opset.version, "opset clash"
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))
    return model.SerializeToString()


def make_model(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    """Wrap a hand-built graph in a model using the default-domain target opset."""
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", TARGET_OPSET[""])],
        producer_name=PRODUCER,
        doc_string=doc,
    )


def open_session(model_bytes: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def to_ort_value(array: np.ndarray) -> ort.OrtValue:
    """Wrap a non-string array; bfloat16 can only reach ORT's Python binding this way."""
    if array.dtype == ml_dtypes.bfloat16:
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
            array.view(np.uint16), TensorProto.BFLOAT16
        )
    return ort.OrtValue.ortvalue_from_numpy(array)


def run_model(
    session: ort.InferenceSession, model_bytes: bytes, feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run every output of the session's model, in the model's output order.

    A ZipMap output (one {label: probability} dict per row) comes back as the float32 matrix
    pinserve answers for it: one column per class, in the ZipMap node's label order.
    """
    outputs = session.get_outputs()
    numpy_names = [o.name for o in outputs if o.type != "tensor(bfloat16)"]
    bf16_names = [o.name for o in outputs if o.type == "tensor(bfloat16)"]
    ort_feeds = {n: a if a.dtype == object else to_ort_value(a) for n, a in feeds.items()}
    results = dict(zip(numpy_names, session.run(numpy_names, ort_feeds), strict=True))
    if bf16_names:
        results.update(run_bfloat16_outputs(model_bytes, feeds, bf16_names))
    for name, labels in zipmap_labels(model_bytes).items():
        results[name] = np.array(
            [[row[label] for label in labels] for row in results[name]], dtype=np.float32
        ).reshape(-1, len(labels))
    return {o.name: results[o.name] for o in outputs}


def zipmap_labels(model_bytes: bytes) -> dict[str, list[int] | list[str]]:
    """The class labels of each graph output a ZipMap node writes, in the node's order."""
    graph = onnx.load_from_string(model_bytes).graph
    outputs = {o.name for o in graph.output}
    labels = {}
    for node in graph.node:
        if node.op_type == "ZipMap" and node.output[0] in outputs:
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            ints = attributes.get("classlabels_int64s")
            labels[node.output[0]] = (
                list(ints) if ints else [s.decode() for s in attributes["classlabels_strings"]]
            )
    return labels


def run_bfloat16_outputs(
    model_bytes: bytes, feeds: dict[str, np.ndarray], names: list[str]
) -> dict[str, np.ndarray]:
    """Fetch bfloat16 outputs, which ``InferenceSession.run`` cannot return.

    ``run_with_ort_values`` can return them but cannot take string inputs, so run
    the model pruned to these outputs and its non-string inputs (the same nodes,
    on the same runtime) and read the raw output buffers.
    """
    model = onnx.load_from_string(model_bytes)
    inputs = [
        i.name for i in model.graph.input if i.type.tensor_type.elem_type != TensorProto.STRING
    ]
    pruned = onnx.utils.Extractor(model).extract_model(inputs, names)
    session = open_session(serialize(pruned))
    values = session.run_with_ort_values(
        names, {i.name: to_ort_value(feeds[i.name]) for i in session.get_inputs()}
    )
    return {name: read_bfloat16(value) for name, value in zip(names, values, strict=True)}


def read_bfloat16(value: ort.OrtValue) -> np.ndarray:
    raw = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
    return np.frombuffer(raw, dtype=ml_dtypes.bfloat16).reshape(value.shape())


def describe_shape(shape: list[int | str | None]) -> str:
    """Render an ORT shape; an unnamed dynamic dimension shows as ``?``."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def describe_args(args: list[ort.NodeArg]) -> str:
    return ", ".join(
        f"{a.name}: {V2_DATATYPES.get(a.type, a.type)} {describe_shape(a.shape)}" for a in args
    )


# --------------------------------------------------------------------------- #
# Golden files
# --------------------------------------------------------------------------- #


def json_data(array: np.ndarray) -> list:
    """Flatten row-major into JSON scalars that hold exactly the tensor's values."""
    flat = array.reshape(-1)
    if flat.dtype == ml_dtypes.bfloat16:
        flat = flat.astype(np.float32)  # exact: bfloat16 is a truncated float32
    if flat.dtype == object:
        return [str(s) for s in flat]
    return flat.tolist()  # floats widen exactly to Python floats, printed with repr


def tensor_json(name: str, ort_type: str, array: np.ndarray) -> dict:
    return {
        "name": name,
        "datatype": V2_DATATYPES.get(ort_type, "FP32"),  # a ZipMap's matrix is FP32
        "shape": list(array.shape),
        "data": json_data(array),
    }


def output_json(name: str, ort_type: str, array: np.ndarray, labels: list | None) -> dict:
    """An output as pinserve answers it: a ZipMap's labels go in its parameters as the JSON
    array text pinserve writes (no spaces, integers as numbers, strings as strings)."""
    tensor = tensor_json(name, ort_type, array)
    if labels is not None:
        text = json.dumps(labels, separators=(",", ":"), ensure_ascii=False)
        tensor["parameters"] = {"class_labels": text}
    return tensor


def golden_case(fixture: Fixture, session: ort.InferenceSession, case: Case) -> dict:
    outputs = run_model(session, fixture.model_bytes, case.feeds)
    labels = zipmap_labels(fixture.model_bytes)
    return {
        "name": case.name,
        "request": {
            "id": f"{fixture.name}-{case.name}",
            "inputs": [
                tensor_json(i.name, i.type, case.feeds[i.name]) for i in session.get_inputs()
            ],
        },
        "outputs": [
            output_json(o.name, o.type, outputs[o.name], labels.get(o.name))
            for o in session.get_outputs()
        ],
    }


def format_json(value: object, level: int = 0) -> str:
    """Indent objects and nested lists but keep scalar lists (shapes, data) on one line."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {format_json(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [inner + format_json(v, level + 1) for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------- #
# Dense MLPs built with onnx.helper
# --------------------------------------------------------------------------- #


def dense_weights(
    rng: np.random.Generator, sizes: list[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-initialized hidden layers and a variance-preserving (Xavier-like) output layer.

    Weights are [out, in] for Gemm with transB=1; biases are small so that
    activations stay in a sane range whatever the depth.
    """
    layers = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        gain = 1.0 if index == len(sizes) - 2 else 2.0
        weight = rng.standard_normal((fan_out, fan_in), dtype=np.float32)
        weight *= np.float32(math.sqrt(gain / fan_in))
        bias = rng.standard_normal(fan_out, dtype=np.float32) * np.float32(0.01)
        layers.append((weight, bias))
    return layers


def mlp_graph(
    name: str,
    layers: list[tuple[np.ndarray, np.ndarray]],
    io_names: tuple[str, str],
    batch: int | str,
    final_activation: str | None,
) -> onnx.GraphProto:
    """Gemm layers with Relu between them and an optional activation at the end."""
    input_name, output_name = io_names
    nodes, initializers, current = [], [], input_name
    for index, (weight, bias) in enumerate(layers):
        last = index == len(layers) - 1
        w, b, gemm = f"fc{index}.weight", f"fc{index}.bias", f"fc{index}"
        initializers += [numpy_helper.from_array(weight, w), numpy_helper.from_array(bias, b)]
        activation = final_activation if last else "Relu"
        gemm_out = output_name if last and activation is None else f"{gemm}.out"
        nodes.append(helper.make_node("Gemm", [current, w, b], [gemm_out], name=gemm, transB=1))
        current = gemm_out
        if activation is not None:
            act_out = output_name if last else f"{gemm}.{activation.lower()}"
            nodes.append(helper.make_node(activation, [current], [act_out], name=act_out))
            current = act_out
    in_size, out_size = layers[0][0].shape[1], layers[-1][0].shape[0]
    return helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, in_size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, out_size])],
        initializer=initializers,
    )


def random_rows(seed: int, rows: int, columns: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, columns), dtype=np.float32)


TABULAR_SIZES = [32, 64, 64, 1]


def tabular_rows(rows: int) -> np.ndarray:
    return random_rows(100 + rows, rows, TABULAR_SIZES[0])


def tabular_mlp_bytes(batch: int | str) -> bytes:
    layers = dense_weights(np.random.default_rng(1), TABULAR_SIZES)
    graph = mlp_graph("tabular_mlp", layers, ("features", "probability"), batch, "Sigmoid")
    doc = "Tabular MLP 32-64-64-1 (Gemm+Relu, Sigmoid output), fixed-seed random weights."
    return serialize(make_model(graph, doc))


def build_tabular_mlp() -> Fixture:
    cases = [Case(f"batch_{rows}", {"features": tabular_rows(rows)}) for rows in (1, 4, 64)]
    return Fixture("tabular_mlp", tabular_mlp_bytes("batch"), cases)


def build_fixed_batch() -> Fixture:
    """tabular_mlp's weights with batch fixed to 1; batch_1 matches tabular_mlp's batch_1."""
    cases = [
        Case("batch_1", {"features": tabular_rows(1)}),
        Case("batch_1_zeros", {"features": np.zeros((1, TABULAR_SIZES[0]), dtype=np.float32)}),
    ]
    return Fixture("fixed_batch", tabular_mlp_bytes(1), cases)


def tabular_gbdt_label(features: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The rule tabular_gbdt learns (benches/eval.rs writes its data with the same rule)."""
    score = features[:, 0] + features[:, 1] * features[:, 2] - features[:, 3] + 0.3 * noise
    return (score > 0.4).astype(np.int64)


def build_tabular_gbdt() -> Fixture:
    """What tabular models mostly are: boosted trees (scikit-learn's GradientBoostingClassifier,
    100 trees of depth 4) over tabular_mlp's 32 features, trained on 5000 synthetic rows."""
    rng = np.random.default_rng(3)
    features = rng.random((5000, TABULAR_SIZES[0]), dtype=np.float32)
    labels = tabular_gbdt_label(features, rng.standard_normal(5000))
    estimator = GradientBoostingClassifier(n_estimators=100, max_depth=4, random_state=0)
    estimator.fit(features, labels)
    model_bytes = sklearn_to_onnx(
        estimator, "tabular_gbdt", [("features", FloatTensorType([None, TABULAR_SIZES[0]]))]
    )
    cases = [Case(f"batch_{rows}", {"features": features[:rows]}) for rows in (1, 4, 64)]
    return Fixture("tabular_gbdt", model_bytes, cases)


COMPUTE_SIZES = [512, 2048, 2048, 2048, 256]


def build_compute_mlp() -> Fixture:
    layers = dense_weights(np.random.default_rng(2), COMPUTE_SIZES)
    graph = mlp_graph("compute_mlp", layers, ("x", "y"), "batch", None)
    doc = "Compute-heavy MLP 512-2048-2048-2048-256 (Gemm+Relu), fixed-seed He init."
    cases = [
        Case(f"batch_{rows}", {"x": random_rows(200 + rows, rows, COMPUTE_SIZES[0])})
        for rows in (1, 4, 64)
    ]
    return Fixture("compute_mlp", serialize(make_model(graph, doc)), cases)


def build_broken() -> Fixture:
    """The first half of tabular_mlp's bytes: a truncated protobuf."""
    model_bytes = tabular_mlp_bytes("batch")
    return Fixture("broken", model_bytes[: len(model_bytes) // 2], loadable=False)


# --------------------------------------------------------------------------- #
# all_dtypes: one Identity per protocol datatype
# --------------------------------------------------------------------------- #

DTYPES = {
    "fp32": (TensorProto.FLOAT, np.float32),
    "fp64": (TensorProto.DOUBLE, np.float64),
    "fp16": (TensorProto.FLOAT16, np.float16),
    "bf16": (TensorProto.BFLOAT16, ml_dtypes.bfloat16),
    "int8": (TensorProto.INT8, np.int8),
    "int16": (TensorProto.INT16, np.int16),
    "int32": (TensorProto.INT32, np.int32),
    "int64": (TensorProto.INT64, np.int64),
    "uint8": (TensorProto.UINT8, np.uint8),
    "uint16": (TensorProto.UINT16, np.uint16),
    "uint32": (TensorProto.UINT32, np.uint32),
    "uint64": (TensorProto.UINT64, np.uint64),
    "bool": (TensorProto.BOOL, np.bool_),
    "bytes": (TensorProto.STRING, object),
}
STRINGS = ["", "naïve ☃", "🦀 crab", "plain ascii", 'tab\t"quotes"\\', "日本語", "a", "Ωmega"]


def all_dtypes_bytes() -> bytes:
    suffixes = list(DTYPES)
    nodes = [
        helper.make_node("Identity", [f"x_{s}"], [f"y_{s}"], name=f"identity_{s}") for s in suffixes
    ]
    inputs = [helper.make_tensor_value_info(f"x_{s}", DTYPES[s][0], ["batch", 3]) for s in suffixes]
    outputs = [
        helper.make_tensor_value_info(f"y_{s}", DTYPES[s][0], ["batch", 3]) for s in suffixes
    ]
    graph = helper.make_graph(nodes, "all_dtypes", inputs, outputs)
    return serialize(make_model(graph, "Identity per datatype: y_<type> = x_<type>."))


def boundary_rows(dtype: type) -> list[list]:
    """Four rows of extreme but JSON-representable values, rounded to the dtype.

    Floats cover the finite extremes, -0.0 and the smallest normals, but no
    inf/NaN (JSON has none) nor subnormals (which some kernels flush to zero).
    """
    if dtype is object:
        return [STRINGS[0:3], STRINGS[3:6], STRINGS[5:8], ["", "", "naïve ☃"]]
    if dtype is np.bool_:
        return [
            [True, False, True],
            [False, True, False],
            [True, True, True],
            [False, False, False],
        ]
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return [
            [info.min, info.max, 0],
            [info.min + 1, info.max - 1, 1],
            [0, 1, 2],
            [int(info.max // 2), int(info.max // 3), 42],
        ]
    info = ml_dtypes.finfo(dtype)
    tiny, big = float(info.smallest_normal), float(info.max)
    return [
        [float(info.min), big, -0.0],
        [tiny, -tiny, 0.0],
        [1.0, -1.0, 0.1],
        [float(info.eps), 1.0 + float(info.eps), -1234.5],
    ]


def random_values(rng: np.random.Generator, dtype: type, shape: tuple[int, int]) -> np.ndarray:
    if dtype is object:
        return rng.choice(np.array(STRINGS, dtype=object), size=shape)
    if dtype is np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 100.0).astype(dtype)


def all_dtypes_feeds(rows_for: Callable[[type], list[list] | np.ndarray]) -> dict[str, np.ndarray]:
    return {f"x_{s}": np.array(rows_for(dtype), dtype=dtype) for s, (_, dtype) in DTYPES.items()}


def build_all_dtypes() -> Fixture:
    rng = np.random.default_rng(3)
    cases = [
        Case("batch_1", all_dtypes_feeds(lambda dtype: boundary_rows(dtype)[2:3])),
        Case("batch_4", all_dtypes_feeds(lambda dtype: boundary_rows(dtype))),
        Case("batch_64", all_dtypes_feeds(lambda dtype: random_values(rng, dtype, (64, 3)))),
    ]
    return Fixture("all_dtypes", all_dtypes_bytes(), cases)


# --------------------------------------------------------------------------- #
# scikit-learn models
# --------------------------------------------------------------------------- #


def sklearn_to_onnx(
    estimator: Pipeline, name: str, initial_types: list, zipmap: bool = False
) -> bytes:
    """Convert with the pinned opsets, with plain tensor outputs (no ZipMap) unless `zipmap`
    asks for skl2onnx's defaults."""
    model = convert_sklearn(
        estimator,
        name=name,  # skl2onnx otherwise names the graph with a random UUID
        initial_types=initial_types,
        target_opset=dict(TARGET_OPSET),
        options=None if zipmap else {id(estimator): {"zipmap": False}},
    )
    return serialize(model)


def float_text(value: float) -> str:
    """The float32 value fed to the model, written so it parses back exactly."""
    return repr(float(np.float32(value)))


def breast_cancer_csv(feature_names: list[str], features: np.ndarray, target: np.ndarray) -> str:
    header = [n.replace(" ", "_") for n in feature_names] + ["target"]
    lines = [",".join(header)]
    lines += [
        ",".join([*map(float_text, row), str(int(label))])
        for row, label in zip(features, target, strict=True)
    ]
    return "\n".join(lines) + "\n"


def breast_cancer_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, x_test, y_train, y_test: the stratified 75/25 split."""
    data = load_breast_cancer()
    return train_test_split(
        data.data, data.target, test_size=0.25, stratify=data.target, random_state=42
    )


def breast_cancer_pipeline(x_train: np.ndarray, y_train: np.ndarray) -> Pipeline:
    return Pipeline(
        [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))]
    ).fit(x_train, y_train)


def build_breast_cancer() -> Fixture:
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = breast_cancer_split()
    pipeline = breast_cancer_pipeline(x_train, y_train)
    model_bytes = sklearn_to_onnx(
        pipeline, "breast_cancer", [("input", FloatTensorType([None, 30]))]
    )

    test_features = x_test.astype(np.float32)
    onnx_labels = open_session(model_bytes).run(["label"], {"input": test_features})[0]
    metrics = {
        "accuracy_sklearn": float(pipeline.score(x_test, y_test)),
        "accuracy_onnxruntime": float(np.mean(onnx_labels == y_test)),
        "test_rows": len(y_test),
    }
    cases = [Case(f"batch_{rows}", {"input": test_features[:rows]}) for rows in (1, 4, 64)]
    cases.append(Case("test_split", {"input": test_features}))
    extra_files = {
        "test.csv": breast_cancer_csv(list(data.feature_names), x_test, y_test),
        "metrics.json": json.dumps(metrics, indent=2) + "\n",
    }
    return Fixture("breast_cancer", model_bytes, cases, extra_files)


BIAS = -6.0


def build_breast_cancer_biased() -> Fixture:
    """Version 2, a canary whose predictions are shifted: version 1 with its intercept moved.

    It answers every request as fast and as successfully as version 1, but calls many benign
    tumours malignant: only the comparison of its predicted classes with the stable version's
    can stop it.
    """
    x_train, x_test, y_train, _ = breast_cancer_split()
    pipeline = breast_cancer_pipeline(x_train, y_train)
    unbiased = pipeline.predict(x_test).mean()
    pipeline.named_steps["classify"].intercept_ += BIAS
    model_bytes = sklearn_to_onnx(
        pipeline, "breast_cancer", [("input", FloatTensorType([None, 30]))]
    )

    def check(session: ort.InferenceSession) -> None:
        labels = session.run(["label"], {"input": x_test.astype(np.float32)})[0]
        assert unbiased - labels.mean() > 0.25, (unbiased, labels.mean())

    return Fixture("breast_cancer", model_bytes, version="2", check=check)


def zipmap_fixture(name: str, features: np.ndarray, labels: np.ndarray) -> Fixture:
    """A LogisticRegression converted with skl2onnx's defaults, so its probabilities are a
    ZipMap (``seq(map(int64|string, float))``); cases are its first 1, 4 and 16 rows.

    The check compares the ZipMap's maps, read in the node's label order, with the
    probability matrix of the same classifier converted without ZipMap: they must be equal.
    """
    classifier = LogisticRegression(max_iter=1000).fit(features, labels)
    initial_types = [("input", FloatTensorType([None, features.shape[1]]))]
    model_bytes = sklearn_to_onnx(classifier, name, initial_types, zipmap=True)
    plain = open_session(sklearn_to_onnx(classifier, name, initial_types))
    rows = features[:16].astype(np.float32)

    def check(session: ort.InferenceSession) -> None:
        dense = run_model(session, model_bytes, {"input": rows})["output_probability"]
        assert np.array_equal(dense, plain.run(["probabilities"], {"input": rows})[0])

    cases = [Case(f"batch_{count}", {"input": rows[:count]}) for count in (1, 4, 16)]
    return Fixture(name, model_bytes, cases, check=check)


def build_zipmap_binary() -> Fixture:
    """Two integer classes, 0 and 1, from a linear rule over 4 uniform features."""
    rng = np.random.default_rng(7)
    features = rng.random((200, 4), dtype=np.float32)
    labels = (features[:, 0] + 0.5 * features[:, 1] - features[:, 2] > 0.25).astype(np.int64)
    return zipmap_fixture("zipmap_binary", features, labels)


def build_zipmap_multiclass() -> Fixture:
    """Three integer classes, -1, 0 and 7 (labels that are not column indices), the argmax of
    three fixed linear scores over 4 uniform features."""
    rng = np.random.default_rng(8)
    features = rng.random((300, 4), dtype=np.float32)
    weights = np.array([[2.0, -1.0, 0.0], [0.0, 2.0, -1.0], [-1.0, 0.0, 2.0], [0.5, 0.5, 0.5]])
    labels = np.array([-1, 0, 7], dtype=np.int64)[np.argmax(features @ weights, axis=1)]
    return zipmap_fixture("zipmap_multiclass", features, labels)


def build_zipmap_iris() -> Fixture:
    """sklearn's iris with the species names as labels (setosa, versicolor, virginica); the
    rows are interleaved so that every case beyond the first holds several species."""
    data = load_iris()
    order = np.argsort(np.arange(150) % 50, kind="stable")
    names = np.array(data.target_names, dtype=object)[data.target]
    return zipmap_fixture("zipmap_iris", data.data[order], names[order])


PLANS = {"basic": (29.0, 0.5), "standard": (59.0, 0.0), "premium": (99.0, -0.6)}
REGIONS = {"eu": -0.2, "us": 0.0, "apac": 0.3}
CHURN_INPUTS = ["plan", "region", "tenure_months", "monthly_charges"]


def churn_rows(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic customers [plan, region, tenure, charges] and whether they churned.

    Churn is likelier early in the contract, with higher charges, on the basic
    plan and in apac; charges follow the plan's list price.
    """
    plan = rng.choice(list(PLANS), size=rows, p=[0.5, 0.3, 0.2])
    region = rng.choice(list(REGIONS), size=rows)
    tenure = rng.integers(0, 73, size=rows).astype(np.float32)
    base = np.array([PLANS[p][0] for p in plan])
    charges = np.round(np.maximum(base + rng.normal(0.0, 8.0, rows), 10.0), 2).astype(np.float32)
    logit = (
        0.3
        - 0.05 * tenure
        + 0.02 * (charges - base)
        + np.array([PLANS[p][1] for p in plan])
        + np.array([REGIONS[r] for r in region])
    )
    churned = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    table = np.empty((rows, 4), dtype=object)
    table[:, 0], table[:, 1], table[:, 2], table[:, 3] = plan, region, tenure, charges
    return table, churned


def churn_feeds(table: np.ndarray) -> dict[str, np.ndarray]:
    """One [batch, 1] tensor per column: strings for categories, float32 for numbers."""
    return {
        name: table[:, [column]].astype(object if column < 2 else np.float32)
        for column, name in enumerate(CHURN_INPUTS)
    }


def build_churn_pipeline() -> Fixture:
    table, churned = churn_rows(np.random.default_rng(4), 2000)
    preprocess = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), [0, 1]),
            ("numbers", StandardScaler(), [2, 3]),
        ]
    )
    classifier = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0)
    pipeline = Pipeline([("preprocess", preprocess), ("classify", classifier)]).fit(table, churned)
    initial_types = [
        ("plan", StringTensorType([None, 1])),
        ("region", StringTensorType([None, 1])),
        ("tenure_months", FloatTensorType([None, 1])),
        ("monthly_charges", FloatTensorType([None, 1])),
    ]
    model_bytes = sklearn_to_onnx(pipeline, "churn_pipeline", initial_types)

    unseen = np.array(
        [
            ["enterprise", "eu", 12.0, 149.99],
            ["basic", "latam", 3.0, 31.5],
            ["", "EU", 40.0, 60.0],
            ["premium", "apac", 70.0, 101.25],
        ],
        dtype=object,
    )
    fresh, _ = churn_rows(np.random.default_rng(5), 64)
    cases = [
        Case("batch_1", churn_feeds(fresh[:1])),
        Case("batch_4", churn_feeds(fresh[:4])),
        Case("batch_64", churn_feeds(fresh)),
        Case("unseen_categories", churn_feeds(unseen)),
    ]
    return Fixture("churn_pipeline", model_bytes, cases)


def churn_eval_csv() -> str:
    """300 held-out customers for `pinserve eval`, with the model's string and float inputs."""
    table, churned = churn_rows(np.random.default_rng(6), 300)
    lines = [",".join([*CHURN_INPUTS, "target"])]
    lines += [
        ",".join([row[0], row[1], float_text(row[2]), float_text(row[3]), str(int(label))])
        for row, label in zip(table, churned, strict=True)
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- #
# embedding_lookup: a Gather that ONNX Runtime itself rejects for unknown ids
# --------------------------------------------------------------------------- #

VOCABULARY, EMBEDDING_WIDTH = 100, 4


def embedding_table() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((VOCABULARY, EMBEDDING_WIDTH)).astype(np.float32)


def embedding_graph(
    nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]
) -> onnx.GraphProto:
    """embedding_lookup's signature around ``nodes``, which read ``ids`` and write ``embeddings``."""
    return helper.make_graph(
        nodes,
        "embedding_lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", EMBEDDING_WIDTH])],
        initializer=initializers,
    )


def build_embedding_lookup() -> Fixture:
    """Ids in [0, 100) index an embedding table; any other id makes Gather fail at run time.

    Every request that fits the signature passes pinserve's checks, so this is the fixture
    for a genuine ONNX Runtime failure (an out-of-vocabulary id in a recommender).
    """
    graph = embedding_graph(
        [helper.make_node("Gather", ["table", "ids"], ["embeddings"], axis=0)],
        [numpy_helper.from_array(embedding_table(), "table")],
    )
    doc = f"Gather rows of a fixed-seed {VOCABULARY}x{EMBEDDING_WIDTH} embedding table by id."
    cases = [
        Case("batch_1", {"ids": np.array([7], dtype=np.int64)}),
        Case("batch_4", {"ids": np.array([0, 99, 42, 42], dtype=np.int64)}),
    ]
    return Fixture("embedding_lookup", serialize(make_model(graph, doc)), cases)


PRUNED_VOCABULARY = 95


def build_embedding_lookup_pruned() -> Fixture:
    """Version 2, a canary that fails requests: the table cut to its first 95 rows.

    Ids 95-99, which version 1 serves, now make Gather fail inside ONNX Runtime, so traffic
    with ids spread over [0, 100) gets 500 for 5% of single-id requests, above the canary
    analysis's 2% limit. The failure is the model's own, as with a real pruned vocabulary.
    """
    graph = embedding_graph(
        [helper.make_node("Gather", ["table", "ids"], ["embeddings"], axis=0)],
        [numpy_helper.from_array(embedding_table()[:PRUNED_VOCABULARY], "table")],
    )
    doc = f"embedding_lookup with its table pruned to the first {PRUNED_VOCABULARY} ids."

    def check(session: ort.InferenceSession) -> None:
        kept = np.arange(PRUNED_VOCABULARY, dtype=np.int64)
        assert np.array_equal(session.run(None, {"ids": kept})[0], embedding_table()[kept])
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # the failures are expected: keep ORT's error log quiet
        for dropped in range(PRUNED_VOCABULARY, VOCABULARY):
            try:
                session.run(None, {"ids": np.array([dropped], dtype=np.int64)}, quiet)
            except InvalidArgument:
                continue
            raise AssertionError(f"id {dropped} must fail in the pruned table")

    return Fixture("embedding_lookup", serialize(make_model(graph, doc)), version="2", check=check)


MIXING_SIZE, REFINE_STEPS = 512, 800


def constant(name: str, value: float | list[int], dtype: type) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def refine_step() -> onnx.GraphProto:
    """One Loop iteration: state = tanh(state @ mixing), a 512x512 by 512x512 product."""
    return helper.make_graph(
        [
            helper.make_node("MatMul", ["state_in", "mixing"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "refine_step",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [MIXING_SIZE] * 2),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [MIXING_SIZE] * 2),
        ],
    )


def build_embedding_lookup_slow() -> Fixture:
    """Version 3, a canary too slow for the p99 limit: version 1's answers after ~1 s of work.

    A Loop runs 800 products of 512x512 matrices (215 GFLOP: 0.9 s on one core of a recent
    AVX-512 server CPU, longer on anything slower), through a matrix the graph computes from
    Range and Sin, so the file stays a few KB. The loop starts from the looked-up rows and its
    result is added times zero, so ONNX Runtime can neither fold it away at load time nor skip
    it, and the output is version 1's.
    """
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["looked_up"], axis=0),
        helper.make_node("Range", ["zero", "size", "one"], ["steps"]),
        helper.make_node("Unsqueeze", ["steps", "axis_1"], ["column"]),
        helper.make_node("Unsqueeze", ["steps", "axis_0"], ["row"]),
        helper.make_node("Mul", ["column", "row"], ["phases"]),
        helper.make_node("Sin", ["phases"], ["mixing"]),
        helper.make_node("ReduceSum", ["looked_up"], ["looked_up_total"], keepdims=0),
        helper.make_node("Add", ["mixing", "looked_up_total"], ["initial_state"]),
        helper.make_node("Loop", ["trips", "", "initial_state"], ["state"], body=refine_step()),
        helper.make_node("ReduceSum", ["state"], ["state_total"], keepdims=0),
        helper.make_node("Mul", ["state_total", "zero"], ["nothing"]),
        helper.make_node("Add", ["looked_up", "nothing"], ["embeddings"]),
    ]
    initializers = [
        numpy_helper.from_array(embedding_table(), "table"),
        constant("zero", 0.0, np.float32),
        constant("one", 1.0, np.float32),
        constant("size", MIXING_SIZE, np.float32),
        constant("axis_0", [0], np.int64),
        constant("axis_1", [1], np.int64),
        constant("trips", REFINE_STEPS, np.int64),
    ]
    doc = f"embedding_lookup followed by {REFINE_STEPS} {MIXING_SIZE}x{MIXING_SIZE} products."

    def check(session: ort.InferenceSession) -> None:
        ids = np.array([0, 99, 42], dtype=np.int64)
        assert np.array_equal(session.run(None, {"ids": ids})[0], embedding_table()[ids])

    model_bytes = serialize(make_model(embedding_graph(nodes, initializers), doc))
    return Fixture("embedding_lookup", model_bytes, version="3", check=check)


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #

BUILDERS: dict[str, Callable[[], Fixture]] = {
    "breast_cancer": build_breast_cancer,
    "breast_cancer/2": build_breast_cancer_biased,
    "churn_pipeline": build_churn_pipeline,
    "tabular_mlp": build_tabular_mlp,
    "tabular_gbdt": build_tabular_gbdt,
    "fixed_batch": build_fixed_batch,
    "all_dtypes": build_all_dtypes,
    "zipmap_binary": build_zipmap_binary,
    "zipmap_multiclass": build_zipmap_multiclass,
    "zipmap_iris": build_zipmap_iris,
    "embedding_lookup": build_embedding_lookup,
    "embedding_lookup/2": build_embedding_lookup_pruned,
    "embedding_lookup/3": build_embedding_lookup_slow,
    "broken": build_broken,
    "compute_mlp": build_compute_mlp,
}
HEAVY = {"compute_mlp"}
# Held-out data files for `pinserve eval`, written to eval-data/<name>.csv.
EVAL_DATA: dict[str, Callable[[], str]] = {"churn": churn_eval_csv}


def write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="\n")


def materialize(fixture: Fixture) -> str:
    """Validate the fixture, then write its files; return its summary row."""
    size = f"{len(fixture.model_bytes):>10,}"
    label = fixture.name if fixture.version == VERSION else f"{fixture.name}/{fixture.version}"
    files: dict[Path, str | bytes] = {
        ROOT / fixture.name / fixture.version / "model.onnx": fixture.model_bytes
    }
    files.update({ROOT / fixture.name / path: text for path, text in fixture.extra_files.items()})
    if fixture.loadable:
        onnx.checker.check_model(onnx.load_from_string(fixture.model_bytes), full_check=True)
        session = open_session(fixture.model_bytes)
        if fixture.check is not None:
            fixture.check(session)
        if fixture.version == VERSION:
            golden = {
                "model": fixture.name,
                "version": VERSION,
                "cases": [golden_case(fixture, session, case) for case in fixture.cases],
            }
            files[ROOT / "golden" / f"{fixture.name}.json"] = format_json(golden) + "\n"
        row = (
            f"{label:<15} {size}  in: {describe_args(session.get_inputs())}\n"
            f"{'':<27}  out: {describe_args(session.get_outputs())}"
        )
    else:
        assert_load_fails(fixture.model_bytes)
        row = f"{label:<15} {size}  (ONNX Runtime rejects it: INVALID_PROTOBUF)"
    for path, content in files.items():
        write(path, content)
    return row


def assert_load_fails(model_bytes: bytes) -> None:
    try:
        open_session(model_bytes)
    except InvalidProtobuf:
        return
    raise AssertionError("ONNX Runtime loaded a model that must be rejected")


def selected_fixtures(args: argparse.Namespace) -> list[str]:
    if args.only:
        return list(dict.fromkeys(args.only))
    return [name for name in BUILDERS if args.heavy or name not in HEAVY]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--heavy", action="store_true", help="also build the uncommitted compute_mlp"
    )
    choice.add_argument(
        "--only",
        nargs="+",
        choices=[*BUILDERS, "eval-data"],
        metavar="NAME",
        help=f"build only these fixtures: {', '.join(BUILDERS)}",
    )
    args = parser.parse_args()

    print(f"{'model':<15} {'bytes':>10}  signature (ONNX Runtime {ort.__version__})")
    for name in selected_fixtures(args):
        if name == "eval-data":
            continue
        started = time.perf_counter()
        fixture = BUILDERS[name]()
        row = materialize(fixture)
        print(f"{row}\n{'':<27}  built in {time.perf_counter() - started:.1f} s")
    if not args.only or "eval-data" in args.only:
        for name, build in EVAL_DATA.items():
            write(ROOT / "eval-data" / f"{name}.csv", build())
            print(f"eval-data/{name}.csv written")


if __name__ == "__main__":
    main()
