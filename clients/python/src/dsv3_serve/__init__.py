"""Python client of dsv3-serve (dsv3.v1.Inference over gRPC): Client (blocking) and AsyncClient
(asyncio). The generated stubs are the package dsv3.v1 beside this one."""
from ._aio import AsyncClient
from ._client import Client
from ._requests import ChatEvent, GenerateEvent, Logprob, ToolCall, Usage

__all__ = ["AsyncClient", "ChatEvent", "Client", "GenerateEvent", "Logprob", "ToolCall", "Usage"]
