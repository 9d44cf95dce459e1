"""Save a wandb workspace view laid out for the metrics gpt_batch_api logs.

Run ``python -m gpt_batch_api.wandb_configure_view --dst_entity ENTITY`` once per project, then open the
project in wandb, switch to the saved view "GPT Batch API" and copy it to your workspace.

By default the view is built here from ``VIEW_SECTIONS`` (needs the optional ``wandb-workspaces`` package:
``pip install 'gpt_batch_api[view]'``). With ``--src_entity/--src_project/--src_nw`` an existing saved view
is copied instead. Building the view needs no network; loading and saving need a wandb login, and fail
within seconds with a clear message when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, GPTBatchError

VIEW_NAME = "GPT Batch API"
DEFAULT_PROJECT = "gpt_batch_api"
API_TIMEOUT = 10  # seconds for each wandb API call; without network we should fail fast
PROBE_TIMEOUT = 5  # seconds to connect to the wandb server at all

# (section, [(panel title, [metric names] or "regex:<pattern>")]) -- the names logged by WandbMonitor.
VIEW_SECTIONS: list[tuple[str, list[tuple[str, list[str] | str]]]] = [
    (
        "Task",
        [
            (
                "Samples",
                [
                    "Task/samples_committed",
                    "Task/samples_responded",
                    "Task/samples_succeeded",
                    "Task/samples_failed",
                ],
            ),
            ("Requests processed and retried", ["Task/processed_requests", "Task/retried_requests"]),
            ("Batches pushed", ["Task/pushed_batches", "Task/direct_batches"]),
        ],
    ),
    (
        "Cost",
        [
            ("True cost", ["Cost/true", "Cost/true_batch", "Cost/true_direct"]),
            ("Predicted vs true cost", ["Cost/predicted_pushed", "Cost/true"]),
            ("Pushed cost", ["Session/pushed_cost", "Task/pushed_cost"]),
            ("True / predicted cost per step", ["Result/true_to_predicted_cost"]),
        ],
    ),
    (
        "Queue",
        [
            ("Queued requests", ["Queue/requests"]),
            ("Queued ktokens", ["Queue/ktokens"]),
            ("Queued cost", ["Queue/cost"]),
        ],
    ),
    (
        "Batches",
        [
            ("Batches by state", ["Batch/local", "Batch/remote", "Batch/finished", "Batch/direct"]),
            ("Remote progress", ["Batch/remote_requests", "Batch/remote_completed", "Batch/remote_failed"]),
            ("Remote ktokens", ["Batch/remote_ktokens"]),
            ("Remote cost", ["Batch/remote_cost"]),
        ],
    ),
    (
        "Pushed",
        [
            ("Pushed requests", ["Session/pushed_requests", "Task/pushed_requests"]),
            ("Pushed ktokens", ["Session/pushed_ktokens", "Task/pushed_ktokens"]),
        ],
    ),
    (
        "Usage",
        [
            (
                "Tokens",
                ["Usage/prompt_tokens", "Usage/completion_tokens", "Usage/cached_tokens", "Usage/reasoning_tokens"],
            ),
            ("Completion ratio", ["Usage/completion_ratio", "Result/completion_ratio"]),
        ],
    ),
    (
        "Batch results",
        [
            (
                "Results per step",
                [
                    "Result/requests",
                    "Result/success",
                    "Result/warnings",
                    "Result/retryable",
                    "Result/fatal",
                    "Result/expired",
                    "Result/missing",
                ],
            ),
            ("Retries per step", ["Result/retries"]),
            ("Pass ratio", ["Result/pass_ratio"]),
            ("Errors by type", "regex:Errors/.*"),
            ("Warnings by type", "regex:Warnings/.*"),
        ],
    ),
]


def view_metrics() -> set[str]:
    """Every metric name (not regex) shown by the built-in view."""
    return {m for _, panels in VIEW_SECTIONS for _, metrics in panels if isinstance(metrics, list) for m in metrics}


def _import_workspaces() -> tuple[Any, Any]:
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as exc:
        raise GPTBatchError(
            f"The wandb-workspaces package is needed to build the view ({exc}). Install it with "
            "`pip install 'gpt_batch_api[view]'` (or `pip install wandb-workspaces`)."
        ) from exc
    return ws, wr


def build_workspace(entity: str, project: str, name: str = VIEW_NAME) -> Any:
    """The built-in view as a ``wandb_workspaces.workspaces.Workspace`` (offline: nothing is sent)."""
    ws, wr = _import_workspaces()
    sections = []
    for index, (section_name, panels) in enumerate(VIEW_SECTIONS):
        plots = []
        for title, metrics in panels:
            if isinstance(metrics, str):
                plots.append(wr.LinePlot(title=title, metric_regex=metrics.removeprefix("regex:")))
            else:
                plots.append(wr.LinePlot(title=title, y=list(metrics)))
        sections.append(ws.Section(name=section_name, panels=plots, is_open=index < 2))
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis="_step"),
    )


def describe(workspace: Any) -> str:
    """A readable listing of a workspace's sections and panels."""
    lines = [f"View '{workspace.name}' for {workspace.entity}/{workspace.project}"]
    for section in workspace.sections:
        lines.append(f"  Section '{section.name}'")
        for panel in section.panels:
            ys = getattr(panel, "y", None) or []
            regex = getattr(panel, "metric_regex", None)
            shown = ", ".join(str(y) for y in ys) if ys else (f"regex {regex}" if regex else type(panel).__name__)
            lines.append(f"    {getattr(panel, 'title', None) or type(panel).__name__}: {shown}")
    return "\n".join(lines)


def _check_online() -> Any:
    """A ``wandb.Api`` with a verified login, or a clear ``GPTBatchError`` within seconds."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "disabled", "dryrun"):
        raise GPTBatchError(
            f"WANDB_MODE={mode} but loading or saving a view needs the wandb server. Unset WANDB_MODE "
            "(or set it to online) and run this again, or leave out --dst_entity to only print the view."
        )
    import wandb

    base = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
    fix = (
        "Check the network connection, log in with `wandb login` (or set WANDB_API_KEY), and check "
        "WANDB_BASE_URL if you use your own server."
    )
    _probe(base, fix)
    try:
        return wandb.Api(timeout=API_TIMEOUT)
    except Exception as exc:
        raise GPTBatchError(f"Cannot use wandb at {base}: {str(exc).rstrip('.')}. {fix}") from exc


def _probe(base_url: str, fix: str) -> None:
    """Fail within PROBE_TIMEOUT seconds when the wandb server cannot even be connected to."""
    url = urlsplit(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT):
            pass
    except OSError as exc:
        raise GPTBatchError(f"Cannot connect to the wandb server {base_url}: {exc}. {fix}") from exc


def _load(api: Any, entity: str, project: str, nw: str) -> Any:
    ws, _ = _import_workspaces()
    try:
        try:
            from wandb_workspaces._graphql import get_app_url

            base = get_app_url(api)
        except ImportError:  # older wandb-workspaces
            base = api.client.app_url
        return ws.Workspace.from_url(f"{base.rstrip('/')}/{entity}/{project}?nw={nw}")
    except Exception as exc:
        raise GPTBatchError(
            f"Cannot load the wandb view nw={nw} of {entity}/{project}: {exc}. Check the entity, project and "
            "view id (the string after '?nw=' in the workspace URL while the view is open)."
        ) from exc


def _save(api: Any, source: Any, entity: str, project: str, nw: str | None) -> Any:
    """Save ``source``'s layout to ``entity/project``: over the view ``nw`` if given, else as a new view."""
    ws, _ = _import_workspaces()
    if nw:
        target = _load(api, entity, project, nw)  # keeps that view's identity, so saving overwrites it
        target.name, target.sections, target.settings = source.name, source.sections, source.settings
    else:
        # A fresh object: a copied view must not carry the source's identity or its run filters.
        target = ws.Workspace(
            entity=entity, project=project, name=source.name, sections=source.sections, settings=source.settings
        )
    try:
        return target.save()
    except Exception as exc:
        raise GPTBatchError(
            f"Cannot save the view to {entity}/{project}: {exc}. The project must exist (log one run to it "
            "first) and you need write access to it."
        ) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gpt_batch_api.wandb_configure_view",
        description="Save a wandb workspace view that lays out the metrics logged by gpt_batch_api.",
        add_help=False,
    )
    parser.add_argument("--help", "-h", action="help", help="Show this help and exit")
    parser.add_argument("--src_entity", help="Entity of a saved view to copy instead of the built-in view")
    parser.add_argument(
        "--src_project", default=DEFAULT_PROJECT, help="Project of the saved view to copy [default: %(default)s]"
    )
    parser.add_argument(
        "--src_nw",
        help="Saved view to copy (the string after '?nw=' in the workspace URL); without it the built-in view is used",
    )
    parser.add_argument("--src_show", action="store_true", help="Print the source view's sections and panels")
    parser.add_argument("--dst_entity", help="Entity to save the view to (nothing is saved without it)")
    parser.add_argument(
        "--dst_project", default=DEFAULT_PROJECT, help="Project to save the view to [default: %(default)s]"
    )
    parser.add_argument("--dst_nw", help="Existing view (string after '?nw=') to overwrite instead of adding a new one")
    parser.add_argument("--dst_show", action="store_true", help="Print the destination view's sections and panels")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.src_nw and not args.src_entity:
        raise ConfigError("--src_nw needs --src_entity (and --src_project if not the default).")
    api = None
    if args.src_nw:
        api = _check_online()
        source = _load(api, args.src_entity, args.src_project, args.src_nw)
    else:
        source = build_workspace(args.dst_entity or "ENTITY", args.dst_project)
    if args.src_show:
        print("Source:\n" + describe(source))
    if not args.dst_entity:
        if not args.src_show:
            print(describe(source))
        print("Nothing saved: pass --dst_entity ENTITY to save this view to wandb.")
        return 0
    api = api or _check_online()
    saved = _save(api, source, args.dst_entity, args.dst_project, args.dst_nw)
    if args.dst_show:
        print("Destination:\n" + describe(saved))
    url = getattr(saved, "url", "")
    print(
        f"Saved the view '{saved.name}' to {args.dst_entity}/{args.dst_project}"
        + (f": {url}" if url else "")
        + ". Open it in wandb and click 'Copy to my workspace'."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except GPTBatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
