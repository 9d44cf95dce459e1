"""Run a demo task: ``python -m gpt_batch_api.task_manager_demo --task char_codes [--simulate] [flags]``.

``--simulate`` starts the built-in OpenAI API simulator on 127.0.0.1 and runs the task against it: no API
key, no cost, nothing leaves the machine. Without it the task talks to OpenAI (or ``--client_base_url``)
and needs ``OPENAI_API_KEY``. Every TaskManager and GPTRequester option is a flag (``--help``); the run
can be stopped with Ctrl+C and continued by running the same command again.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import math
import os
import shlex
import signal
import sys
import threading
from typing import Any

from .errors import ConfigError, GPTBatchError, StopRequested, TaskFileError
from .logs import configure_logging
from .options import HelpFormatter, add_task_arguments, task_kwargs

DEMO_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/messages")  # the demos build a payload for each
ANTHROPIC_MODEL = "claude-haiku-4-5"
# Claude Haiku 4.5's prices (USD per million tokens), used with --provider anthropic unless --cost_* flags say
# otherwise; the Message Batches API costs half the direct price.
ANTHROPIC_COSTS = {
    "cost_input_direct_mtoken": 1.0,
    "cost_input_cached_mtoken": 0.1,
    "cost_input_batch_mtoken": 0.5,
    "cost_output_direct_mtoken": 5.0,
    "cost_output_batch_mtoken": 2.5,
}

log = logging.getLogger("gpt_batch_api.demo")


def finite_float(text: str) -> float:
    """A float flag that refuses nan and inf: task meta is fixed at the first run, so a NaN would stay."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gpt_batch_api.task_manager_demo",
        description="Run one of the demo tasks of gpt_batch_api (see the README).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=("char_codes", "utterance_emotion"), help="Demo task")
    parser.add_argument("--task_prefix", metavar="PREFIX", help="Prefix of the task's files (default: the task)")
    parser.add_argument(
        "--task_dir",
        metavar="DIR",
        default=os.path.join(os.getcwd(), "gpt_batch_api_tasks"),
        help="Folder for the task's lock, state, queue, batch and output files (created)",
    )
    parser.add_argument(
        "--chat_endpoint",
        choices=DEMO_ENDPOINTS,
        help="Endpoint the demo's requests go to (default: /v1/chat/completions; /v1/messages with --provider "
        "anthropic)",
    )
    parser.add_argument(
        "--simulate", action="store_true", help="Run against the built-in local simulator (no API key, no cost)"
    )
    parser.add_argument(
        "--max_samples",
        metavar="NUM",
        type=int,
        help="Only the first NUM samples, for a quick try; a later run without it adds the rest (default: all: "
        "1,140 characters, 45 utterances)",
    )
    meta = parser.add_argument_group("Task metadata (fixed at the first run; change with --reinit_meta)")
    meta.add_argument("--model", help=f"Model (default: gpt-4o-mini; {ANTHROPIC_MODEL} with --provider anthropic)")
    meta.add_argument(
        "--max_completion_tokens",
        metavar="NUM",
        type=int,
        help="Output token limit per request (default: char_codes 96, utterance_emotion 128)",
    )
    meta.add_argument(
        "--completion_ratio",
        metavar="RATIO",
        type=finite_float,
        help="Expected share of max_completion_tokens used, for cost and limit predictions (default: 0.5)",
    )
    meta.add_argument(
        "--temperature",
        metavar="TEMP",
        type=finite_float,
        help="Sampling temperature (default: char_codes 0.2, utterance_emotion 0.9)",
    )
    meta.add_argument("--top_p", metavar="MASS", type=finite_float, help="Nucleus sampling mass (default: 1.0)")
    meta.add_argument("--opinions_min", metavar="NUM", type=int, help="Fewest opinions per utterance (default: 3)")
    meta.add_argument("--opinions_max", metavar="NUM", type=int, help="Most opinions per utterance (default: 5)")
    meta.add_argument(
        "--confidence",
        metavar="RATIO",
        type=finite_float,
        help="Majority share needed for a clear opinion (default: 0.78)",
    )
    add_task_arguments(parser)
    return parser


def make_task(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Any:
    from .demo_tasks import TASKS

    kwargs = task_kwargs(args)
    kwargs["endpoint"] = args.chat_endpoint
    if args.provider == "anthropic":
        kwargs.setdefault("model", ANTHROPIC_MODEL)
        for name, price in ANTHROPIC_COSTS.items():
            kwargs.setdefault(name, price)
    kwargs["name_prefix"] = args.task_prefix or args.task
    if args.max_samples is not None:
        if args.max_samples < 1:
            raise ConfigError(f"--max_samples must be >= 1 (got {args.max_samples}).")
        kwargs["max_samples"] = args.max_samples
    for name in ("model", "max_completion_tokens", "completion_ratio", "temperature", "top_p"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    if args.task == "utterance_emotion":
        kwargs.update(opinions_min=args.opinions_min, opinions_max=args.opinions_max, confidence=args.confidence)
    kwargs.update(extra or {})
    return TASKS[args.task](args.task_dir, **kwargs)


def main(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    """Run the demo; ``exiting``: the process ends after this (a Ctrl+C after the run stays ignored)."""
    args = build_parser().parse_args(argv)
    configure_logging()
    simulator = None
    extra: dict[str, Any] = {}
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        if args.simulate:
            from .demo_tasks.responder import demo_responder
            from .simulator import Simulator, SimulatorConfig

            config = SimulatorConfig(validating_s=0.5, in_progress_s=2.0, finalizing_s=0.5, latency_ms=20)
            # The simulated remote keeps its files and batches next to the task's files, so a rerun after Ctrl+C
            # finds the batches it pushed, as it would on OpenAI.
            state_path = os.path.join(args.task_dir, f"{args.task_prefix or args.task}_simulator.json")
            simulator = Simulator(config, responder=demo_responder, state_path=state_path)
            simulator.start()
            log.info("Simulator running at %s (no API key, no cost)", simulator.base_url)
            extra = {"client_base_url": simulator.base_url, "openai_api_key": "sk-simulated"}
            if args.wandb is None and not os.environ.get("WANDB_MODE"):
                # A local demo should not need a wandb account: off, unless --wandb or WANDB_MODE asks for it.
                extra["wandb"] = False
                log.info("wandb is off with --simulate: pass --wandb or set WANDB_MODE=offline to log the run")
        task = make_task(args, extra)
        try:
            done = task.run()
        finally:
            # The run is over and committed (or stopped): a Ctrl+C from here on, e.g. while the simulator
            # stops, must not turn the end into a traceback. Runs before the handlers below.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if args.dryrun:
            log.info("Dry run finished: nothing was sent and no file was written")
            return 0
        if args.run:
            state = "complete" if done else "paused (see above why); rerun the same command to continue"
            log.info("Task %s. Files are in %s", state, args.task_dir)
        return 0  # complete or paused by a limit: both are normal ends of a run
    except StopRequested:
        return 130
    except KeyboardInterrupt:  # a second Ctrl+C: stopped at once; the last commit is intact
        log.warning("Stopped at once. Everything committed so far is saved: rerun the same command to continue.")
        return 130
    except GPTBatchError as exc:
        log.error("%s", exc)
        if isinstance(exc, TaskFileError):
            log.info(
                "To see which files are intact and what each fix rebuilds (nothing is changed): "
                "python -m gpt_batch_api.verify --task_dir %s --task_prefix %s",
                shlex.quote(args.task_dir),
                shlex.quote(args.task_prefix or args.task),
            )
        return 1
    finally:
        if simulator is not None:
            simulator.stop()
        if not exiting:
            signal.signal(signal.SIGINT, previous_sigint)


def exit_now(code: int) -> None:
    """End the process once the run is over without tearing the interpreter down, which frees every object
    and module one by one (the SDK's thousands of pydantic types: 0.3 s, more on a loaded machine). Every task
    file is committed and closed by then; the exit handlers (logging, wandb) still run and the output is
    flushed. If a thread other than daemons still works, or a tracer or profiler (coverage, cProfile, a
    debugger) watches the process and may write its results after the script, the interpreter ends as usual."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if any(t.is_alive() for t in others) or sys.gettrace() is not None or sys.getprofile() is not None:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main(exiting=True))
