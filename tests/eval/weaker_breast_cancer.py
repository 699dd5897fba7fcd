"""Write a deliberately weaker breast-cancer classifier to ``sys.argv[1]``: the fixture's
pipeline (scaler, logistic regression, same split), trained on 12 rows and two features' worth
of signal instead of the whole training split, so that ``pinserve eval`` has a worse version to
stop. Deterministic: the same bytes on every run.
"""

import sys

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

data = load_breast_cancer()
x_train, _, y_train, _ = train_test_split(
    data.data, data.target, test_size=0.25, stratify=data.target, random_state=42
)
# The same 30 inputs as the fixture, but only two carry what was learnt from a handful of rows.
x_small = np.array(x_train[:12])
x_small[:, 2:] = 0.0
pipeline = Pipeline(
    [("scale", StandardScaler()), ("classify", LogisticRegression(C=0.01, max_iter=1000))]
).fit(x_small, y_train[:12])
model = convert_sklearn(
    pipeline,
    name="breast_cancer",
    initial_types=[("input", FloatTensorType([None, 30]))],
    target_opset={"": 21, "ai.onnx.ml": 3},
    options={id(pipeline): {"zipmap": False}},
)
model.ir_version = 10  # ONNX Runtime 1.31 reads IR 10, not onnx 1.23's default of 14
with open(sys.argv[1], "wb") as out:
    out.write(model.SerializeToString())
