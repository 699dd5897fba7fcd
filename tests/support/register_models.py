"""Fill the test services that tests/support/services.sh started with the models pinserve's
registry tests load, then describe them in ``registered.json`` for the Rust tests.

Run by ``services.sh start`` with the ``PINSERVE_TEST_*`` variables it also writes to
``target/test-services/env``; the description goes to ``$PINSERVE_TEST_SERVICES``.

What is registered, and why:

* MLflow, registered model ``tabular-mlp`` (the fixture ``tabular_mlp``, input ``features``):

  - version 1 is the fixture as one self-contained ``model.onnx``, the plain case. It is also
    in stage ``Production``, so that stage lookups (deprecated in MLflow 3, still served) have
    an answer that differs from the alias's.
  - version 2 negates the output layer, so its probability is 1 - version 1's: a test can tell
    from one inference which version is served. It is saved with MLflow's default
    ``save_as_external_data=True``, its weights in files of their own beside ``model.onnx``
    (one per tensor, named after it, rather than onnx's default of one file with a random
    name), so a loader has to fetch the whole artifact directory. Alias ``champion``.
  - version 3 holds version 1's bytes under a wrong ``sha256`` tag: pinserve must refuse it.

  Every version carries a ``sha256`` tag, the digest of ``model.onnx`` as read back from the
  server's artifact proxy, which is also where every file list and expected output comes from.
* MLflow, ``churn-pipeline`` version 1: several inputs, strings among them, with a tensor
  signature (a feed dict of [N, 1] arrays: what MLflow's onnx flavour itself accepts for a
  multi-input model).
* MLflow, ``embedding-lookup``: the fixture ``embedding_lookup`` version 2 (its table pruned to
  95 ids, so ids 95-99 make ONNX Runtime fail while generated zeros pass), logged with an
  ``input_example`` (MLflow writes ``input_example.json`` and ``serving_input_example.json``
  beside the model): version 1's example holds ids in range, version 2's holds id 97, so a
  server that warms up with the example fails to load version 2, and one that warmed up with
  zeros would not.
* MLflow, logged models that are in no registered model (``models:/m-<id>``): the fixture
  ``tabular_mlp`` logged as ``tabular-logged`` with a ``sha256`` tag on the logged model (its
  ``model.onnx``'s digest), and again as ``tabular-logged-tampered`` with a wrong one, which
  pinserve must refuse as it refuses a registered version's.
* The MLflow server with basic auth: ``tabular-mlp`` version 1 only; what is tested there is
  the credentials.
* S3 (moto): a model repository ``ROOT/NAME/VERSION/`` with sidecar digests written as
  ``sha256sum`` writes them (``<hex>  model.onnx``): ``tabular_mlp/1`` with a correct sidecar,
  ``churn_pipeline/1`` without one, ``tabular_mlp/2`` with a wrong one.
* Azure Blob (Azurite): the same repository in a container, written with Azure's own SDK
  through the emulator's well-known development account, so that pinserve's ``az://`` reads
  meet a real Blob API and its shared-key signatures are checked.

The model bytes are deterministic (the committed fixtures, a fixed transformation); run ids,
model ids (``m-<hex>``) and timestamps are MLflow's own and change on every start, hence
``registered.json``. Expected outputs are computed by ONNX Runtime on the artifacts read back,
for the fixtures' golden ``batch_1`` requests. Last, the REST endpoints pinserve uses are read
back and checked, so that an MLflow upgrade that changes them fails here, not in a Rust test.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import boto3
import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import requests
from azure.storage.blob import BlobServiceClient
from mlflow.models import infer_signature
from mlflow.models.signature import ModelSignature
from onnx import numpy_helper

FIXTURES = Path(__file__).resolve().parents[2] / "models-fixtures"
EXPERIMENT = "pinserve-tests"
PIP_REQUIREMENTS = ["onnx==1.23.2", "onnxruntime==1.31.1"]  # skips MLflow's slow inference
TAMPERED_SHA256 = hashlib.sha256(b"tampered").hexdigest()
ARTIFACTS_SCHEME = "mlflow-artifacts:/"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
S3_ROOT = "repo"
AZURE_ROOT = "repo"
V2_DATATYPES = {"float32": "FP32", "int64": "INT64"}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- #
# Models, requests and expected outputs
# --------------------------------------------------------------------------- #


def load_fixture(name: str, version: str = "1") -> onnx.ModelProto:
    return onnx.load(FIXTURES / name / version / "model.onnx")


def golden_batch_1(fixture: str, request_id: str) -> tuple[dict, list[dict]]:
    """The fixture's golden batch_1 request (with a new id) and the outputs it holds."""
    golden = json.loads((FIXTURES / "golden" / f"{fixture}.json").read_text())
    case = next(c for c in golden["cases"] if c["name"] == "batch_1")
    return {**case["request"], "id": request_id}, case["outputs"]


def feeds(request: dict) -> dict[str, np.ndarray]:
    dtypes = {"FP32": np.float32, "BYTES": object}
    return {
        i["name"]: np.array(i["data"], dtype=dtypes[i["datatype"]]).reshape(i["shape"])
        for i in request["inputs"]
    }


def run(model: str | bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of the model (a path, or serialized bytes), in its order."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def infer(model_path: Path, request: dict) -> list[dict]:
    """Outputs in the Open Inference Protocol form, as the golden files write them."""
    return [
        {
            "name": name,
            "datatype": V2_DATATYPES[array.dtype.name],
            "shape": list(array.shape),
            "data": array.reshape(-1).tolist(),
        }
        for name, array in run(str(model_path), feeds(request)).items()
    ]


def close(outputs: list[dict], others: list[dict]) -> bool:
    """Same names and shapes, and values equal to float32 rounding."""
    return all(
        (o["name"], o["shape"]) == (p["name"], p["shape"])
        and np.allclose(o["data"], p["data"], rtol=1e-6)
        for o, p in zip(outputs, others, strict=True)
    )


def signature_of(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> ModelSignature:
    """A named tensor signature, from example inputs and the model's outputs for them."""
    return infer_signature(inputs, run(model.SerializeToString(), inputs))


def tabular_mlp_negated(model: onnx.ModelProto) -> onnx.ModelProto:
    """tabular_mlp with its last Gemm negated: sigmoid(-z) = 1 - sigmoid(z)."""
    negated = copy.deepcopy(model)
    for tensor in negated.graph.initializer:
        if tensor.name in ("fc2.weight", "fc2.bias"):
            tensor.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(tensor), tensor.name))
    negated.doc_string = "tabular_mlp with the output layer negated: probability is 1 - its."
    assert negated.ir_version == 10
    return negated


def external_data_files(model_path: Path) -> list[str]:
    model = onnx.load(model_path, load_external_data=False)
    return sorted(
        {
            entry.value
            for tensor in model.graph.initializer
            if tensor.data_location == onnx.TensorProto.EXTERNAL
            for entry in tensor.external_data
            if entry.key == "location"
        }
    )


# --------------------------------------------------------------------------- #
# MLflow
# --------------------------------------------------------------------------- #


@dataclass
class MlflowServer:
    uri: str
    auth: tuple[str, str] | None = None

    def connect(self) -> None:
        """Point MLflow's client at this server; its URI and credentials are process-wide."""
        mlflow.set_tracking_uri(self.uri)
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
        if self.auth:
            username, password = self.auth
            os.environ["MLFLOW_TRACKING_USERNAME"] = username
            os.environ["MLFLOW_TRACKING_PASSWORD"] = password
        mlflow.set_experiment(EXPERIMENT)

    def request(self, method: str, endpoint: str, **kwargs) -> requests.Response:
        url = self.uri + endpoint
        response = requests.request(method, url, auth=self.auth, timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def get(self, endpoint: str, /, **params: str) -> dict:
        return self.request("GET", endpoint, params=params).json()

    def download_tree(self, artifact_uri: str, destination: Path) -> list[str]:
        """Fetch a directory through the artifact proxy, as pinserve does; its relative paths."""
        assert artifact_uri.startswith(ARTIFACTS_SCHEME), artifact_uri
        root = artifact_uri.removeprefix(ARTIFACTS_SCHEME)
        files, pending = [], [""]  # directories below root: "" or "name/"
        while pending:
            directory = pending.pop()
            # Entries are names relative to `path`; a missing directory lists as {}.
            listing = self.get(ARTIFACTS_API, path=f"{root}/{directory}".rstrip("/"))
            for entry in listing.get("files", []):
                relative = directory + entry["path"]
                if entry["is_dir"]:
                    pending.append(relative + "/")
                    continue
                body = self.request("GET", f"{ARTIFACTS_API}/{root}/{relative}").content
                assert len(body) == entry["file_size"], (relative, len(body), entry)
                (destination / relative).parent.mkdir(parents=True, exist_ok=True)
                (destination / relative).write_bytes(body)
                files.append(relative)
        return sorted(files)


def log_version(
    server: MlflowServer,
    name: str,
    model: onnx.ModelProto,
    signature: ModelSignature,
    request: dict,
    *,
    external_data: bool = False,
    sha256_tag: str | None = None,
) -> tuple[dict, list[dict]]:
    """Log and register one version; its registered.json entry and its expected outputs."""
    save_options = {"all_tensors_to_one_file": False} if external_data else {}
    with mlflow.start_run(run_name=name) as run:
        info = mlflow.onnx.log_model(
            model,
            name="model",
            signature=signature,
            pip_requirements=PIP_REQUIREMENTS,
            save_as_external_data=external_data,
            **save_options,
        )
    artifact_uri = mlflow.get_logged_model(info.model_id).artifact_location
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        files = server.download_tree(artifact_uri, directory)
        digest = sha256_hex((directory / "model.onnx").read_bytes())
        stored_external_data = external_data_files(directory / "model.onnx")
        outputs = infer(directory / "model.onnx", request)
    assert bool(stored_external_data) == external_data, stored_external_data
    assert set(stored_external_data) <= set(files), (stored_external_data, files)
    tag = sha256_tag or digest
    version = mlflow.register_model(info.model_uri, name, tags={"sha256": tag})
    entry = {
        "version": version.version,
        "sha256": tag,
        "model_onnx_sha256": digest,
        "files": files,
        "external_data": stored_external_data,
        "run_id": run.info.run_id,
        "model_id": info.model_id,
        "source": version.source,
        "download_uri": artifact_uri,
        "artifact_path": artifact_uri.removeprefix(ARTIFACTS_SCHEME),
    }
    return entry, outputs


def check_registered(server: MlflowServer, registered: dict[str, dict]) -> None:
    """Read back, through the REST API pinserve uses, what was registered."""
    for name, description in registered.items():
        check_registered_model(server, name, description)


def check_registered_model(server: MlflowServer, name: str, description: dict) -> None:
    for number, entry in description["versions"].items():
        version = server.get("/api/2.0/mlflow/model-versions/get", name=name, version=number)
        version = version["model_version"]
        tags = {t["key"]: t["value"] for t in version.get("tags", [])}
        assert version["status"] == "READY", version
        assert version["source"] == entry["source"] == f"models:/{entry['model_id']}", version
        assert tags["sha256"] == entry["sha256"], (tags, entry)
        download = server.get(
            "/api/2.0/mlflow/model-versions/get-download-uri", name=name, version=number
        )
        assert download["artifact_uri"] == entry["download_uri"], (download, entry)
    for alias, number in description["aliases"].items():
        version = server.get("/api/2.0/mlflow/registered-models/alias", name=name, alias=alias)
        version = version["model_version"]
        assert version["version"] == number, (alias, version)
    for stage, number in description["stages"].items():
        latest = server.request(
            "POST",
            "/api/2.0/mlflow/registered-models/get-latest-versions",
            json={"name": name, "stages": [stage]},
        ).json()["model_versions"]
        assert [v["version"] for v in latest] == [number], (stage, latest)


def register_open_server(server: MlflowServer) -> tuple[dict, dict]:
    """tabular-mlp versions 1 to 3 with an alias and a stage, and churn-pipeline version 1;
    their registered.json description and the expected outputs of the versions that load."""
    server.connect()
    tabular = load_fixture("tabular_mlp")
    request, golden = golden_batch_1("tabular_mlp", "tabular-mlp")
    signature = signature_of(tabular, feeds(request))
    v1, v1_outputs = log_version(server, "tabular-mlp", tabular, signature, request)
    v2, v2_outputs = log_version(
        server,
        "tabular-mlp",
        tabular_mlp_negated(tabular),
        signature,
        request,
        external_data=True,
    )
    v3, _ = log_version(
        server, "tabular-mlp", tabular, signature, request, sha256_tag=TAMPERED_SHA256
    )
    assert close(v1_outputs, golden) and not close(v2_outputs, v1_outputs), (v1_outputs, golden)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("tabular-mlp", "champion", "2")
    client.transition_model_version_stage("tabular-mlp", "1", "Production")

    churn = load_fixture("churn_pipeline")
    churn_request, churn_golden = golden_batch_1("churn_pipeline", "churn-pipeline")
    # Strings as numpy str arrays: the signature says "str" rather than "object".
    churn_feeds = {
        k: v.astype(str) if v.dtype == object else v for k, v in feeds(churn_request).items()
    }
    churn_v1, churn_outputs = log_version(
        server, "churn-pipeline", churn, signature_of(churn, churn_feeds), churn_request
    )
    assert close(churn_outputs, churn_golden), (churn_outputs, churn_golden)

    registered = {
        "tabular-mlp": {
            "versions": {"1": v1, "2": v2, "3": v3},
            "aliases": {"champion": "2"},
            "stages": {"Production": "1"},
        },
        "churn-pipeline": {"versions": {"1": churn_v1}, "aliases": {}, "stages": {}},
    }
    check_registered(server, registered)
    registered["embedding-lookup"] = {"versions": register_input_examples(server)}
    expected = {
        "tabular-mlp/1": {"request": request, "outputs": v1_outputs},
        "tabular-mlp/2": {"request": request, "outputs": v2_outputs},
        "churn-pipeline/1": {"request": churn_request, "outputs": churn_outputs},
    }
    return registered, expected


def register_input_examples(server: MlflowServer) -> dict:
    """embedding-lookup versions 1 (a good input example) and 2 (a failing one)."""
    model = load_fixture("embedding_lookup", "2")
    versions = {}
    for ids in ([3, 42, 94], [3, 97]):
        with mlflow.start_run(run_name="embedding-lookup"):
            info = mlflow.onnx.log_model(
                model,
                name="model",
                input_example={"ids": np.array(ids, dtype=np.int64)},
                pip_requirements=PIP_REQUIREMENTS,
                save_as_external_data=False,
            )
        artifact_uri = mlflow.get_logged_model(info.model_id).artifact_location
        with tempfile.TemporaryDirectory() as temporary:
            files = server.download_tree(artifact_uri, Path(temporary))
        assert {"input_example.json", "serving_input_example.json"} <= set(files), files
        version = mlflow.register_model(info.model_uri, "embedding-lookup")
        versions[version.version] = {"input_example_ids": ids, "files": files}
    return versions


def log_unregistered(server: MlflowServer, name: str, sha256_tag: str | None) -> dict:
    """Log the tabular fixture as logged model NAME, registered nowhere, tagged ``sha256`` with
    SHA256_TAG (or its own digest); its registered.json entry."""
    tabular = load_fixture("tabular_mlp")
    request, _ = golden_batch_1("tabular_mlp", name)
    with mlflow.start_run(run_name=name):
        info = mlflow.onnx.log_model(
            tabular,
            name=name,
            signature=signature_of(tabular, feeds(request)),
            pip_requirements=PIP_REQUIREMENTS,
            save_as_external_data=False,
        )
    logged = server.get(f"/api/2.0/mlflow/logged-models/{info.model_id}")["model"]["info"]
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        files = server.download_tree(logged["artifact_uri"], directory)
        digest = sha256_hex((directory / "model.onnx").read_bytes())
        outputs = infer(directory / "model.onnx", request)
    tag = sha256_tag or digest
    mlflow.set_logged_model_tags(info.model_id, {"sha256": tag})
    logged = server.get(f"/api/2.0/mlflow/logged-models/{info.model_id}")["model"]["info"]
    tags = {t["key"]: t["value"] for t in logged.get("tags", [])}
    assert logged["name"] == name and logged["status"] == "LOGGED_MODEL_READY", logged
    assert tags["sha256"] == tag and "mlflow.modelVersions" not in tags, tags
    return {
        "model_id": info.model_id,
        "name": name,
        "sha256": tag,
        "model_onnx_sha256": digest,
        "files": files,
        "artifact_uri": logged["artifact_uri"],
        "request": request,
        "outputs": outputs,
    }


def register_logged_models(server: MlflowServer) -> dict:
    """The logged models of no registered model, by role: ``good`` and ``tampered``."""
    good = log_unregistered(server, "tabular-logged", None)
    tampered = log_unregistered(server, "tabular-logged-tampered", TAMPERED_SHA256)
    return {"good": good, "tampered": tampered}


def register_auth_server(server: MlflowServer) -> dict:
    """tabular-mlp version 1, registered with the admin's credentials."""
    server.connect()
    tabular = load_fixture("tabular_mlp")
    request, _ = golden_batch_1("tabular_mlp", "tabular-mlp")
    v1, _ = log_version(
        server, "tabular-mlp", tabular, signature_of(tabular, feeds(request)), request
    )
    registered = {"tabular-mlp": {"versions": {"1": v1}, "aliases": {}, "stages": {}}}
    check_registered(server, registered)
    anonymous = requests.get(
        server.uri + "/api/2.0/mlflow/registered-models/get",
        params={"name": "tabular-mlp"},
        timeout=30,
    )
    assert anonymous.status_code == 401, (anonymous.status_code, anonymous.text)
    return registered


# --------------------------------------------------------------------------- #
# Object stores: S3 and Azure Blob
# --------------------------------------------------------------------------- #


def repository_layout() -> dict[str, tuple[bytes, str | None, str | None]]:
    """The model repository each object store holds below its root:
    repository path: (model bytes, sidecar digest or None, expected outputs' key or None)."""
    tabular = (FIXTURES / "tabular_mlp" / "1" / "model.onnx").read_bytes()
    churn = (FIXTURES / "churn_pipeline" / "1" / "model.onnx").read_bytes()
    return {
        "tabular_mlp/1": (tabular, sha256_hex(tabular), "tabular-mlp/1"),
        "churn_pipeline/1": (churn, None, "churn-pipeline/1"),
        "tabular_mlp/2": (tabular, TAMPERED_SHA256, None),
    }


def sidecar_text(digest: str | None) -> str | None:
    """A sidecar as ``sha256sum`` writes it."""
    return f"{digest}  model.onnx\n" if digest else None


def register_s3() -> dict:
    bucket = os.environ["PINSERVE_TEST_S3_BUCKET"]
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["PINSERVE_TEST_S3_ENDPOINT"],
        region_name=os.environ["PINSERVE_TEST_S3_REGION"],
        aws_access_key_id=os.environ["PINSERVE_TEST_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["PINSERVE_TEST_S3_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=bucket)
    models = {}
    for path, (body, sidecar_digest, expected) in repository_layout().items():
        prefix = f"{S3_ROOT}/{path}/"
        s3.put_object(Bucket=bucket, Key=prefix + "model.onnx", Body=body)
        sidecar = sidecar_text(sidecar_digest)
        if sidecar:
            s3.put_object(Bucket=bucket, Key=prefix + "model.onnx.sha256", Body=sidecar.encode())
        stored = s3.get_object(Bucket=bucket, Key=prefix + "model.onnx")["Body"].read()
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
        models[path] = {
            "files": sorted(o["Key"].removeprefix(prefix) for o in listing),
            "sha256": sha256_hex(stored),
            "sidecar": sidecar,
            "expected": expected,
        }
    return {"bucket": bucket, "root": S3_ROOT, "models": models}


def register_azure() -> dict:
    account = os.environ["PINSERVE_TEST_AZURE_ACCOUNT"]
    container_name = os.environ["PINSERVE_TEST_AZURE_CONTAINER"]
    # Azurite on an IP address is addressed path-style: the account is the first path segment.
    service = BlobServiceClient(
        f"{os.environ['PINSERVE_TEST_AZURE_BLOB_URL']}/{account}",
        credential={"account_name": account, "account_key": os.environ["PINSERVE_TEST_AZURE_KEY"]},
    )
    container = service.create_container(container_name)
    models = {}
    for path, (body, sidecar_digest, expected) in repository_layout().items():
        prefix = f"{AZURE_ROOT}/{path}/"
        container.upload_blob(prefix + "model.onnx", body)
        sidecar = sidecar_text(sidecar_digest)
        if sidecar:
            container.upload_blob(prefix + "model.onnx.sha256", sidecar.encode())
        stored = container.download_blob(prefix + "model.onnx").readall()
        listing = container.list_blob_names(name_starts_with=prefix)
        models[path] = {
            "files": sorted(name.removeprefix(prefix) for name in listing),
            "sha256": sha256_hex(stored),
            "sidecar": sidecar,
            "expected": expected,
        }
    return {"container": container_name, "root": AZURE_ROOT, "models": models}


def main() -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    open_server = MlflowServer(os.environ["PINSERVE_TEST_MLFLOW_URI"])
    auth_server = MlflowServer(
        os.environ["PINSERVE_TEST_MLFLOW_AUTH_URI"],
        (os.environ["PINSERVE_TEST_MLFLOW_USERNAME"], os.environ["PINSERVE_TEST_MLFLOW_PASSWORD"]),
    )
    registered, expected = register_open_server(open_server)
    described = {
        "mlflow": registered,
        "mlflow_logged_models": register_logged_models(open_server),
        "mlflow_auth": register_auth_server(auth_server),
        "s3": register_s3(),
        "azure": register_azure(),
        "expected": expected,
    }
    output = Path(os.environ["PINSERVE_TEST_SERVICES"])
    output.write_text(json.dumps(described, indent=2) + "\n")
    print(f"register_models.py: registered tabular-mlp and churn-pipeline; described in {output}")


if __name__ == "__main__":
    main()
