"""Drives pinserve's gRPC service with Triton's own client (tritonclient.grpc) or KServe's
(kserve.InferenceGRPCClient), unchanged, as their users do.

Reads a JSON job from stdin: {"address": "HOST:PORT", "client": "triton" | "kserve",
"model": NAME, "requests": [REQUEST, ...]}, where each REQUEST is {"inputs": [v2 JSON inputs],
"raw": bool, "outputs": [names] or null, "model": NAME (optional, defaults to the job's)}.
"raw" false asks the KServe client for typed `contents` instead of `raw_input_contents` (Triton's
client always sends raw contents). Writes what the client saw as JSON: liveness, readiness, the
server and model metadata, for each request its outputs as v2 JSON ({name, datatype, shape,
data}) or its error ({"error", "code"}), and, for Triton's client, the statistics after the last
request. The Rust test compares those with the golden outputs; this script only translates.
"""

import asyncio
import json
import sys

import numpy as np
from tritonclient.utils import triton_to_np_dtype


def to_numpy(tensor):
    if tensor["datatype"] == "BYTES":
        return np.array([v.encode() for v in tensor["data"]], dtype=np.object_).reshape(
            tensor["shape"]
        )
    dtype = triton_to_np_dtype(tensor["datatype"])
    return np.array(tensor["data"], dtype=dtype).reshape(tensor["shape"])


def output_json(name, datatype, array):
    if datatype == "BYTES":
        data = [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1)]
    else:
        data = array.reshape(-1).tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def run_triton(job):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=job["address"])

    def infer(request):
        model = request.get("model", job["model"])
        inputs = []
        for tensor in request["inputs"]:
            infer_input = grpcclient.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
            infer_input.set_data_from_numpy(to_numpy(tensor))
            inputs.append(infer_input)
        outputs = None
        if request["outputs"] is not None:
            outputs = [grpcclient.InferRequestedOutput(name) for name in request["outputs"]]
        try:
            result = client.infer(model, inputs, outputs=outputs, request_id="grpc-client")
        except InferenceServerException as err:
            return {"error": err.message(), "code": err.status()}
        response = result.get_response()
        return {
            "id": response.id,
            "outputs": [
                output_json(output.name, output.datatype, result.as_numpy(output.name))
                for output in response.outputs
            ],
        }

    metadata = client.get_model_metadata(job["model"], as_json=True)
    report = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(job["model"]),
        "server_metadata": client.get_server_metadata(as_json=True),
        "metadata": metadata,
        "answers": [infer(request) for request in job["requests"]],
    }
    report["statistics"] = client.get_inference_statistics(job["model"], as_json=True)
    client.close()
    return report


async def run_kserve(job):
    from kserve import InferenceGRPCClient, InferInput, InferRequest
    from kserve.protocol.infer_type import RequestedOutput
    import grpc

    client = InferenceGRPCClient(url=job["address"], verbose=False)

    async def infer(request):
        model = request.get("model", job["model"])
        # FP16 and BF16 have no typed contents field, and a request is either all raw or all
        # typed: with one of them, every input travels raw.
        raw = request["raw"] or any(t["datatype"] in ("FP16", "BF16") for t in request["inputs"])
        inputs = []
        for tensor in request["inputs"]:
            infer_input = InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
            infer_input.set_data_from_numpy(to_numpy(tensor), binary_data=raw)
            inputs.append(infer_input)
        outputs = None
        if request["outputs"] is not None:
            outputs = [RequestedOutput(name) for name in request["outputs"]]
        infer_request = InferRequest(
            model_name=model, infer_inputs=inputs, request_id="grpc-client",
            request_outputs=outputs,
        )
        try:
            response = await client.infer(infer_request)
        except grpc.aio.AioRpcError as err:
            return {"error": err.details(), "code": err.code().name}
        return {
            "id": response.id,
            "outputs": [
                output_json(output.name, output.datatype, output.as_numpy())
                for output in response.outputs
            ],
        }

    report = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(job["model"]),
        "answers": [await infer(request) for request in job["requests"]],
    }
    await client.close()
    return report


def main():
    job = json.load(sys.stdin)
    if job["client"] == "triton":
        report = run_triton(job)
    else:
        report = asyncio.run(run_kserve(job))
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
