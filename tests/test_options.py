"""One definition per option: constructor defaults, CLI flags (the reference's names) and the YAML defaults file."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest
import yaml

from gpt_batch_api.errors import ConfigError
from gpt_batch_api.options import _TASK_DEFAULTS, CONFIG_PATH, add_task_arguments, config_defaults, task_kwargs
from gpt_batch_api.requester_options import RequesterOptions
from gpt_batch_api.task_manager import TaskManager
from gpt_batch_api.task_manager_demo import build_parser

# Every flag of the reference library's demo CLI (its --help), which users' scripts and habits rely on.
REFERENCE_FLAGS = """--chat_endpoint --client_base_url --completion_ratio --confidence --cost_input_batch_mtoken
--cost_input_cached_mtoken --cost_input_direct_mtoken --cost_output_batch_mtoken --cost_output_direct_mtoken
--direct_verbose --dryrun --force_direct --help --lock_poll_interval --lock_status_interval --lock_timeout
--max_batch_cost --max_batch_ktokens --max_batch_mb --max_batch_requests --max_completion_tokens --max_direct_cost
--max_direct_ktokens --max_direct_requests --max_mb_safety --max_pass_failures --max_remote_batches --max_remote_cost
--max_remote_ktokens --max_remote_mb --max_remote_requests --max_retries --max_session_cost --max_session_ktokens
--max_session_requests --max_task_cost --max_task_ktokens --max_task_requests --max_token_safety
--max_unpushed_batches --min_batch_requests --min_pass_ratio --model --no_autocreate_working_dir --no_run --no_wandb
--only_process --openai_api_key --openai_organization --openai_project --opinions_max --opinions_min
--postprocess_output --process_failed_batches --reinit_meta --remote_update_interval --retry_fatal_requests
--show_errors --show_warnings --task_dir --task_prefix --temperature --token_estimator_warn --top_p
--wait_save_interval --wandb --wandb_dir --wandb_entity --wandb_group --wandb_name --wandb_project --wandb_run_id
--warn_assumed_completion_factor --warn_predicted_input_factor --wipe_failed --wipe_requests --wipe_task""".split()


def test_demo_cli_has_every_reference_flag():
    flags = {opt for action in build_parser()._actions for opt in action.option_strings}
    assert sorted(set(REFERENCE_FLAGS) - flags) == []


def test_flags_reach_the_constructor_only_when_given():
    parser = argparse.ArgumentParser()
    add_task_arguments(parser)
    kwargs = task_kwargs(parser.parse_args(["--max_batch_cost", "3", "--force_direct", "--no_autocreate_working_dir"]))
    requester = {k: v for k, v in kwargs.items() if k not in _TASK_DEFAULTS}
    assert requester == {"max_batch_cost": 3.0, "force_direct": True, "autocreate_working_dir": False}
    RequesterOptions.from_kwargs(requester)  # names and types are accepted as they are


def test_task_defaults_match_the_task_manager_signature():
    params = inspect.signature(TaskManager.__init__).parameters
    assert {name: params[name].default for name in _TASK_DEFAULTS} == _TASK_DEFAULTS


def test_yaml_defaults_file_is_in_sync_and_holds_no_secret():
    with open(CONFIG_PATH, encoding="utf-8") as file:
        loaded = yaml.safe_load(file)
    assert loaded == config_defaults(), "regenerate with: python -m gpt_batch_api.options --write_config"
    secrets = {"openai_api_key", "anthropic_api_key"}
    assert not secrets & set(loaded["gpt_requester"])
    assert set(loaded["gpt_requester"]) == {f.name for f in dataclasses.fields(RequesterOptions)} - secrets


def test_unknown_option_names_are_refused():
    with pytest.raises(ConfigError, match="max_batch_request"):
        RequesterOptions.from_kwargs({"max_batch_request": 5})
