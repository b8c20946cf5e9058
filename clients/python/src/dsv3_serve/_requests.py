"""Request building and response decoding shared by Client and AsyncClient.

The proto carries request text as UTF-8 `bytes` (the server validates it, proto/dsv3/v1/
inference.proto says why); this module is where Python strings become those bytes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from dsv3.v1 import inference_pb2 as pb

Prompt = Union[str, bytes, Sequence[int]]
Message = Union[Mapping[str, Any], "pb.ChatMessage"]

# SamplingParameters' fields, by keyword (proto/dsv3/v1/inference.proto gives the defaults).
SAMPLING_FIELDS = frozenset(pb.SamplingParameters.DESCRIPTOR.fields_by_name)

_FINISH_REASONS = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length",
                   pb.FINISH_REASON_ABORT: "abort"}
_TEMPLATES = {None: pb.CHAT_TEMPLATE_UNSPECIFIED, "v3": pb.CHAT_TEMPLATE_V3,
              "r1": pb.CHAT_TEMPLATE_R1}


def utf8(value: Union[str, bytes], what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def sampling(options: Mapping[str, Any]) -> pb.SamplingParameters:
    """SamplingParameters from keywords: temperature=0.7, max_tokens=64, stop=["\\n"], ..."""
    unknown = set(options) - SAMPLING_FIELDS
    if unknown:
        raise TypeError(f"unknown sampling parameter(s) {sorted(unknown)}; "
                        f"known: {sorted(SAMPLING_FIELDS)}")
    params = dict(options)
    if "stop" in params:
        stop = params["stop"]
        stops = [stop] if isinstance(stop, (str, bytes)) else list(stop)
        params["stop"] = [utf8(s, "stop") for s in stops]
    return pb.SamplingParameters(**{k: v for k, v in params.items() if v is not None})


def generate_request(prompt: Prompt, *, return_text: Optional[bool] = None,
                     return_token_ids: Optional[bool] = None,
                     skip_special_tokens: Optional[bool] = None,
                     add_bos_token: Optional[bool] = None, request_id: Optional[str] = None,
                     **options: Any) -> pb.GenerateRequest:
    request = pb.GenerateRequest(sampling=sampling(options))
    if isinstance(prompt, (str, bytes, bytearray)):
        request.text = utf8(prompt, "prompt")
    else:
        ids = list(prompt)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise TypeError("prompt must be str, bytes or a sequence of int token ids")
        request.token_ids.ids.extend(ids)
    for name, value in (("return_text", return_text), ("return_token_ids", return_token_ids),
                        ("skip_special_tokens", skip_special_tokens),
                        ("add_bos_token", add_bos_token)):
        if value is not None:
            setattr(request, name, value)
    if request_id is not None:
        request.request_id = utf8(request_id, "request_id")
    return request


def chat_message(message: Message) -> pb.ChatMessage:
    if isinstance(message, pb.ChatMessage):
        return message
    out = pb.ChatMessage(role=message["role"])
    if message.get("content") is not None:
        out.content = utf8(message["content"], "content")
    for call in message.get("tool_calls") or []:
        out.tool_calls.add(type=call.get("type", "function"), name=call["name"],
                           arguments=call.get("arguments", ""))
    return out


def chat_request(messages: Iterable[Message], *, template: Optional[str] = None,
                 return_token_ids: bool = False, request_id: Optional[str] = None,
                 **options: Any) -> pb.ChatRequest:
    if isinstance(messages, (str, bytes)):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...}")
    if template not in _TEMPLATES:
        raise ValueError(f"template must be 'v3', 'r1' or None, not {template!r}")
    request = pb.ChatRequest(messages=[chat_message(m) for m in messages],
                             template=_TEMPLATES[template], sampling=sampling(options),
                             return_token_ids=return_token_ids)
    if request_id is not None:
        request.request_id = utf8(request_id, "request_id")
    return request


@dataclasses.dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    time_to_first_token_s: float
    time_per_output_token_s: float


@dataclasses.dataclass(frozen=True)
class Logprob:
    token_id: int
    logprob: float
    top: tuple  # ((token_id, logprob), ...), most likely first


@dataclasses.dataclass(frozen=True)
class GenerateEvent:
    """One streamed delta of Generate. The last event has finish_reason ("stop", "length" or
    "abort") and usage; the others have None there."""
    text: str
    token_ids: tuple
    logprobs: tuple
    finish_reason: Optional[str]
    usage: Optional[Usage]


@dataclasses.dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text as the model wrote it
    type: str = "function"


@dataclasses.dataclass(frozen=True)
class ChatEvent:
    """One streamed delta of Chat: the answer's text, R1's reasoning text, tool calls completed
    in this delta; finish_reason and usage on the last one."""
    content: str
    reasoning_content: str
    tool_calls: tuple
    token_ids: tuple
    finish_reason: Optional[str]
    usage: Optional[Usage]


def _usage(response) -> Optional[Usage]:
    if not response.HasField("usage"):
        return None
    u = response.usage
    return Usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens,
                 u.time_to_first_token_s, u.time_per_output_token_s)


def _logprobs(response) -> tuple:
    return tuple(Logprob(l.token_id, l.logprob, tuple((t.token_id, t.logprob) for t in l.top))
                 for l in response.logprobs)


def generate_event(response: pb.GenerateResponse) -> GenerateEvent:
    return GenerateEvent(response.text, tuple(response.token_ids), _logprobs(response),
                         _FINISH_REASONS.get(response.finish_reason), _usage(response))


def chat_event(response: pb.ChatResponse) -> ChatEvent:
    calls = tuple(ToolCall(c.name, c.arguments, c.type or "function") for c in response.tool_calls)
    return ChatEvent(response.content, response.reasoning_content, calls,
                     tuple(response.token_ids), _FINISH_REASONS.get(response.finish_reason),
                     _usage(response))
