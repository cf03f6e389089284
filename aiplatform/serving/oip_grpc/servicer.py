"""The Open Inference Protocol over gRPC: the six RPCs over the inference core (KServe's
``protocol/grpc/servicer.py``).

Serve's gRPC proxy calls the gateway's method named as the RPC with the request message
(``SERVICER_FUNCTION``); the gateway hands those names (``RPCS``) to this servicer's methods. Each
turns its message into a core call and the answer into a message; every call but the health
checks asks the access policy first, and a refusal or a platform error sets the call's status
code and details (the same messages as over REST) and answers an empty message.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiplatform.access.protocols import AccessAPI
from aiplatform.errors import AIPError, TooLarge
from aiplatform.limits import MAX_REQUEST_BYTES, off_loop_if_large
from aiplatform.registry import ModelProjects
from aiplatform.serving.dataplane import DataPlane, Overloaded
from aiplatform.serving.oip_grpc import predict_v2_pb2 as pb
from aiplatform.serving.oip_grpc.access import grpc_refusal
from aiplatform.serving.oip_grpc.messages import (
    grpc_status_name,
    infer_request_body,
    infer_response_message,
    model_metadata_message,
    version_number,
)
from aiplatform.serving.v2 import infer_answer, server_metadata

RPCS = ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelInfer")
"""The service's RPCs, each a method of :class:`InferenceServicer` of the same name."""


class InferenceServicer:
    """The gRPC service over the inference core; ``auth``, ``token`` and ``directory``: the
    platform's ``api_auth`` setting, API token and users' keys (aiplatform.serving.oip_grpc.access)."""

    def __init__(
        self,
        core: DataPlane,
        auth: str,
        token: str | None,
        directory: AccessAPI | None = None,
        models: ModelProjects | None = None,
        *,
        blocking: bool = False,
    ) -> None:
        """``models``: which project each model belongs to; ``blocking``: whether asking
        ``directory`` or ``models`` may wait on the head's actors (then it is asked off the
        event loop; ``aiplatform.access.actor``)."""
        self.core = core
        self.auth = auth
        self.token = token
        self.directory = directory
        self.models = models
        self.blocking = blocking

    async def ServerLive(self, request: Any, grpc_context: Any = None) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, grpc_context: Any = None) -> Any:
        return pb.ServerReadyResponse(ready=await self.core.ready())

    async def ServerMetadata(self, request: Any, grpc_context: Any = None) -> Any:
        async def answer() -> Any:
            server = server_metadata()
            return pb.ServerMetadataResponse(
                name=server["name"], version=server["version"], extensions=server["extensions"]
            )

        return await self._answer(grpc_context, pb.ServerMetadataResponse, answer)

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:
        async def answer() -> Any:
            ready = await self.core.model_ready(request.name, version_number(request.version))
            return pb.ModelReadyResponse(ready=ready["ready"])

        return await self._answer(grpc_context, pb.ModelReadyResponse, answer, model=request.name)

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:
        async def answer() -> Any:
            return model_metadata_message(await self.core.model_metadata(request.name, version_number(request.version)))

        return await self._answer(grpc_context, pb.ModelMetadataResponse, answer, model=request.name)

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:
        async def read() -> tuple[bytes, Any]:
            if request.ByteSize() > MAX_REQUEST_BYTES:  # the proxy's own limit may be set higher
                raise TooLarge(f"The request is {request.ByteSize()} bytes; the limit is {MAX_REQUEST_BYTES}")
            raw = request.SerializeToString()
            return raw, await off_loop_if_large(len(raw), infer_request_body, request)

        async def answer() -> Any:
            predictions = await self.core.infer(request.model_name, version_number(request.model_version), read)
            return infer_response_message(infer_answer(predictions), predictions.wanted.names)  # type: ignore[union-attr]

        return await self._answer(grpc_context, pb.ModelInferResponse, answer, model=request.model_name)

    async def _answer(
        self, context: Any, empty: Callable[[], Any], answer: Callable[[], Awaitable[Any]], model: str | None = None
    ) -> Any:
        """``answer()`` for a caller the access policy lets in; a refusal or a platform error sets
        the call's status code and details and returns an empty message (without a context, as
        in a unit test, the error is raised)."""
        import grpc

        metadata = dict(context.invocation_metadata()) if context is not None else {}
        refuse = functools.partial(
            grpc_refusal, self.auth, self.token, metadata.get("authorization"), self.directory, model, self.models
        )
        refusal = await asyncio.to_thread(refuse) if self.blocking else refuse()
        try:
            if refusal is not None:
                raise refusal
            return await answer()
        except AIPError as exc:
            if context is None:
                raise
            status = "RESOURCE_EXHAUSTED" if isinstance(exc, Overloaded) else grpc_status_name(exc)
            context.set_code(getattr(grpc.StatusCode, status))
            context.set_details(exc.message)
            return empty()
