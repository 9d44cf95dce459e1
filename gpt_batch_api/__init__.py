"""gpt_batch_api: run large LLM jobs through OpenAI's Batch API, safely and restartably."""

__version__ = "0.1.0"
