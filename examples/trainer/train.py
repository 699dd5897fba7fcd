"""An example of a team's training image for pinserve's retraining pipeline (k8s/pipelines).

The pipeline's `train` step runs it as `train.py --data DATASET --out DIR` and expects in DIR:
model.onnx (the model, converted to ONNX), train.csv (the rows it was trained on: the pipeline
registers their digest and profiles them) and test.csv (held-out rows with the target column,
on which `pinserve eval` compares the new version with the one that serves today).

DATASET is `sklearn:breast_cancer`, scikit-learn's copy of the Wisconsin breast cancer data, or
a CSV file whose last column is the target. The held-out split is fixed (25%, stratified,
`--split-seed`), so every version is evaluated on the same rows. `--train-rows N` trains on the
first N training rows only (a weaker model), and `--degrade` on shuffled labels: a model that
learnt nothing, for showing the pipeline's failing path.
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

# ONNX Runtime 1.31 reads IR version 10 at most; onnx 1.23 would write 14.
IR_VERSION = 10
TARGET_OPSET = {"": 21, "ai.onnx.ml": 3}
TARGET = "target"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="sklearn:breast_cancer or a CSV file")
    parser.add_argument("--out", required=True, type=Path, help="where to write the outputs")
    parser.add_argument("--train-rows", type=int, help="train on the first N training rows")
    parser.add_argument("--degrade", action="store_true", help="train on shuffled labels")
    parser.add_argument("--split-seed", type=int, default=42)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def load(data: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Feature names, features and target."""
    if data == "sklearn:breast_cancer":
        bunch = load_breast_cancer()
        names = [name.replace(" ", "_") for name in bunch.feature_names]
        return names, bunch.data, bunch.target
    with open(data, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    header, values = rows[0], np.array(rows[1:], dtype=np.float64)
    return header[:-1], values[:, :-1], values[:, -1].astype(np.int64)


def write_csv(path: Path, names: list[str], features: np.ndarray, target: np.ndarray) -> None:
    """Each feature as the float32 the model reads, written so that it parses back exactly."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow([*names, TARGET])
        for row, label in zip(features.astype(np.float32), target, strict=True):
            writer.writerow([*(repr(float(value)) for value in row), int(label)])


def to_onnx(pipeline: Pipeline, width: int) -> onnx.ModelProto:
    """Plain tensor outputs (`label`, `probabilities`; no ZipMap), pinned opsets and IR."""
    model = convert_sklearn(
        pipeline,
        name="trainer",
        initial_types=[("input", FloatTensorType([None, width]))],
        target_opset=dict(TARGET_OPSET),
        options={id(pipeline): {"zipmap": False}},
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> int:
    args = parse_args()
    names, features, target = load(args.data)
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.25, stratify=target, random_state=args.split_seed
    )
    if args.train_rows:
        x_train, y_train = x_train[: args.train_rows], y_train[: args.train_rows]
    labels = y_train
    if args.degrade:
        labels = np.random.default_rng(args.seed).permutation(y_train)
    pipeline = Pipeline(
        [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))]
    ).fit(x_train, labels)

    model = to_onnx(pipeline, len(names))
    # The converted model must answer as scikit-learn does on the held-out rows.
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_labels = session.run(["label"], {"input": x_test.astype(np.float32)})[0]
    agreement = float(np.mean(onnx_labels == pipeline.predict(x_test.astype(np.float32))))
    if agreement < 0.99:
        print(f"the ONNX model agrees with scikit-learn on {agreement:.1%} of rows", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.onnx").write_bytes(model.SerializeToString())
    write_csv(args.out / "train.csv", names, x_train, y_train)
    write_csv(args.out / "test.csv", names, x_test, y_test)
    accuracy = float(np.mean(onnx_labels == y_test))
    kind = "degraded (shuffled labels)" if args.degrade else "trained"
    print(
        f"{kind} on {len(y_train)} rows; held-out accuracy {accuracy:.3f} on {len(y_test)} rows; "
        f"wrote model.onnx, train.csv, test.csv to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
