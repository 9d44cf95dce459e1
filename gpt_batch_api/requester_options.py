"""Every setting of GPTRequester, with its default, in one value object (checked together at construction)."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from .errors import ConfigError
from .limits import Limit, Limits

__all__ = ["RequesterOptions"]

DIRECT_VERBOSE_MODES = ("never", "error", "warn", "always")
PROVIDERS = ("openai", "anthropic")
# Numeric options where a negative value means something ("all", "forever"), or infinity does.
NEGATIVE_OK = frozenset({"process_failed_batches", "show_warnings", "show_errors", "lock_timeout"})
INFINITE_OK = frozenset({"lock_timeout"})


@dataclasses.dataclass
class RequesterOptions:
    """Settings of a GPTRequester; names and meanings follow the CLI flags (see ``--help``)."""

    endpoint: str | None = None  # None: $OPENAI_ENDPOINT, else the provider's default (see resolved_endpoint)
    provider: str = "openai"  # the batch backend: "openai" (and OpenAI-compatible servers) or "anthropic"
    dryrun: bool = False
    only_process: bool = False
    process_failed_batches: int = 0
    retry_fatal_requests: bool = False
    wipe_requests: bool = False
    wipe_task: bool = False
    openai_api_key: str | None = dataclasses.field(default=None, repr=False)
    openai_organization: str | None = None
    openai_project: str | None = None
    anthropic_api_key: str | None = dataclasses.field(default=None, repr=False)
    client_base_url: str | None = None
    autocreate_working_dir: bool = True
    lock_timeout: float | None = None
    lock_poll_interval: float = 0.5
    lock_status_interval: float = 10.0
    token_estimator_warn: str = "once"
    exact_input_tokens: bool = False  # count input tokens with the provider's free endpoint (Anthropic only)
    remote_update_interval: float = 10.0
    wait_save_interval: float = 900.0  # accepted for compatibility: our saves are cheap, so we save every change
    direct_verbose: str = "never"
    show_warnings: int = 50
    show_errors: int = 25
    max_retries: int = 2
    cost_input_direct_mtoken: float = 2.5
    cost_input_cached_mtoken: float = 1.25
    cost_input_batch_mtoken: float = 1.25
    cost_output_direct_mtoken: float = 10.0
    cost_output_batch_mtoken: float = 5.0
    max_task_requests: int = 10_000_000
    max_task_ktokens: float = 5_000_000
    max_task_cost: float = 1000.0
    max_session_requests: int = 5_000_000
    max_session_ktokens: float = 2_500_000
    max_session_cost: float = 500.0
    max_direct_requests: int = 50
    max_direct_ktokens: float = 500
    max_direct_cost: float = 5.0
    min_batch_requests: int = 101
    max_batch_requests: int = 50_000
    max_batch_mb: float = 100
    max_batch_ktokens: float = 20_000
    max_batch_cost: float = 50.0
    max_unpushed_batches: int = 5
    max_remote_batches: int = 15
    max_remote_requests: int = 5_000_000
    max_remote_mb: float = 10_000
    max_remote_ktokens: float = 60_000
    max_remote_cost: float = 150.0
    max_mb_safety: float = 1.01
    max_token_safety: float = 1.05
    force_direct: bool = False
    warn_predicted_input_factor: float = 1.2
    warn_assumed_completion_factor: float = 1.6
    min_pass_ratio: float = 0.5
    max_pass_failures: int = 2
    direct_concurrency: int = 16
    assumed_completion_ratio: float | None = None  # passed to the token estimator (the task's completion_ratio)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> RequesterOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"Unknown GPTRequester option(s): {', '.join(unknown)}. See --help for valid names.")
        options = cls(**kwargs)
        options.validate()
        return options

    @property
    def resolved_endpoint(self) -> str:
        if self.provider == "anthropic":
            return self.endpoint or "/v1/messages"
        return self.endpoint or os.environ.get("OPENAI_ENDPOINT") or "/v1/chat/completions"

    def limits(self) -> Limits:
        def level(name: str, requests: bool = True, mb: bool = True) -> Limit:
            return Limit(
                name,
                requests=getattr(self, f"max_{name}_requests") if requests else None,
                ktokens=getattr(self, f"max_{name}_ktokens"),
                cost=getattr(self, f"max_{name}_cost"),
                mb=getattr(self, f"max_{name}_mb") if mb else None,
            )

        return Limits(
            batch=level("batch"),
            remote=level("remote"),
            session=level("session", mb=False),
            task=level("task", mb=False),
            direct=level("direct", mb=False),
            max_remote_batches=self.max_remote_batches,
            max_unpushed_batches=self.max_unpushed_batches,
            min_batch_requests=self.min_batch_requests,
            max_token_safety=self.max_token_safety,
            max_mb_safety=self.max_mb_safety,
        )

    def validate(self) -> None:
        """Raise ConfigError naming the option to change."""
        self._validate_numbers()
        if self.provider not in PROVIDERS:
            raise ConfigError(f"--provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}.")
        if self.provider == "anthropic" and self.resolved_endpoint != "/v1/messages":
            raise ConfigError(
                f"--provider anthropic serves the /v1/messages endpoint, not {self.resolved_endpoint} (the task's "
                "requests must be Messages requests: model, max_tokens, messages)."
            )
        if self.exact_input_tokens and self.provider != "anthropic":
            raise ConfigError(
                "--exact_input_tokens needs --provider anthropic: OpenAI has no free counting endpoint for these "
                "requests, and its offline counts of text are already exact. Run without --exact_input_tokens."
            )
        if self.direct_verbose not in DIRECT_VERBOSE_MODES:
            raise ConfigError(f"--direct_verbose must be one of {', '.join(DIRECT_VERBOSE_MODES)}.")
        if self.max_retries < 0:
            raise ConfigError("--max_retries must be >= 0.")
        if not 0 <= self.min_pass_ratio <= 1:
            raise ConfigError("--min_pass_ratio must be between 0 and 1.")
        if self.max_pass_failures < 1:
            raise ConfigError("--max_pass_failures must be >= 1.")
        if self.direct_concurrency < 1:
            raise ConfigError("--direct_concurrency must be >= 1.")
        if self.remote_update_interval <= 0:
            raise ConfigError("--remote_update_interval must be > 0 seconds.")
        for name in ("warn_predicted_input_factor", "warn_assumed_completion_factor"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1.0.")
        for field in dataclasses.fields(self):
            if field.name.startswith("cost_") and getattr(self, field.name) < 0:
                raise ConfigError(f"--{field.name} must be >= 0.")
        if self.wipe_task and self.dryrun:
            raise ConfigError("--wipe_task cannot be combined with --dryrun (a dry run never changes files).")
        self.limits().validate()

    def _validate_numbers(self) -> None:
        """NaN is never a number we can compare with (a NaN cap lets everything through); infinity is
        accepted only where it means "no limit" or "wait forever", and amounts and durations are never negative."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = field.name
            if math.isnan(value):
                raise ConfigError(f"--{name} must be a number, got nan.")
            if math.isinf(value) and not (name in INFINITE_OK or (name.startswith("max_") and value > 0)):
                raise ConfigError(f"--{name} must be finite, got {value}.")
            if value < 0 and name not in NEGATIVE_OK:
                raise ConfigError(f"--{name} must be >= 0, got {value}.")

    def option_text(self, name: str) -> str:
        """``--name value`` for messages (e.g. "--max_session_cost 0.01 reached"), or the name if it is no option."""
        value = getattr(self, name, None)
        return f"--{name} {value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else name
