"""The kinds of model input and the requests each takes: the UI builds its upload and paste
handling and its import form from them, so a new kind needs no UI change."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from aiplatform.kinds import KINDS

router = APIRouter(prefix="/v1/kinds", tags=["kinds"])


class KindPublic(BaseModel):
    name: str = Field(description="model.json's input.type and a dataset manifest's kind")
    upload: list[str] = Field(description="file name endings an upload to such a model may have")
    json_keys: list[str] = Field(description="a v1 JSON body holding one of these keys is this kind's")
    paste_key: str | None = Field(description="pasted text is sent as {paste_key: text}; null: pasted as JSON")
    paste_hint: str
    importable: bool = Field(description="whether an ONNX file can be imported as a model of this kind")
    import_hint: str | None = Field(description="an example of an import's preprocessing for this kind")


class KindList(BaseModel):
    kinds: list[KindPublic]


@router.get("", response_model=KindList)
def kinds() -> dict[str, Any]:
    return {
        "kinds": [{"name": name, "importable": kind.importable, **kind.request_shape()} for name, kind in KINDS.items()]
    }
