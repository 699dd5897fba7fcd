"""scikit-learn's metrics for pinserve's eval tests (tests/eval_metrics.rs).

``metrics CASE.json``: the case holds ``task``, ``y_true``, and for classification
``y_pred``, optional ``scores`` (rows of class scores, or one positive-class score per
row), ``score_dtype`` (float32 or float64), ``classes`` (score-column order) and
``positive``; for regression ``y_pred`` holds the values. Prints the metrics as JSON.

``predict MODEL.onnx DATA.csv TARGET``: runs the model in ONNX Runtime on the file's
rows, mapping columns to inputs as pinserve does (one 2-D input: every other column,
stacked as float32; several inputs: one column per input, [N, 1]), and prints the
inputs it fed, the outputs and the target.

``evaluate MODEL.onnx DATA.csv TARGET TASK``: both of the above, end to end, as
``pinserve eval`` reports it (tests/eval.rs): a classifier's ``label`` and ``probabilities``
outputs (classes in sorted order, the positive class 1), a regressor's only output.

``profile MODEL.onnx DATA.csv TARGET BINS TOP``: the reference profile of a binary
classifier on the file (tests/profile.rs), from numpy's quantiles: each feature's bins or
top categories, the predicted classes' shares and the positive-class score's bins.
"""

import csv
import json
import sys

import numpy as np
from sklearn import metrics


def classification(case: dict) -> dict:
    y_true, y_pred = np.array(case["y_true"]), np.array(case["y_pred"])
    classes = case["classes"]
    if len(classes) <= 2:
        kwargs = {"average": "binary", "pos_label": case["positive"]}
    else:
        kwargs = {"average": "macro"}
    result = {
        "accuracy": metrics.accuracy_score(y_true, y_pred),
        "precision": metrics.precision_score(y_true, y_pred, zero_division=0, **kwargs),
        "recall": metrics.recall_score(y_true, y_pred, zero_division=0, **kwargs),
        "f1": metrics.f1_score(y_true, y_pred, zero_division=0, **kwargs),
    }
    if case.get("scores") is not None:
        scores = np.array(case["scores"], dtype=case["score_dtype"])
        if len(classes) <= 2:
            positive = scores if scores.ndim == 1 else scores[:, classes.index(case["positive"])]
            result["roc_auc"] = metrics.roc_auc_score(y_true == case["positive"], positive)
        else:
            result["roc_auc"] = metrics.roc_auc_score(
                y_true, scores, multi_class="ovr", average="macro", labels=classes
            )
        result["log_loss"] = metrics.log_loss(y_true, scores, labels=classes)
    return result


def regression(case: dict) -> dict:
    y_true, y_pred = np.array(case["y_true"]), np.array(case["y_pred"])
    return {
        "rmse": metrics.root_mean_squared_error(y_true, y_pred),
        "mae": metrics.mean_absolute_error(y_true, y_pred),
        "r2": metrics.r2_score(y_true, y_pred),
    }


def predict(model_path: str, data_path: str, target: str) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    with open(data_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    inputs = session.get_inputs()
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        names = [n for n in rows[0] if n != target]
        feeds = {inputs[0].name: np.array([[float(r[n]) for n in names] for r in rows], np.float32)}
    else:
        feeds = {}
        for spec in inputs:
            column = [r[spec.name] for r in rows]
            if spec.type == "tensor(string)":
                feeds[spec.name] = np.array(column, dtype=object).reshape(-1, 1)
            else:
                feeds[spec.name] = np.array(column, dtype=np.float32).reshape(-1, 1)
    outputs = session.run(None, feeds)
    return {
        "inputs": {n: a.reshape(-1).tolist() for n, a in feeds.items()},
        "outputs": {
            o.name: {"shape": list(a.shape), "data": a.reshape(-1).tolist()}
            for o, a in zip(session.get_outputs(), outputs, strict=True)
        },
        "target": [r[target] for r in rows],
    }


def evaluate(model_path: str, data_path: str, target: str, task: str) -> dict:
    predicted = predict(model_path, data_path, target)
    outputs = predicted["outputs"]
    if task == "regression":
        (values,) = outputs.values()
        case = {"y_true": [float(t) for t in predicted["target"]], "y_pred": values["data"]}
        return regression(case)
    y_true = [int(float(t)) for t in predicted["target"]]
    scores = outputs["probabilities"]
    columns = scores["shape"][1]
    case = {
        "y_true": y_true,
        "y_pred": [int(v) for v in outputs["label"]["data"]],
        "scores": np.array(scores["data"]).reshape(-1, columns).tolist(),
        "score_dtype": "float32",
        "classes": sorted(set(y_true) | set(int(v) for v in outputs["label"]["data"])),
        "positive": 1,
    }
    return classification(case)


def quantile_bins(values: np.ndarray, bins: int) -> dict:
    """numpy's quantiles as pinserve profile bins them: edges above the minimum, merged."""
    present = values[~np.isnan(values)]
    low, high = float(present.min()), float(present.max())
    edges: list[float] = []
    for edge in np.quantile(present, [i / bins for i in range(1, bins)]):
        if edge > low and (not edges or edge > edges[-1]):
            edges.append(float(edge))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return {
        "edges": edges,
        "fractions": (counts / len(present)).tolist(),
        "min": low,
        "max": high,
    }


def categories(values: list[str], top: int) -> dict:
    counts: dict[str, int] = {}
    for value in values:
        if value:
            counts[value] = counts.get(value, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    present = sum(counts.values())
    listed = [{"value": v, "fraction": c / present} for v, c in ranked[:top]]
    return {"top": listed, "other": sum(c for _, c in ranked[top:]) / present}


def profile(model_path: str, data_path: str, target: str, bins: str, top: str) -> dict:
    """The profile ``pinserve profile`` must write for the file's rows (every row sampled)."""
    predicted = predict(model_path, data_path, target)
    with open(data_path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    inputs = predicted["inputs"]
    features = []
    if len(inputs) == 1:
        ((name, flat),) = inputs.items()
        columns = [c for c in header if c != target]
        table = np.array(flat, dtype=np.float64).reshape(-1, len(columns))
        for index, column in enumerate(columns):
            features.append({"name": column, "bins": quantile_bins(table[:, index], int(bins))})
    else:
        for name, flat in inputs.items():
            if isinstance(flat[0], str):
                features.append({"name": name, "categories": categories(flat, int(top))})
            else:
                values = np.array(flat, dtype=np.float64)
                features.append({"name": name, "bins": quantile_bins(values, int(bins))})
    outputs = predicted["outputs"]
    labels = [str(int(v)) for v in outputs["label"]["data"]]
    classes = sorted(set(labels))
    scores = np.array(outputs["probabilities"]["data"], dtype=np.float64).reshape(-1, 2)[:, 1]
    return {
        "features": features,
        "classes": [{"value": c, "fraction": labels.count(c) / len(labels)} for c in classes],
        "scores": quantile_bins(scores, int(bins)),
    }


def main() -> None:
    if sys.argv[1] == "profile":
        result = profile(*sys.argv[2:7])
    elif sys.argv[1] == "evaluate":
        result = {name: float(value) for name, value in evaluate(*sys.argv[2:6]).items()}
    elif sys.argv[1] == "metrics":
        with open(sys.argv[2], encoding="utf-8") as handle:
            case = json.load(handle)
        task = classification if case["task"] == "classification" else regression
        result = {name: float(value) for name, value in task(case).items()}
    else:
        result = predict(*sys.argv[2:5])
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
