"""Baseline (b) of bench/serve.py: what a user would write instead of the platform.

One uvicorn process, the same package and input parsing, one input per forward pass (no batching,
no routing, no result store). ``BENCH_PACKAGE`` names the package file; ``BENCH_TORCH_THREADS``
sets torch's intra-op threads (default: torch's own, one per core).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)
from fastapi import FastAPI, Request

from aiplatform.kinds import TabularKind, TextKind
from aiplatform.kinds.images import image_from_json
from aiplatform.limits import RequestLimits
from aiplatform.serving.runner import ModelRunner

if os.environ.get("BENCH_TORCH_THREADS"):  # one thread: what a careful user deploys on a small machine
    import torch

    torch.set_num_threads(int(os.environ["BENCH_TORCH_THREADS"]))
runner = ModelRunner.from_bytes(Path(os.environ["BENCH_PACKAGE"]).read_bytes())
tokenizer = runner.kind.tokenizer if isinstance(runner.kind, TextKind) else None
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    payload = json.loads(await request.body())
    if tokenizer is not None:
        inputs = tokenizer.encode(payload["text"])
    elif isinstance(runner.kind, TabularKind):
        inputs = runner.kind.from_json(payload, RequestLimits())
    else:
        inputs = image_from_json(payload, runner.config.input)
    answer = runner.predict(inputs[None, ...])[0]
    return {"request_id": uuid.uuid4().hex, **answer}
