"""The public door: every exported name loads, and type checkers see real types (not Any) through it."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import gpt_batch_api

ROOT = Path(__file__).resolve().parent.parent


def test_every_export_loads_and_is_visible_to_type_checkers():
    source = (ROOT / "gpt_batch_api" / "__init__.py").read_text()
    type_checking_names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                type_checking_names.update(alias.name for alias in stmt.names)
    exported = set(gpt_batch_api.__all__) - {"__version__"}
    assert type_checking_names == exported  # a name added to one list and not the other is Any for users
    for name in exported:
        assert getattr(gpt_batch_api, name).__module__.startswith("gpt_batch_api.")
    for error in ("StopRequested", "TaskLockedError", "ConfigError", "TaskFileError", "GPTBatchError"):
        assert issubclass(getattr(gpt_batch_api, error), BaseException)


def test_readme_example_type_checks_and_misuse_is_caught(tmp_path):
    example = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[0]
    (tmp_path / "readme_example.py").write_text(example)
    # The same task with a wrong output row: only a typed TaskManager (not Any) can catch it.
    misuse = example.replace("self.D.append(Row(country, None))", 'self.D.append("not a Row")')
    assert misuse != example
    (tmp_path / "misuse.py").write_text(misuse)
    command = [sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", str(ROOT / ".mypy_cache")]
    good = subprocess.run([*command, str(tmp_path / "readme_example.py")], capture_output=True, text=True, cwd=ROOT)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = subprocess.run([*command, str(tmp_path / "misuse.py")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and 'has incompatible type "str"; expected "Row"' in bad.stdout, bad.stdout


def test_a_misspelt_option_is_a_type_error_and_typed_options_run(tmp_path):
    """``RequesterOptions`` is the typed door to every setting: mypy names a misspelt one before any run."""
    code = (
        "from gpt_batch_api import RequesterOptions\n"
        "good = RequesterOptions(max_batch_requests=100, max_session_cost=2.0)\n"
        "bad = RequesterOptions(max_batch_requets=100)\n"
    )
    (tmp_path / "options_use.py").write_text(code)
    command = [sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", str(ROOT / ".mypy_cache")]
    checked = subprocess.run([*command, str(tmp_path / "options_use.py")], capture_output=True, text=True, cwd=ROOT)
    assert checked.returncode == 1, checked.stdout
    assert ':3: error: Unexpected keyword argument "max_batch_requets"' in checked.stdout, checked.stdout
    assert ":2:" not in checked.stdout

    from gpt_batch_api import GPTRequester, RequesterOptions

    options = RequesterOptions(max_batch_requests=200, max_session_cost=2.0, dryrun=True)
    requester = GPTRequester(tmp_path, "typed", options=options, max_session_cost=3.0)  # the CLI's names win
    assert requester.opts.max_batch_requests == 200 and requester.opts.max_session_cost == 3.0
    assert options.max_session_cost == 2.0  # the caller's object is not changed
