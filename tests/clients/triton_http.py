"""Drives pinserve with Triton's own HTTP client (tritonclient.http), as Triton users do.

Reads a JSON job from stdin: {"url": "HOST:PORT", "model": NAME, "requests": [REQUEST, ...]},
where each REQUEST is {"inputs": [v2 JSON inputs], "binary_inputs": bool, "binary_outputs": bool,
"outputs": [names, or {"name": NAME, "class_count": K} for the classification extension] or null, "compression": [request's, response's] ("gzip", "deflate" or null)}. Writes what the client saw to stdout as JSON: liveness, readiness,
the model metadata, for each request its outputs as v2 JSON ({name, datatype, shape, data}, and
class_labels where the output's parameters have them), and
the statistics extension's answer after the last request.
The Rust test compares those with the golden outputs; this script only translates.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def to_numpy(tensor):
    datatype = tensor["datatype"]
    if datatype == "BYTES":
        return np.array(tensor["data"], dtype=np.object_).reshape(tensor["shape"])
    return np.array(tensor["data"], dtype=triton_to_np_dtype(datatype)).reshape(tensor["shape"])


def to_json(result, name):
    output = result.get_output(name)
    array = result.as_numpy(name)
    if output["datatype"] == "BYTES":
        # Binary BYTES come back as bytes, JSON ones as str.
        data = [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.reshape(-1)]
    else:
        data = array.reshape(-1).tolist()
    tensor = {"name": name, "datatype": output["datatype"], "shape": output["shape"], "data": data}
    class_labels = output.get("parameters", {}).get("class_labels")
    if class_labels is not None:
        tensor["class_labels"] = class_labels
    return tensor


def requested_output(output, binary):
    if isinstance(output, str):
        return httpclient.InferRequestedOutput(output, binary_data=binary)
    return httpclient.InferRequestedOutput(
        output["name"], binary_data=binary, class_count=output["class_count"]
    )


def run(client, model, request):
    inputs = []
    for tensor in request["inputs"]:
        infer_input = httpclient.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
        # tritonclient sends BF16 only as binary data.
        binary = request["binary_inputs"] or tensor["datatype"] == "BF16"
        infer_input.set_data_from_numpy(to_numpy(tensor), binary_data=binary)
        inputs.append(infer_input)
    outputs = None
    if request["outputs"] is not None:
        outputs = [
            requested_output(output, request["binary_outputs"]) for output in request["outputs"]
        ]
    request_compression, response_compression = request.get("compression") or (None, None)
    try:
        result = client.infer(
            model,
            inputs,
            outputs=outputs,
            request_id="triton-client",
            request_compression_algorithm=request_compression,
            response_compression_algorithm=response_compression,
        )
    except InferenceServerException as err:
        return {"error": err.message(), "status": err.status()}
    response = result.get_response()
    names = [output["name"] for output in response["outputs"]]
    return {"id": response.get("id"), "outputs": [to_json(result, name) for name in names]}


def main():
    job = json.load(sys.stdin)
    client = httpclient.InferenceServerClient(url=job["url"])
    report = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(job["model"]),
        "server_metadata": client.get_server_metadata(),
        "metadata": client.get_model_metadata(job["model"]),
        "answers": [run(client, job["model"], request) for request in job["requests"]],
    }
    report["statistics"] = client.get_inference_statistics(job["model"])
    client.close()
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
