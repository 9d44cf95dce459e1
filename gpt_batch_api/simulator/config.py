"""Configuration of the simulator: timing, limits and fault injection.

Every field may be changed while the simulator runs (tests do ``sim.config.fail_next_batches = 1``); the
server reads the fields on each request, so a change applies to the next request or batch.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

__all__ = ["SERVER_KINDS", "SimulatorConfig", "add_config_arguments", "config_from_args"]

# What the simulator poses as. "openai": the full API. "vllm" and "ollama": a local model server with the
# direct endpoints and /v1/models only (no Files/Batches routes, no x-ratelimit-* headers), each with its
# own 404 page and error shape, so the local-server path is tested against what those servers answer.
SERVER_KINDS = ("openai", "vllm", "ollama")


@dataclasses.dataclass
class SimulatorConfig:
    """Behaviour of the simulated OpenAI server. All faults are off by default and no key is required."""

    server_kind: str = "openai"  # one of SERVER_KINDS
    # Batch lifecycle (seconds spent in each status; computed from timestamps when a batch is looked at)
    validating_s: float = 1.0
    in_progress_s: float = 5.0
    finalizing_s: float = 1.0
    # Direct endpoints
    latency_ms: float = 0.0  # added to every direct call (chat, responses, embeddings)
    latency_jitter_ms: float = 0.0  # plus uniform(0, this) per call
    straggler_rate: float = 0.0  # fraction of direct calls that take straggler_ms longer (a heavy tail)
    straggler_ms: float = 0.0
    load_latency_ms: float = 0.0  # plus this per other direct call being served at once (a GPU under load)
    max_concurrent_calls: int = 0  # direct calls beyond this many at once answer 503 (0 = unlimited)
    ratelimit_headers: bool = True  # False: no x-ratelimit-* headers, like vLLM, llama.cpp or Ollama
    rpm: int = 0  # requests per minute (0 = unlimited)
    tpm: int = 0  # tokens per minute: prompt tokens + requested max output tokens (0 = unlimited)
    # Batch API
    enqueued_token_limit: int = 0  # prompt tokens of batches in flight, per model (0 = unlimited)
    files_api_enabled: bool = True  # False: /files routes answer 404, like a local vLLM or ollama server
    batches_api_enabled: bool = True  # False: /batches routes answer 404
    error_line_rate: float = 0.0  # fraction of batch lines answered as 500 server_error lines in the error file
    fail_next_batches: int = 0  # the next N created batches fail validation
    expire_next_batches: int = 0  # the next N created batches expire with about half of their lines done
    missing_line_rate: float = 0.0  # fraction of batch lines absent from both the output and the error file
    malformed_line_rate: float = 0.0  # fraction of batch output lines that are not valid JSON
    # Faults of direct calls (and of /files and /batches too, only if batch_api_faults is set)
    http_500_rate: float = 0.0
    http_429_rate: float = 0.0
    drop_connection_rate: float = 0.0  # close the socket without answering
    http_529_rate: float = 0.0  # Anthropic /v1/messages calls answered 529 overloaded_error
    lose_next_create_responses: int = 0  # the next N batch creates (either API) succeed, then the answer is lost
    batch_api_faults: bool = False
    malformed_json_rate: float = 0.0  # direct structured-output answers whose content is not valid JSON
    # Account
    insufficient_quota: bool = False  # every call answers 429 insufficient_quota
    require_api_key: str | None = None  # if set, any other (or no) bearer key answers 401 invalid_api_key
    seed: int = 0  # seed of injected faults and generated answers (same seed, same run)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "seed":  # every assignment of a seed (even the same one) restarts the random sequences
            object.__setattr__(self, "seed_generation", getattr(self, "seed_generation", 0) + 1)

    def __post_init__(self) -> None:
        if self.server_kind not in SERVER_KINDS:
            raise ValueError(
                f"SimulatorConfig.server_kind must be one of {', '.join(SERVER_KINDS)}, got {self.server_kind!r}"
            )
        for name in (
            "validating_s",
            "in_progress_s",
            "finalizing_s",
            "latency_ms",
            "latency_jitter_ms",
            "straggler_ms",
            "load_latency_ms",
            "max_concurrent_calls",
            "rpm",
            "tpm",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"SimulatorConfig.{name} must be >= 0, got {getattr(self, name)}")


# What each field means, with its unit, for ``python -m gpt_batch_api.simulator --help``.
FIELD_HELP = {
    "validating_s": "seconds a new batch stays 'validating'",
    "in_progress_s": "seconds a batch stays 'in_progress' (its completed count grows over this time)",
    "finalizing_s": "seconds a batch stays 'finalizing' (or 'cancelling') before its files are ready",
    "latency_ms": "milliseconds added to every direct call (chat, responses, embeddings)",
    "latency_jitter_ms": "milliseconds of uniform random latency added to each direct call, from 0 to this",
    "straggler_rate": "fraction of direct calls (0 to 1) that take --straggler_ms longer, a heavy tail (exactly "
    "this fraction of each 100 calls, at random places)",
    "straggler_ms": "milliseconds added to a straggler direct call",
    "load_latency_ms": "milliseconds added to a direct call per other direct call being served at once",
    "max_concurrent_calls": "direct calls served at once; beyond them the answer is 503 (0 = unlimited)",
    "ratelimit_headers": "send x-ratelimit-* headers on direct answers (false: like a local server)",
    "rpm": "requests per minute allowed on the direct endpoints, then 429 (0 = unlimited)",
    "tpm": "tokens per minute allowed on the direct endpoints: prompt + requested max output (0 = unlimited)",
    "enqueued_token_limit": "prompt tokens of a model's batches in flight at once; a batch over it fails with "
    "token_limit_exceeded (0 = unlimited)",
    "files_api_enabled": "false: the /v1/files routes answer 404, like a local model server",
    "batches_api_enabled": "false: the /v1/batches routes answer 404",
    "error_line_rate": "fraction (0-1) of batch lines answered as 500 server_error lines in the error file",
    "fail_next_batches": "number of the next created batches that fail validation",
    "expire_next_batches": "number of the next created batches that expire with about half their lines done",
    "missing_line_rate": "fraction (0-1) of batch lines missing from both the output and the error file",
    "malformed_line_rate": "fraction (0-1) of batch output lines that are not valid JSON",
    "http_500_rate": "fraction (0-1) of direct calls answered with HTTP 500",
    "http_429_rate": "fraction (0-1) of direct calls answered with HTTP 429 and retry-after: 1",
    "drop_connection_rate": "fraction (0-1) of direct calls whose connection is closed without an answer",
    "http_529_rate": "fraction (0-1) of Anthropic /v1/messages calls answered with HTTP 529 overloaded_error",
    "lose_next_create_responses": "the next N batch creates (OpenAI or Anthropic) succeed, then the answer is lost",
    "batch_api_faults": "true: the three rates above apply to /v1/files and /v1/batches too",
    "malformed_json_rate": "fraction (0-1) of direct structured-output answers whose content is not valid JSON",
    "insufficient_quota": "true: every call answers 429 insufficient_quota (an account out of credit)",
    "require_api_key": "the only API key accepted (any other answers 401); unset: no key is needed",
    "seed": "seed of injected faults and generated answers (the same seed gives the same run)",
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--field`` flag per SimulatorConfig field (booleans take true/false)."""
    defaults = SimulatorConfig()
    for field in dataclasses.fields(SimulatorConfig):
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            kind: Any = _parse_bool
            metavar = "BOOL"
        elif field.name == "require_api_key":
            kind, metavar = str, "KEY"
        elif field.name == "server_kind":
            parser.add_argument(
                "--server_kind",
                choices=SERVER_KINDS,
                default=default,
                help="pose as the OpenAI API, or as a vLLM or Ollama server (direct endpoints only) (default: openai)",
            )
            continue
        else:
            kind, metavar = type(default), type(default).__name__.upper()
        parser.add_argument(
            f"--{field.name}",
            type=kind,
            default=default,
            metavar=metavar,
            help=f"{FIELD_HELP.get(field.name, field.name.replace('_', ' '))} (default: {default})",
        )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build a SimulatorConfig from flags added by add_config_arguments."""
    return SimulatorConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SimulatorConfig)})


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
