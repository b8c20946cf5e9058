#!/usr/bin/env python3
"""Calls a dsv3-server with the Python client package (clients/python):

    examples/python/run.sh --prompt "The history of the city"
    examples/python/run.sh --prompt "What does history mean?" --chat --template r1
    examples/python/run.sh --prompt-ids 0,17,99

Text streams to stdout as it arrives (with the finish reason and usage on stderr); errors print
"error: <CODE>: <message>" and exit 1.
"""
import argparse
import sys

import grpc

from dsv3_serve import Client


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
    if args.chat and args.prompt is None:
        parser.error("--chat needs --prompt")

    sampling = {"max_tokens": args.max_new_tokens, "temperature": args.temperature,
                "seed": args.seed}
    with Client(args.server, api_key=args.api_key, timeout=args.timeout_s) as client:
        try:
            if args.chat:
                section = None
                messages = [{"role": "user", "content": args.prompt}]
                for event in client.chat_events(messages, template=args.template, **sampling):
                    for name, text in (("reasoning", event.reasoning_content),
                                       ("answer", event.content)):
                        if text:
                            if section != name:
                                print(f"\n[{name}]" if section else f"[{name}]")
                                section = name
                            print(text, end="", flush=True)
                    for call in event.tool_calls:
                        print(f"\n[tool call] {call.name}({call.arguments})")
            elif args.prompt_ids is not None:
                ids = [int(x) for x in args.prompt_ids.split(",") if x.strip()]
                print(" ".join(str(i) for i in client.generate_ids(ids, **sampling)), end="")
            else:
                for event in client.generate_events(args.prompt, **sampling):
                    print(event.text, end="", flush=True)
                    if event.finish_reason:
                        usage = event.usage
                        print(f"\n[{event.finish_reason}: {usage.prompt_tokens} prompt + "
                              f"{usage.completion_tokens} completion tokens]", file=sys.stderr)
            print()
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
