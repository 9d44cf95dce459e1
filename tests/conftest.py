"""Test-wide settings: wandb never reaches its servers, and nothing reads a real OpenAI key."""

from __future__ import annotations

import os

os.environ["WANDB_MODE"] = "disabled"  # whatever the user's shell says; tests that need offline wandb set it
os.environ["WANDB_SILENT"] = "true"
os.environ["WANDB_DISABLE_STATS"] = "true"
os.environ.pop("OPENAI_API_KEY", None)  # a test must never spend a user's money
os.environ.pop("OPENAI_BASE_URL", None)
os.environ.pop("ANTHROPIC_API_KEY", None)
os.environ.pop("ANTHROPIC_BASE_URL", None)
