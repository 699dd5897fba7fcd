"""Ask MLflow's own scoring server and pinserve the same questions, for tests/invocations.rs.

Reads a job from stdin:

    {"pinserve": "http://127.0.0.1:PORT",
     "onnx": "models-fixtures/tabular_mlp/1/model.onnx"   # saved with mlflow.onnx.save_model
       or "model_uri": "models:/churn-pipeline/1",         # served as registered
     "requests": [{"name": ..., "content_type": ..., "body": "..."}],
     "client": [{"name": ..., "kind": "dataframe" | "ndarray" | "list", "data": ...,
                 "columns": [...], "dtype": "float32", "params": {...}}]}

starts ``mlflow models serve --env-manager local`` on a free loopback port for the model
(MLflow 3.17.2 from .venv-services), sends every request verbatim to both servers, then every
client case through MLflow's ``ScoringServerClient`` (the client MLflow's own tests use; it
builds the body with ``dump_input_data``), and asks both for ``/ping`` and ``/version``. Prints
``{"answers": {name: {"mlflow": answer, "pinserve": answer}}}`` where an answer is
``{"status": ..., "body": JSON or text}``, or, for client cases, ``{"predictions": ...}`` or
``{"error": message}``. MLflow's server is stopped before the script exits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import requests
from mlflow.onnx import save_model
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

READY_TIMEOUT_SECONDS = 180
REQUEST_TIMEOUT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow(model_uri: str, port: int) -> subprocess.Popen:
    """``mlflow models serve`` in a session of its own, so that stopping it stops uvicorn too."""
    bin_dir = Path(sys.executable).parent
    # MLflow runs `uvicorn` from PATH, as in an activated environment.
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    mlflow_cli = bin_dir / "mlflow"
    command = [str(mlflow_cli), "models", "serve", "--env-manager", "local"]
    command += ["-m", model_uri, "-h", "127.0.0.1", "-p", str(port)]
    return subprocess.Popen(
        command, env=env, start_new_session=True, stdout=sys.stderr, stderr=sys.stderr
    )


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def answer(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return {"status": response.status_code, "body": body}


def post(url: str, request: dict) -> dict:
    response = requests.post(
        f"{url}/invocations",
        data=request["body"].encode(),
        headers={"Content-Type": request["content_type"]},
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    return answer(response)


def client_data(case: dict):
    """The Python object a user would hand to ``ScoringServerClient.invoke``."""
    dtype = case.get("dtype", "float32")
    if case["kind"] == "dataframe":
        return pd.DataFrame(case["data"], columns=case["columns"])
    if case["kind"] == "ndarray":
        return np.asarray(case["data"], dtype=dtype)
    return case["data"]


def invoke(client: ScoringServerClient, case: dict) -> dict:
    try:
        predictions = client.invoke(client_data(case), params=case.get("params"))
    except Exception as error:  # the client raises a bare Exception for a non-200 answer
        return {"error": str(error)}
    return {"predictions": predictions["predictions"]}


def probes(url: str) -> dict:
    ping = requests.get(f"{url}/ping", timeout=REQUEST_TIMEOUT_SECONDS)
    version = requests.get(f"{url}/version", timeout=REQUEST_TIMEOUT_SECONDS)
    return {
        "ping": {"status": ping.status_code, "body": ping.text},
        "version": {"status": version.status_code, "body": version.text},
    }


def ask_both(job: dict, mlflow_url: str) -> dict:
    urls = {"mlflow": mlflow_url, "pinserve": job["pinserve"]}
    answers = {}
    for request in job.get("requests", []):
        answers[request["name"]] = {side: post(url, request) for side, url in urls.items()}
    for case in job.get("client", []):
        answers[case["name"]] = {}
        for side, url in urls.items():
            host, port = url.removeprefix("http://").rsplit(":", 1)
            answers[case["name"]][side] = invoke(ScoringServerClient(host, port), case)
    for side, url in urls.items():
        for name, probe in probes(url).items():
            answers.setdefault(name, {})[side] = probe
    return answers


def main() -> None:
    job = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as temporary:
        if "onnx" in job:
            model_uri = str(Path(temporary) / "model")
            # No signature: what mlflow.onnx.save_model(model, path) gives. MLflow's own
            # requirements inference would load the model in a subprocess; nothing installs them.
            save_model(onnx.load(job["onnx"]), model_uri, pip_requirements=["onnxruntime"])
        else:
            model_uri = job["model_uri"]
        port = free_port()
        server = start_mlflow(model_uri, port)
        try:
            ScoringServerClient("127.0.0.1", port).wait_server_ready(
                timeout=READY_TIMEOUT_SECONDS, scoring_server_proc=server
            )
            answers = ask_both(job, f"http://127.0.0.1:{port}")
        finally:
            stop(server)
    json.dump({"answers": answers}, sys.stdout)


if __name__ == "__main__":
    main()
