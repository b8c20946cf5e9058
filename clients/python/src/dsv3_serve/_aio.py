"""AsyncClient: the asyncio client (grpc.aio); streams are async iterators."""
from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, List, Optional

import grpc.aio

from dsv3.v1 import inference_pb2 as pb
from dsv3.v1 import inference_pb2_grpc as pb_grpc

from . import _channel, _requests
from ._requests import ChatEvent, GenerateEvent, Message, Prompt


class AsyncClient:
    """Client's methods as coroutines and async generators, on one grpc.aio channel:

        async with AsyncClient("127.0.0.1:50051") as client:
            async for piece in client.generate("Hello", max_tokens=16):
                print(piece, end="")

    Create it inside the event loop that uses it (grpc.aio binds a channel to its loop).
    """

    def __init__(self, address: str = "127.0.0.1:50051", *, api_key: Optional[str] = None,
                 tls: bool = False, root_certificates: Optional[bytes] = None,
                 private_key: Optional[bytes] = None, certificate_chain: Optional[bytes] = None,
                 timeout: Optional[float] = None, options: Iterable = ()):
        creds = _channel.credentials(tls, root_certificates, private_key, certificate_chain)
        options = list(options)
        self._channel = (grpc.aio.secure_channel(address, creds, options) if creds
                         else grpc.aio.insecure_channel(address, options))
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._metadata = _channel.metadata(api_key)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _stream(self, method, request) -> AsyncIterator:
        call = method(request, metadata=self._metadata, timeout=self._timeout)
        try:
            async for response in call:
                yield response
        finally:
            call.cancel()

    async def generate_events(self, prompt: Prompt, **options: Any) -> AsyncIterator[GenerateEvent]:
        request = _requests.generate_request(prompt, **options)
        async for response in self._stream(self._stub.Generate, request):
            yield _requests.generate_event(response)

    async def generate(self, prompt: Prompt, **options: Any) -> AsyncIterator[str]:
        async for event in self.generate_events(prompt, **options):
            if event.text:
                yield event.text

    async def generate_ids(self, prompt: Prompt, **options: Any) -> AsyncIterator[int]:
        options.setdefault("return_text", False)
        options["return_token_ids"] = True
        async for event in self.generate_events(prompt, **options):
            for token_id in event.token_ids:
                yield token_id

    async def chat_events(self, messages: Iterable[Message], *, template: Optional[str] = None,
                          **options: Any) -> AsyncIterator[ChatEvent]:
        request = _requests.chat_request(messages, template=template, **options)
        async for response in self._stream(self._stub.Chat, request):
            yield _requests.chat_event(response)

    async def chat(self, messages: Iterable[Message], *, template: Optional[str] = None,
                   **options: Any) -> AsyncIterator[str]:
        async for event in self.chat_events(messages, template=template, **options):
            if event.content:
                yield event.content

    async def tokenize(self, text: str, *, add_bos_token: bool = False) -> List[int]:
        request = pb.TokenizeRequest(text=_requests.utf8(text, "text"),
                                     add_bos_token=add_bos_token)
        response = await self._stub.Tokenize(request, metadata=self._metadata,
                                             timeout=self._timeout)
        return list(response.token_ids)

    async def detokenize(self, token_ids: Iterable[int], *,
                         skip_special_tokens: bool = False) -> str:
        request = pb.DetokenizeRequest(token_ids=list(token_ids),
                                       skip_special_tokens=skip_special_tokens)
        response = await self._stub.Detokenize(request, metadata=self._metadata,
                                               timeout=self._timeout)
        return response.text

    async def model_info(self) -> pb.ModelInfo:
        return await self._stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=self._metadata,
                                             timeout=self._timeout)
