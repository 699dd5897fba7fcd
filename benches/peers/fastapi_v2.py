"""The Open Inference Protocol v2 infer endpoint as a competent ML engineer writes it in Python:
FastAPI on uvicorn (uvloop, httptools), orjson, numpy and onnxruntime, the session created once
per worker process, inference on the thread pool so the event loop keeps accepting requests.

    MODEL_PATH=models-fixtures/tabular_mlp/1/model.onnx MODEL_NAME=tabular_mlp INTRA_OP_THREADS=1 \
        .venv-peers-fastapi/bin/uvicorn --app-dir benches/peers fastapi_v2:app --workers 2 --port 9000
"""

import os

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

MODEL_NAME = os.environ["MODEL_NAME"]

options = ort.SessionOptions()
options.intra_op_num_threads = int(os.environ.get("INTRA_OP_THREADS", "1"))
session = ort.InferenceSession(
    os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"]
)

DTYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
    "BYTES": np.object_,
}
DATATYPES = {np.dtype(dtype): name for name, dtype in DTYPES.items() if dtype is not np.object_}

app = FastAPI()


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request):
    if name != MODEL_NAME:
        raise HTTPException(status_code=404, detail=f"unknown model {name}")
    body = orjson.loads(await request.body())
    try:
        feeds = {
            tensor["name"]: np.asarray(tensor["data"], dtype=DTYPES[tensor["datatype"]]).reshape(
                tensor["shape"]
            )
            for tensor in body["inputs"]
        }
    except (KeyError, ValueError) as err:
        raise HTTPException(status_code=400, detail=str(err)) from err
    names = [output.name for output in session.get_outputs()]
    results = await run_in_threadpool(session.run, names, feeds)
    outputs = [
        {
            "name": output_name,
            "datatype": DATATYPES.get(result.dtype, "BYTES"),
            "shape": list(result.shape),
            "data": result.ravel().tolist(),
        }
        for output_name, result in zip(names, results)
    ]
    response = {"model_name": MODEL_NAME, "id": body.get("id"), "outputs": outputs}
    return Response(orjson.dumps(response), media_type="application/json")
