"""Example tasks run by ``python -m gpt_batch_api.task_manager_demo``; read them as templates for your own."""

from .char_codes import CharCodesTask
from .utterance_emotion import UtteranceEmotionTask

TASKS = {"char_codes": CharCodesTask, "utterance_emotion": UtteranceEmotionTask}

__all__ = ["TASKS", "CharCodesTask", "UtteranceEmotionTask"]
