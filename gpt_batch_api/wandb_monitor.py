"""wandb logging of a run, driven by engine events.

The run is created lazily when the task announces itself (``RUN_STARTED``), so its config holds the task
and requester settings and its group defaults to the task class name. Every ``STATUS`` event (one per
committed step) becomes one wandb history row; the statistics of the batches processed during that step
are added to the same row. ``WANDB_MODE`` (online/offline/disabled) and the other ``WANDB_*`` variables
are honoured by wandb itself.

Nothing secret reaches wandb: config keys that name a secret are dropped, strings that look like a key
are redacted, and wandb's system metadata (which records the command line, where a user may have typed
``--openai_api_key``) is switched off. A wandb failure logs one warning and switches the monitor off; it
never raises into the engine.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .events import BATCH_PROCESSED, LIMIT_REACHED, RUN_FINISHED, RUN_STARTED, STATUS

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
# Key names whose values are secrets whatever they look like.
_SECRET_NAME = re.compile(r"api_?key|secret|passw(or)?d|credential|(^|_)auth(orization)?(_|$)", re.IGNORECASE)
# Key names that are secrets when the value is a string (not e.g. max_completion_tokens=100 or token_estimator_warn).
_TOKEN_NAME = re.compile(r"(^|_)(access_|auth_|bearer_|api_|hf_)?token$", re.IGNORECASE)
# Strings shaped like API keys: OpenAI-style (sk-...), bearer headers, and long hex/base64 blobs.
_SECRET_VALUE = re.compile(
    r"\b(?:sk|pk|rk|sess)-[A-Za-z0-9_\-]{12,}|\bBearer\s+\S{12,}|\b[a-f0-9]{40,}\b|\b[A-Za-z0-9_\-]{64,}\b"
)
# Credentials inside URLs: scheme://user:password@host
_URL_CREDENTIALS = re.compile(r"(://)[^/@\s:]+:[^/@\s]+@")
_SECRET_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "WANDB_API_KEY", "AZURE_OPENAI_API_KEY")


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` fit to be logged: secret-named keys dropped, key-like strings redacted."""
    env_secrets = [v for v in (os.environ.get(name) for name in _SECRET_ENV) if v and len(v) >= 8]
    return _clean_mapping(config, env_secrets)


def _clean_mapping(config: Mapping[str, Any], env_secrets: list[str]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in config.items():
        name = str(key)
        if _SECRET_NAME.search(name) or (_TOKEN_NAME.search(name) and isinstance(value, str)):
            continue
        clean[name] = _clean_value(value, env_secrets)
    return clean


def _clean_value(value: Any, env_secrets: list[str]) -> Any:
    if isinstance(value, Mapping):
        return _clean_mapping(value, env_secrets)
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean_value(v, env_secrets) for v in value]
    if isinstance(value, str):
        for secret in env_secrets:
            value = value.replace(secret, REDACTED)
        value = _URL_CREDENTIALS.sub(rf"\1{REDACTED}@", value)
        return _SECRET_VALUE.sub(REDACTED, value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return _clean_value(str(value), env_secrets)


def batch_result_metrics(stats: Mapping[str, Any]) -> dict[str, float]:
    """Flat ``Result/*`` (and ``Errors/*``, ``Warnings/*``) metrics from one batch's result statistics."""
    metrics: dict[str, float] = {"Result/batches": 1}
    for key, value in stats.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or key == "pass_ratio":
            continue
        metrics[f"Result/{key.removeprefix('num_')}"] = value
    for key, section in (("error_subtypes", "Errors"), ("warning_subtypes", "Warnings")):
        for subtype, count in (stats.get(key) or {}).items():
            metrics[f"{section}/{subtype}"] = count
    return metrics


def _merge_result_metrics(total: dict[str, float], metrics: Mapping[str, float]) -> None:
    for key, value in metrics.items():
        total[key] = total.get(key, 0) + value


def _derived_result_metrics(total: Mapping[str, float]) -> dict[str, float]:
    """Ratios over the batches of one step (computed from the sums, so several batches combine correctly)."""
    requests = total.get("Result/requests", 0)
    passed = total.get("Result/success", 0) + total.get("Result/warnings", 0) + total.get("Result/expired", 0)
    derived = {"Result/pass_ratio": passed / requests if requests else 1.0}
    predicted = total.get("Result/predicted_cost", 0)
    if predicted:
        derived["Result/true_to_predicted_cost"] = total.get("Result/true_cost", 0) / predicted
    assumed = total.get("Result/assumed_output_tokens", 0)
    if assumed:
        derived["Result/completion_ratio"] = total.get("Result/completion_tokens", 0) / assumed
    return derived


class WandbMonitor:
    """Event subscriber logging a run to wandb; see the module docstring for what is logged.

    ``None`` arguments leave the choice to wandb (and so to ``WANDB_PROJECT``, ``WANDB_ENTITY``,
    ``WANDB_RUN_ID``, ``WANDB_NAME``, ``WANDB_RUN_GROUP``, ``WANDB_DIR``). A given ``run_id`` is resumed
    if it exists (``resume="allow"``) and created otherwise.
    """

    def __init__(
        self,
        project: str | None = None,
        entity: str | None = None,
        run_id: str | None = None,
        name: str | None = None,
        group: str | None = None,
        dir: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.project = project
        self.entity = entity
        self.run_id = run_id
        self.name = name
        self.group = group
        self.dir = dir
        self.config: dict[str, Any] = dict(config or {})
        self.enabled = True
        self.run: Any = None
        self._wandb: Any = None
        self._step_offset = 0
        self._last_step = -1
        self._session_step = 0
        self._results: dict[str, float] = {}  # batch statistics since the last STATUS
        self._status = "unknown"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> bool:
        """Get wandb ready (the run itself starts with the first event); False if wandb is unusable."""
        if not self.enabled:
            return False
        try:
            import wandb
        except Exception as exc:
            return self._fail(f"cannot import wandb ({exc}); install it (pip install wandb) or use --no_wandb")
        self._wandb = wandb
        return True

    def handle(self, name: str, fields: dict[str, Any]) -> None:
        """Log one event; never raises (a failure switches the monitor off after one warning)."""
        if not self.enabled:
            return
        try:
            if name == RUN_STARTED:
                self._on_run_started(fields)
            elif name == STATUS:
                self._on_status(fields)
            elif name == BATCH_PROCESSED:
                _merge_result_metrics(self._results, batch_result_metrics(fields.get("stats") or {}))
            elif name == LIMIT_REACHED and self.run is not None:
                self.run.summary["Run/limit_reached"] = str(fields.get("limit"))
            elif name == RUN_FINISHED:
                self._status = str(fields.get("status") or "unknown")
                if self.run is not None:
                    self._flush_results()
                    self.run.summary["Run/status"] = self._status
        except Exception as exc:  # monitoring must never break the work
            self._fail(f"{type(exc).__name__}: {exc}")

    def finish(self) -> None:
        """Flush and close the run (idempotent, never raises)."""
        run, self.run = self.run, None
        if run is None:
            return
        try:
            if self.enabled and self._results:
                self.run = run
                self._flush_results()
                self.run = None
            run.finish(exit_code=1 if self._status == "error" else 0)
        except Exception as exc:
            self._fail(f"could not finish the run: {exc}")

    # ------------------------------------------------------------------ events

    def _on_run_started(self, fields: dict[str, Any]) -> None:
        config = public_config({**self.config, **(fields.get("config") or {})})
        if self.group is None and fields.get("task"):
            self.group = str(fields["task"])
        if self.run is None:
            self._init_run(config)
        else:
            self.run.config.update(config, allow_val_change=True)

    def _on_status(self, fields: dict[str, Any]) -> None:
        if self.run is None:
            self._init_run(public_config(self.config))
        self._session_step = int(fields.get("step") or self._session_step + 1)
        metrics = dict(fields.get("metrics") or {})
        if self._results:
            metrics.update(self._results)
            metrics.update(_derived_result_metrics(self._results))
            self._results = {}
        self._log(metrics)

    def _flush_results(self) -> None:
        """Log batch statistics that no STATUS row took (e.g. processed just before the run ended)."""
        if self._results:
            metrics = {**self._results, **_derived_result_metrics(self._results)}
            self._results = {}
            self._session_step += 1
            self._log(metrics)

    def _log(self, metrics: dict[str, Any]) -> None:
        # Session steps restart at 1 on every run of the task; a resumed wandb run only accepts increasing steps.
        step = max(self._step_offset + self._session_step, self._last_step + 1)
        self.run.log(metrics, step=step)
        self._last_step = step

    def _init_run(self, config: dict[str, Any]) -> None:
        wandb = self._wandb
        if wandb is None:
            if not self.start():
                return
            wandb = self._wandb
        if self.dir is not None:
            Path(self.dir).mkdir(parents=True, exist_ok=True)
        quiet: dict[str, Any] = {}
        if not any(name in os.environ for name in ("WANDB_SILENT", "WANDB_QUIET", "WANDB_SHOW_INFO")):
            # About 40 lines (and an advert) per run otherwise; we log one line with the run's place instead.
            quiet = {"silent": True}
        settings = wandb.Settings(
            x_disable_stats=True,  # CPU/GPU system metrics mean nothing for a mostly waiting process
            x_disable_meta=True,  # the metadata records sys.argv, which may hold --openai_api_key
            console="off",  # our log lines stay in the terminal, not in a wandb file
            **quiet,
        )
        # wandb prints an advert for its Weave product when the openai module is loaded; quiet means none.
        advert_off = quiet and "weave" not in sys.modules and "WANDB_DISABLE_WEAVE" not in os.environ
        if advert_off:
            os.environ["WANDB_DISABLE_WEAVE"] = "true"
        try:
            self.run = wandb.init(
                project=self.project,
                entity=self.entity,
                id=self.run_id,
                name=self.name,
                group=self.group,
                dir=os.fspath(self.dir) if self.dir is not None else None,
                config=config,
                # wandb reads WANDB_MODE once per process; read it at each init so a later change is honoured too.
                mode=os.environ.get("WANDB_MODE") or None,
                resume="allow" if self.run_id else None,
                reinit="create_new",  # never finish a run the user's own code may have open
                settings=settings,
            )
        finally:
            if advert_off:
                del os.environ["WANDB_DISABLE_WEAVE"]
        self._step_offset = int(getattr(self.run, "starting_step", 0) or 0)
        self._last_step = self._step_offset - 1
        if quiet:
            self._announce()

    def _announce(self) -> None:
        """One line saying where the run goes (wandb itself is kept quiet)."""
        run = self.run
        run_dir = os.path.dirname(str(getattr(run, "dir", "") or "")) or "?"
        offline = bool(getattr(run, "offline", False))
        url = None if offline else getattr(run, "url", None)
        if url:
            log.info("wandb run %s: %s", run.name or run.id, url)
        elif offline or os.environ.get("WANDB_MODE") == "offline":
            log.info(
                "wandb run %s logged offline in %s (upload it later with: wandb sync %s)", run.id, run_dir, run_dir
            )

    def _fail(self, reason: str) -> bool:
        if self.enabled:
            log.warning(
                "wandb logging is switched off for this run (the work continues): %s. Check `wandb login` or "
                "WANDB_MODE=offline, or pass --no_wandb to silence this.",
                str(reason).rstrip("."),
            )
        self.enabled = False
        return False
