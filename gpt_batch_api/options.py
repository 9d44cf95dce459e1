"""Command-line flags for TaskManager and GPTRequester, named as in the reference library.

``add_task_arguments(parser)`` adds every flag, grouped; ``task_kwargs(args)`` turns the parsed namespace
into keyword arguments for a TaskManager subclass. Defaults come from ``RequesterOptions`` so there is
one source of truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from .requester_options import RequesterOptions

__all__ = ["add_task_arguments", "task_kwargs"]

_REQUESTER_HELP: dict[str, str | None] = {
    "dryrun": "Plan without side effects: no API calls, no file changes; prints what would happen",
    "only_process": "Only wait for and process batches already in flight; generate and push nothing new",
    "process_failed_batches": "Process (and clear) failed batches: <0 all, 0 none, N at most N this session",
    "retry_fatal_requests": "Retry requests that failed fatally in processed failed batches, instead of failing them",
    "wipe_requests": "CAUTION: forget all queued requests and unprocessed batches (remote ones are cancelled)",
    "wipe_task": "CAUTION: forget all progress and results of the task and start again (implies --wipe_requests)",
    "openai_api_key": "OpenAI API key (default: $OPENAI_API_KEY); never written to any file or log",
    "openai_organization": "OpenAI organization ID",
    "openai_project": "OpenAI project ID",
    "provider": "Batch provider: openai (and OpenAI-compatible servers) or anthropic (Claude; needs "
    'pip install "gpt_batch_api[anthropic]")',
    "anthropic_api_key": "Anthropic API key (default: $ANTHROPIC_API_KEY); never written to any file or log",
    "client_base_url": "Base URL of the API server (an OpenAI-compatible one such as a local vLLM, a gateway, or our "
    "simulator; with --provider anthropic, of the Anthropic API)",
    "autocreate_working_dir": None,  # exposed as --no_autocreate_working_dir
    "lock_timeout": "Seconds to wait for another process holding the task lock (default: wait forever)",
    "lock_poll_interval": "Seconds between attempts to take the task lock",
    "lock_status_interval": "Seconds between 'still waiting for the lock' messages",
    "token_estimator_warn": "When the token estimator warns about guesses: once, always or never",
    "exact_input_tokens": "Count each new request's input tokens exactly with Anthropic's free count_tokens "
    "endpoint before queueing it, instead of estimating them offline (one call per request, within that "
    "endpoint's own rate limit; --provider anthropic only)",
    "remote_update_interval": "Longest interval in seconds between polls of remote batches",
    "wait_save_interval": "Accepted for compatibility; every change is saved at once",
    "direct_verbose": "Log direct API requests/responses: never, error, warn or always",
    "show_warnings": "Warnings shown per batch per type before summarising (<0: all)",
    "show_errors": "Errors shown per batch per type before summarising (<0: all)",
    "max_retries": "Retries per request (expired/cancelled batch lines are retried for free)",
    "cost_input_direct_mtoken": "Price per million direct input tokens",
    "cost_input_cached_mtoken": "Price per million cached input tokens",
    "cost_input_batch_mtoken": "Price per million Batch API input tokens",
    "cost_output_direct_mtoken": "Price per million direct output tokens",
    "cost_output_batch_mtoken": "Price per million Batch API output tokens",
    "force_direct": "Send every batch through the direct API (for servers without the Batch API)",
    "warn_predicted_input_factor": "Warn when a batch's true input tokens differ from the prediction by this factor",
    "warn_assumed_completion_factor": "Warn when true output tokens differ from the assumed ones by this factor",
    "min_pass_ratio": "A batch passes if at least this fraction of its requests succeeded (or expired)",
    "max_pass_failures": "Stop with an error after this many consecutive batches that did not pass",
    "direct_concurrency": "Concurrent requests when using the direct API",
    "assumed_completion_ratio": None,  # set by the task (e.g. --completion_ratio in the demo)
    "endpoint": None,  # set by the task
}
_LIMIT_WORDS = {"requests": "requests", "ktokens": "input ktokens", "cost": "predicted cost", "mb": "MB (not MiB)"}
_LIMIT_SCOPES = {
    "task": "for the whole task",
    "session": "in one run",
    "direct": "in one direct-API batch",
    "batch": "in one batch",
    "remote": "across all batches in flight",
}


class HelpFormatter(argparse.HelpFormatter):
    """Shows a flag's default once: not for on/off flags, not when None, not when the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS, False, True) or action.nargs == 0:
            return text
        return f"{text} (default: %(default)s)"


def _help_for(name: str) -> str | None:
    if name in _REQUESTER_HELP:
        return _REQUESTER_HELP[name]
    parts = name.split("_")
    if parts[0] == "max" and len(parts) == 3 and parts[1] in _LIMIT_SCOPES and parts[2] in _LIMIT_WORDS:
        return f"Most {_LIMIT_WORDS[parts[2]]} {_LIMIT_SCOPES[parts[1]]}"
    return {
        "min_batch_requests": "Batches smaller than this use the direct API instead",
        "max_unpushed_batches": "Most local batches prepared ahead of pushing",
        "max_remote_batches": "Most batches in flight at once (0: prepare local batches only)",
        "max_mb_safety": "Safety factor applied to MB limits",
        "max_token_safety": "Safety factor applied to token limits",
    }.get(name, name.replace("_", " "))


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the task manager, wandb and requester flags to ``parser``."""
    task = parser.add_argument_group("Task manager")
    task.add_argument("--no_run", dest="run", action="store_false", help="Print the task status and exit")
    task.add_argument(
        "--postprocess_output",
        default="if_written",
        choices=("never", "if_written", "always"),
        help="Post-process the output when a run completes the task [default: %(default)s]",
    )
    task.add_argument("--wipe_failed", action="store_true", help="CAUTION: forget failed samples so they are redone")
    task.add_argument("--reinit_meta", action="store_true", help="CAUTION: reset the task meta from the flags")
    task.add_argument(
        "--no_progress",
        dest="progress",
        action="store_const",
        const=False,
        default=None,
        help="No progress bars (they are shown only on a terminal anyway)",
    )

    monitor = parser.add_argument_group("wandb")
    monitor.add_argument(
        "--wandb",
        dest="wandb",
        action="store_const",
        const=True,
        default=None,
        help="Log to wandb (the default, except with the demo's --simulate unless WANDB_MODE is set; "
        "WANDB_MODE=offline/disabled and the other WANDB_* variables are honoured). wandb itself is quiet unless "
        "WANDB_SILENT/WANDB_QUIET say otherwise",
    )
    monitor.add_argument("--no_wandb", dest="wandb", action="store_const", const=False, help="Do not use wandb")
    monitor.add_argument(
        "--wandb_dir", metavar="DIR", help="Folder for wandb's files (default: $WANDB_DIR, else the task directory)"
    )
    monitor.add_argument("--wandb_entity", metavar="ENTITY", help="wandb entity")
    monitor.add_argument("--wandb_project", metavar="PROJ", default="gpt_batch_api", help="wandb project")
    monitor.add_argument("--wandb_run_id", metavar="ID", help="wandb run ID to create or resume")
    monitor.add_argument("--wandb_name", metavar="NAME", help="wandb run name")
    monitor.add_argument("--wandb_group", metavar="GROUP", help="wandb group (default: the task class name)")

    requester = parser.add_argument_group("GPT requester")
    for field in dataclasses.fields(RequesterOptions):
        help_text = _help_for(field.name)
        if field.name == "autocreate_working_dir":
            requester.add_argument(
                "--no_autocreate_working_dir",
                dest="autocreate_working_dir",
                action="store_false",
                help="Fail if the task directory does not exist",
            )
            continue
        if help_text is None:
            continue
        flag = f"--{field.name}"
        if field.type in ("bool", bool):
            requester.add_argument(flag, action="store_true", default=None, help=help_text)
            continue
        kind: type = float if "float" in str(field.type) else int if "int" in str(field.type) else str
        default = field.default
        suffix = f" [default: {default}]" if default not in (None, dataclasses.MISSING) else ""
        requester.add_argument(
            flag, type=kind, default=None, metavar=field.name.split("_")[-1].upper(), help=help_text + suffix
        )


_TASK_KEYS = (
    "run",
    "postprocess_output",
    "wipe_failed",
    "reinit_meta",
    "progress",
    "wandb",
    "wandb_dir",
    "wandb_entity",
    "wandb_project",
    "wandb_run_id",
    "wandb_name",
    "wandb_group",
)


def task_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for a TaskManager from flags added by ``add_task_arguments`` (unset flags omitted)."""
    kwargs: dict[str, Any] = {key: getattr(args, key) for key in _TASK_KEYS if hasattr(args, key)}
    for field in dataclasses.fields(RequesterOptions):
        value = getattr(args, field.name, None)
        if value is not None and not (field.name == "autocreate_working_dir" and value is True):
            kwargs[field.name] = value
    return kwargs


# ---------------------------------------------------------------------- hydra/omegaconf defaults file

CONFIG_PATH = os.path.join(os.path.dirname(__file__), "config", "gpt_batch_api.yaml")
_TASK_DEFAULTS: dict[str, Any] = {
    "run": True,
    "postprocess_output": "if_written",
    "wipe_failed": False,
    "reinit_meta": False,
    "progress": None,
    "wandb": None,
    "wandb_dir": None,
    "wandb_entity": None,
    "wandb_project": "gpt_batch_api",
    "wandb_run_id": None,
    "wandb_name": None,
    "wandb_group": None,
}


def config_defaults() -> dict[str, Any]:
    """Every TaskManager/GPTRequester keyword with its default (the content of config/gpt_batch_api.yaml)."""
    requester = {f.name: f.default for f in dataclasses.fields(RequesterOptions)}
    for secret in ("openai_api_key", "anthropic_api_key"):  # never in config files: use the environment
        requester.pop(secret)
    return {"task_manager": dict(_TASK_DEFAULTS), "gpt_requester": requester}


def render_config_yaml() -> str:
    """The YAML defaults file, written without a YAML library (the values are flat scalars)."""

    def scalar(value: Any) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return json.dumps(value)
        return repr(value)

    lines = [
        "# Defaults of every gpt_batch_api option (hydra/omegaconf-compatible), generated by",
        "# `python -m gpt_batch_api.options --write_config`. Pass the values as keyword arguments:",
        "#   TaskManagerSubclass(task_dir, **cfg.task_manager, **cfg.gpt_requester)",
        "# The API key is deliberately absent: set OPENAI_API_KEY in the environment.",
    ]
    for section, values in config_defaults().items():
        lines.append(f"{section}:")
        lines += [f"  {name}: {scalar(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write_config"]:
        with open(CONFIG_PATH, "w", encoding="utf-8") as file:
            file.write(render_config_yaml())
        print(f"wrote {CONFIG_PATH}")
    else:
        sys.stdout.write(render_config_yaml())
