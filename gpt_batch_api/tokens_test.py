"""Check the token estimator against a server's reported usage: ``python -m gpt_batch_api.tokens_test``.

Sends a fixed set of varied payloads (text, names, multi-part content, images, tools, JSON schemas; chat
and responses) and prints, per case, the estimated prompt tokens, the ``usage`` the server reported and
the difference. Run it against the real API (``OPENAI_API_KEY`` set; costs well under a cent) when OpenAI
changes its counting, or with ``--simulate`` against the built-in simulator.
"""

from __future__ import annotations

import argparse
import base64
import struct
import sys
import zlib
from typing import Any, TextIO

from .tokens import TokenEstimator

CHAT, RESPONSES = "/v1/chat/completions", "/v1/responses"


def _png(width: int, height: int) -> str:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))
    chunks = [(b"IHDR", ihdr), (b"IDAT", zlib.compress(raw)), (b"IEND", b"")]
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + body).decode()


def cases(model: str) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(name, endpoint, payload, exact): ``exact`` cases must match the reported usage exactly."""
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "Answer",
            "strict": True,
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "required": ["answer", "confidence"],
                "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
            },
        },
    }
    user = {"role": "user", "content": "What is the capital of France? Answer in one word."}
    return [
        ("text", CHAT, {"model": model, "messages": [user]}, True),
        (
            "system+user",
            CHAT,
            {"model": model, "messages": [{"role": "system", "content": "You are terse."}, user]},
            True,
        ),
        (
            "names",
            CHAT,
            {
                "model": model,
                "messages": [
                    {"role": "system", "name": "example_user", "content": "New synergies drive growth."},
                    user,
                ],
            },
            True,
        ),
        (
            "multi-part",
            CHAT,
            {
                "model": model,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Part one."},
                            {"type": "text", "text": "Part two, longer text here."},
                        ],
                    }
                ],
            },
            True,
        ),
        (
            "unicode",
            CHAT,
            {
                "model": model,
                "messages": [{"role": "user", "content": "Ünïcödé → 東京 🚀 and code: def f(x): return x ** 2"}],
            },
            True,
        ),
        (
            "image-low",
            CHAT,
            {
                "model": model,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Describe."},
                            {"type": "image_url", "image_url": {"url": _png(64, 64), "detail": "low"}},
                        ],
                    }
                ],
            },
            False,
        ),
        (
            "image-high",
            CHAT,
            {
                "model": model,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": _png(600, 900), "detail": "high"}}],
                    }
                ],
            },
            False,
        ),
        ("tools", CHAT, {"model": model, "messages": [user], "tools": [weather]}, False),
        ("json-schema", CHAT, {"model": model, "messages": [user], "response_format": schema}, False),
        ("responses-text", RESPONSES, {"model": model, "input": "What is the capital of France?"}, False),
        (
            "responses-instructions",
            RESPONSES,
            {"model": model, "instructions": "Be terse.", "input": "What is the capital of France?"},
            False,
        ),
    ]


def run(client: Any, model: str, out: TextIO = sys.stdout) -> list[dict[str, Any]]:
    estimator = TokenEstimator(warn="never")
    rows = []
    print(f"{'case':24} {'endpoint':22} {'check':6} {'estimate':>9} {'reported':>9} {'diff':>6}", file=out)
    for name, endpoint, payload, exact in cases(model):
        estimate = estimator.payload_input_tokens(payload, endpoint).total
        body = {**payload, "max_completion_tokens": 5} if endpoint == CHAT else {**payload, "max_output_tokens": 16}
        response = client.post(endpoint.removeprefix("/v1"), body=body, cast_to=object)
        usage = response.get("usage") or {}
        reported = usage.get("prompt_tokens", usage.get("input_tokens"))
        diff = None if reported is None else estimate - reported
        rows.append(
            {
                "case": name,
                "endpoint": endpoint,
                "estimate": estimate,
                "reported": reported,
                "diff": diff,
                "exact": exact,
            }
        )
        check = "exact" if exact else "approx"
        print(f"{name:24} {endpoint:22} {check:6} {estimate:>9} {reported!s:>9} {diff!s:>6}", file=out)
    return rows


def legend(*, simulated: bool) -> str:
    """What the columns mean, printed under the table."""
    lines = [
        "",
        "estimate: prompt tokens predicted offline; reported: the prompt (input) tokens in the server's usage;",
        "diff = estimate - reported. check 'exact': must match to the token (text, names, multi-part);",
        "'approx': tools, JSON schemas, images and the Responses API, whose counting OpenAI does not document",
        "(a few tokens off is expected; a large gap means the estimator needs an update).",
    ]
    if simulated:
        lines += [
            "The simulator counts no image tokens (it is not OpenAI's vision pricing), so the image rows differ",
            "here by design: the estimate is what OpenAI bills (a low-detail image on gpt-4o-mini is 2,833",
            "tokens). Check those rows against the real API.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt_batch_api.tokens_test", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--base_url", help="OpenAI-compatible server (default: $OPENAI_BASE_URL or OpenAI)")
    parser.add_argument("--simulate", action="store_true", help="Use the built-in simulator (no key, no cost)")
    args = parser.parse_args(argv)
    import openai

    simulator = None
    try:
        if args.simulate:
            from .simulator import Simulator, SimulatorConfig

            simulator = Simulator(SimulatorConfig()).start()
            client = openai.OpenAI(base_url=simulator.base_url, api_key="sk-simulated", max_retries=2)
        else:
            client = openai.OpenAI(base_url=args.base_url, max_retries=2)
        rows = run(client, args.model)
    except openai.OpenAIError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if simulator is not None:
            simulator.stop()
    wrong = [r["case"] for r in rows if r["exact"] and r["diff"] != 0]
    print(legend(simulated=args.simulate))
    print(f"exact rows off: {', '.join(wrong) if wrong else 'none (every exact row matches)'}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
