"""Client: the blocking client; streams are iterators."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, List, Optional

import grpc

from dsv3.v1 import inference_pb2 as pb
from dsv3.v1 import inference_pb2_grpc as pb_grpc

from . import _channel, _requests
from ._requests import ChatEvent, GenerateEvent, Message, Prompt


class Client:
    """A connection to one dsv3-server.

        with Client("127.0.0.1:50051") as client:
            for piece in client.generate("The capital of France is", max_tokens=16):
                print(piece, end="", flush=True)

    Prompts are str (sent as UTF-8), bytes (UTF-8) or a sequence of token ids. Sampling
    parameters are keywords named as in the proto's SamplingParameters (temperature, top_p,
    top_k, min_p, repetition_penalty, presence_penalty, frequency_penalty, seed, max_tokens,
    min_tokens, stop, stop_token_ids, ignore_eos, logprobs). Errors are grpc.RpcError with the
    server's status code and message. Leaving a stream early (break) cancels it on the server.
    """

    def __init__(self, address: str = "127.0.0.1:50051", *, api_key: Optional[str] = None,
                 tls: bool = False, root_certificates: Optional[bytes] = None,
                 private_key: Optional[bytes] = None, certificate_chain: Optional[bytes] = None,
                 timeout: Optional[float] = None, options: Iterable = ()):
        creds = _channel.credentials(tls, root_certificates, private_key, certificate_chain)
        options = list(options)
        self._channel = (grpc.secure_channel(address, creds, options) if creds
                         else grpc.insecure_channel(address, options))
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._metadata = _channel.metadata(api_key)
        self._timeout = timeout  # seconds per call; None: no deadline

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _stream(self, method, request) -> Iterator:
        call = method(request, metadata=self._metadata, timeout=self._timeout)
        try:
            yield from call
        finally:
            call.cancel()  # a no-op once the stream has ended

    def generate_events(self, prompt: Prompt, **options: Any) -> Iterator[GenerateEvent]:
        """Every delta with its text, token ids, logprobs, and on the last one finish_reason
        and usage. Options: sampling keywords, return_text, return_token_ids,
        skip_special_tokens, add_bos_token, request_id."""
        request = _requests.generate_request(prompt, **options)
        for response in self._stream(self._stub.Generate, request):
            yield _requests.generate_event(response)

    def generate(self, prompt: Prompt, **options: Any) -> Iterator[str]:
        """The output's text pieces as they arrive (each is whole UTF-8 characters)."""
        for event in self.generate_events(prompt, **options):
            if event.text:
                yield event.text

    def generate_ids(self, prompt: Prompt, **options: Any) -> Iterator[int]:
        """The output's token ids as they arrive; works without a tokenizer on the server."""
        options.setdefault("return_text", False)
        options["return_token_ids"] = True
        for event in self.generate_events(prompt, **options):
            yield from event.token_ids

    def chat_events(self, messages: Iterable[Message], *, template: Optional[str] = None,
                    **options: Any) -> Iterator[ChatEvent]:
        """messages: [{"role": "user", "content": "..."}, ...] (roles system, user, assistant,
        tool; assistant turns may have "tool_calls": [{"name": ..., "arguments": ...}]).
        template: "v3" (default) or "r1". Options: sampling keywords, return_token_ids,
        request_id."""
        request = _requests.chat_request(messages, template=template, **options)
        for response in self._stream(self._stub.Chat, request):
            yield _requests.chat_event(response)

    def chat(self, messages: Iterable[Message], *, template: Optional[str] = None,
             **options: Any) -> Iterator[str]:
        """The answer's text pieces (R1's reasoning and tool calls: chat_events)."""
        for event in self.chat_events(messages, template=template, **options):
            if event.content:
                yield event.content

    def tokenize(self, text: str, *, add_bos_token: bool = False) -> List[int]:
        request = pb.TokenizeRequest(text=_requests.utf8(text, "text"),
                                     add_bos_token=add_bos_token)
        return list(self._stub.Tokenize(request, metadata=self._metadata,
                                        timeout=self._timeout).token_ids)

    def detokenize(self, token_ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        request = pb.DetokenizeRequest(token_ids=list(token_ids),
                                       skip_special_tokens=skip_special_tokens)
        return self._stub.Detokenize(request, metadata=self._metadata,
                                     timeout=self._timeout).text

    def model_info(self) -> pb.ModelInfo:
        return self._stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=self._metadata,
                                       timeout=self._timeout)
