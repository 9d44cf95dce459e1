"""Run the simulator from a shell: ``python -m gpt_batch_api.simulator --port N [--<config field> VALUE ...]``.

Serves until Ctrl+C and prints the base URL. ``--smoke`` instead starts on a free port, runs one tiny batch
and one direct call through the real openai SDK, prints OK and exits 0 (non-zero with the reason otherwise).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

from .config import SimulatorConfig, add_config_arguments, config_from_args
from .server import Simulator
from .tokens import encoding_for


def smoke() -> int:
    """One direct call and one tiny batch through the real openai SDK; 0 if both work."""
    import openai

    config = SimulatorConfig(validating_s=0.05, in_progress_s=0.1, finalizing_s=0.05)
    with Simulator(config) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-smoke", max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello."}]
        )
        if not reply.choices[0].message.content or reply.usage is None:
            print("FAILED: the direct chat answer has no content or no usage", file=sys.stderr)
            return 1
        lines = [
            {"custom_id": f"smoke-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}}
            for i in range(3)
        ]  # fmt: skip
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        upload = client.files.create(file=("smoke.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        deadline = time.monotonic() + 10
        while batch.status not in ("completed", "failed", "expired", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.05)
            batch = client.batches.retrieve(batch.id)
        if batch.status != "completed" or not batch.output_file_id:
            print(f"FAILED: the smoke batch ended as {batch.status!r}", file=sys.stderr)
            return 1
        results = client.files.content(batch.output_file_id).text.splitlines()
        if sorted(json.loads(r)["custom_id"] for r in results) != [f"smoke-{i}" for i in range(3)]:
            print("FAILED: the smoke batch output does not answer every request once", file=sys.stderr)
            return 1
    print("OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpt_batch_api.simulator",
        description="A local OpenAI-compatible server (Files, Batches, chat, responses, embeddings, models).",
    )
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--smoke", action="store_true", help="run a self-check on a free port, print OK, exit")
    parser.add_argument(
        "--demo_answers",
        action="store_true",
        help="answer the demo tasks' prompts correctly (as --simulate does), e.g. to run the demo against this server",
    )
    parser.add_argument(
        "--state_file",
        metavar="PATH",
        help="keep files and batches in this JSON file, so a restarted simulator continues (default: memory only)",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke()
    responder = None
    if args.demo_answers:
        from ..demo_tasks.responder import demo_responder

        responder = demo_responder
    sim = Simulator(config_from_args(args), port=args.port, responder=responder, state_path=args.state_file)
    # A real server has its model loaded before it takes calls: load the tokenizer of today's models now, not
    # during the first calls (each of which would otherwise wait about half a second for it).
    encoding_for("gpt-4o")
    sim.serve_until_interrupted("Simulator serving at {base_url} (Ctrl+C to stop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
