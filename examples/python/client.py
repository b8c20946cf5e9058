#!/usr/bin/env python3
"""Calls a dsv3-server from Python (Debian's python3-grpcio and python3-protobuf).

Run it through run.sh, which generates the stubs from proto/ first:

    examples/python/run.sh --server 127.0.0.1:50051 --prompt "Hello"
    examples/python/run.sh --server 127.0.0.1:50051 --prompt "Why is the sky blue?" --chat
    examples/python/run.sh --server 127.0.0.1:50051 --prompt-ids 0,17,99

Text streams to stdout as it arrives; errors print "error: <CODE>: <message>" and exit 1.
"""
import argparse
import sys

import grpc

from dsv3.v1 import inference_pb2 as pb
from dsv3.v1 import inference_pb2_grpc as pb_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text (the user turn with --chat)")
    prompt.add_argument("--prompt-ids", help="comma-separated token ids")
    parser.add_argument("--chat", action="store_true", help="send --prompt as a chat message")
    parser.add_argument("--template", choices=["v3", "r1"], default="v3")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--api-key")
    parser.add_argument("--timeout-s", type=float)
    args = parser.parse_args()

    sampling = pb.SamplingParameters(max_tokens=args.max_new_tokens)
    if args.temperature is not None:
        sampling.temperature = args.temperature
    if args.seed is not None:
        sampling.seed = args.seed
    metadata = [("authorization", f"Bearer {args.api_key}")] if args.api_key else None

    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.InferenceStub(channel)
        try:
            if args.chat:
                if args.prompt is None:
                    parser.error("--chat needs --prompt")
                template = pb.CHAT_TEMPLATE_R1 if args.template == "r1" else pb.CHAT_TEMPLATE_V3
                request = pb.ChatRequest(
                    messages=[pb.ChatMessage(role="user", content=args.prompt.encode())],
                    template=template, sampling=sampling)
                section = None
                for delta in stub.Chat(request, metadata=metadata, timeout=args.timeout_s):
                    for name, text in (("reasoning", delta.reasoning_content),
                                       ("answer", delta.content)):
                        if text:
                            if section != name:
                                print(f"\n[{name}]" if section else f"[{name}]")
                                section = name
                            print(text, end="", flush=True)
                    for call in delta.tool_calls:
                        print(f"\n[tool call] {call.name}({call.arguments})")
                print()
            elif args.prompt_ids is not None:
                ids = [int(x) for x in args.prompt_ids.split(",") if x.strip()]
                request = pb.GenerateRequest(token_ids=pb.TokenIds(ids=ids), sampling=sampling,
                                             return_text=False)
                out = []
                for delta in stub.Generate(request, metadata=metadata, timeout=args.timeout_s):
                    out.extend(delta.token_ids)
                print(" ".join(str(i) for i in out))
            else:
                request = pb.GenerateRequest(text=args.prompt.encode(), sampling=sampling)
                for delta in stub.Generate(request, metadata=metadata, timeout=args.timeout_s):
                    print(delta.text, end="", flush=True)
                    if delta.finish_reason:
                        usage = delta.usage
                        print(f"\n[{pb.FinishReason.Name(delta.finish_reason)}: "
                              f"{usage.prompt_tokens} prompt + {usage.completion_tokens} "
                              f"completion tokens]", file=sys.stderr)
                print()
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
