"""Baseline (b) of bench/serve.py: what a user would write instead of the platform.

One uvicorn process, the same package and input parsing, one image per forward pass (no batching,
no routing, no result store). ``BENCH_PACKAGE`` names the package file.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from aiplatform.serving.inputs import image_from_json
from aiplatform.serving.runner import ModelRunner

runner = ModelRunner.from_bytes(Path(os.environ["BENCH_PACKAGE"]).read_bytes())
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    image = image_from_json(json.loads(await request.body()), runner.config)
    answer = runner.predict(image[None, ...])[0]
    return {"request_id": uuid.uuid4().hex, **answer}
