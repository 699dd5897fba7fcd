"""Models scikit-learn trains for pinserve's eval tests (tests/eval.rs), with held-out data:
``iris DIR`` (a multiclass logistic regression) and ``diabetes DIR`` (a linear regression)
each write ``DIR/model.onnx`` and ``DIR/test.csv`` (the features, then ``target``), the same
bytes on every run.
"""

import sys
from pathlib import Path

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


def write(directory: Path, estimator, features: int, x_test, y_test, integer_target: bool) -> None:
    model = convert_sklearn(
        estimator,
        name=directory.name,
        initial_types=[("input", FloatTensorType([None, features]))],
        target_opset={"": 21, "ai.onnx.ml": 3},
        options={id(estimator): {"zipmap": False}} if integer_target else None,
    )
    model.ir_version = 10  # ONNX Runtime 1.31 reads IR 10, not onnx 1.23's default of 14
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    header = [f"x{i}" for i in range(features)] + ["target"]
    lines = [",".join(header)]
    for row, label in zip(x_test.astype(np.float32), y_test, strict=True):
        target = str(int(label)) if integer_target else repr(float(label))
        lines.append(",".join([*(repr(float(v)) for v in row), target]))
    (directory / "test.csv").write_text("\n".join(lines) + "\n")


def main() -> None:
    kind, directory = sys.argv[1], Path(sys.argv[2])
    if kind == "iris":
        data = load_iris()
        x_train, x_test, y_train, y_test = train_test_split(
            data.data, data.target, test_size=0.4, stratify=data.target, random_state=7
        )
        estimator = Pipeline(
            [("scale", StandardScaler()), ("classify", LogisticRegression(C=0.05, max_iter=1000))]
        ).fit(x_train, y_train)
        write(directory, estimator, 4, x_test, y_test, integer_target=True)
    else:
        data = load_diabetes()
        x_train, x_test, y_train, y_test = train_test_split(
            data.data, data.target, test_size=0.3, random_state=7
        )
        write(directory, LinearRegression().fit(x_train, y_train), 10, x_test, y_test, False)


if __name__ == "__main__":
    main()
