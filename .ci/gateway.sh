#!/usr/bin/env bash
# CI: the demo and three faults through LiteLLM's proxy (software we did not write) in front of the simulator.
# The proxy lives in its own throwaway venv inside the clone (never a dependency of ours, nothing cached outside
# the clone). If it cannot be installed or started, this step fails: it is never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"  # the version the issue was found with
PY="${PYTHON:-python3}"
rm -rf .gateway-venv
"$PY" -m venv .gateway-venv
if ! .gateway-venv/bin/pip install -q --no-cache-dir "litellm[proxy]==${LITELLM_VERSION}"; then
    echo "GATEWAY STEP FAILED: could not install litellm[proxy]==${LITELLM_VERSION} into .gateway-venv" >&2
    exit 1
fi
export GPT_BATCH_API_LITELLM="$PWD/.gateway-venv/bin/litellm"
export WANDB_MODE=disabled WANDB_SILENT=true
# -rs lists any skip: with GPT_BATCH_API_LITELLM set, none is expected, so a skip is a failure here
out="$(mktemp)"
python -m pytest -q -p no:cacheprovider -rs tests/test_gateway_litellm.py | tee "$out"
if grep -q "SKIPPED" "$out"; then
    echo "GATEWAY STEP FAILED: gateway tests were skipped" >&2
    exit 1
fi
