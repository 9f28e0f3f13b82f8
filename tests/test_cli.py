"""The `hegnn` command (hegnn_cli): every sub-command with its options, each imported
only when it runs, so `hegnn serve` loads hegnn and service alone."""

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hegnn_cli import COMMANDS, app

ROOT = Path(__file__).resolve().parents[1]


def python(*args: str, timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """This interpreter with ``args`` in the repository root; output captured."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        **options,
    )


# Top-level modules that are not part of serving.
NOT_SERVING = {"training", "benchmarks", "matplotlib"}
# The project's own packages, as their repository folders are named (hegnn_serve.X
# is reported as X).
PROJECT = {"hegnn", "hegnn_cli", "service", "training", "benchmarks"}
# The expression that names a loaded module as above, in the child interpreter.
PACKAGE_OF = "(m.split('.')[1] if m.startswith('hegnn_serve.') else m.split('.')[0])"

SERVE = """
import json, sys
import uvicorn
uvicorn.run = lambda app, **options: None  # everything up to the server loop
uvicorn.Server.run = lambda server, sockets=None: setattr(server, 'started', True)
from hegnn_cli import app
try:
    app(["serve", "--checkpoints", sys.argv[1], "--device", "cpu"], prog_name="hegnn")
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps(sorted({PACKAGE_OF for m in sys.modules})))
""".replace("PACKAGE_OF", PACKAGE_OF)


def serve_imports(checkpoints: Path) -> set[str]:
    """Top-level modules loaded by `hegnn serve --checkpoints CHECKPOINTS` in a fresh
    interpreter, up to where uvicorn would start serving."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    done = python("-c", SERVE, str(checkpoints), timeout=300)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_serve_loads_no_training_benchmarks_or_matplotlib(tmp_path: Path) -> None:
    loaded = serve_imports(tmp_path / "checkpoints")
    assert not loaded & NOT_SERVING, sorted(loaded & NOT_SERVING)
    assert loaded & PROJECT == {"hegnn", "hegnn_cli", "service"}


def test_help_lists_every_subcommand_without_importing_them() -> None:
    code = (
        "import json, sys\n"
        "from hegnn_cli import app\n"
        "try:\n"
        "    app(['--help'], prog_name='hegnn')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted({{{PACKAGE_OF} for m in sys.modules}})))\n"
    )
    done = python("-c", code, env={**os.environ, "COLUMNS": "120"})
    assert done.returncode == 0, done.stderr
    *help_lines, modules = done.stdout.splitlines()
    text = "\n".join(help_lines)
    for name, lazy in COMMANDS.items():
        assert re.search(rf"\b{name} +{re.escape(lazy.summary)}", text), name
    loaded = set(json.loads(modules))
    assert not loaded & (PROJECT - {"hegnn_cli"}), "--help imported a sub-command"
    assert "torch" not in loaded


@pytest.mark.parametrize(
    ("argv", "options"),
    [
        (["train"], ["--config", "--set"]),
        (["eval"], ["--split"]),
        (["data", "nbody"], ["--protocol", "--bodies", "--out"]),
        (["bench", "model"], ["--quick", "--device", "--mace-path"]),
        (["serve"], ["--host", "--port", "--checkpoints", "--device"]),
        (["ipi"], ["--model", "--url", "--checkpoint", "--address", "--unix"]),
    ],
)
def test_subcommand_help_shows_its_options(argv: list[str], options: list[str]):
    result = CliRunner().invoke(
        app, [*argv, "--help"], prog_name="hegnn", env={"COLUMNS": "120"}
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"Usage: hegnn {' '.join(argv)} [OPTIONS]" in result.output
    for option in options:
        assert option in result.output, option


def test_summaries_are_the_commands_own_help() -> None:
    """`hegnn --help` lists the registry's summaries: each is the first paragraph of
    its command's help, as typer would list it with the command imported."""
    group = typer.main.get_command(app)
    with typer.Context(group) as ctx:
        for name, lazy in COMMANDS.items():
            command = group.get_command(ctx, name)
            first = inspect.cleandoc(command.help or "").split("\n\n")[0]
            assert lazy.summary == first.replace("\n", " "), name
            assert command.name == name


@pytest.mark.parametrize("module", ["hegnn_cli", "hegnn_serve.training"])
def test_python_dash_m_is_the_hegnn_command(module: str) -> None:
    done = python("-m", module, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: hegnn " in done.stdout
    assert all(name in done.stdout for name in COMMANDS)


UNINSTALLED = """
import runpy, sys
# Forget the editable install: the checkout is only on sys.path (the working folder).
sys.meta_path = [f for f in sys.meta_path if "__editable__" not in repr(f)]
sys.path_hooks = [h for h in sys.path_hooks if "__editable__" not in repr(h)]
sys.path_importer_cache.clear()
for name in [m for m in sys.modules if m.startswith(("hegnn", "__editable__"))]:
    del sys.modules[name]
sys.argv = ["hegnn", "data", "nbody", "--help"]
runpy.run_module("hegnn_cli", run_name="__main__")
"""


def test_python_dash_m_runs_from_a_checkout_that_is_not_installed() -> None:
    """`python -m hegnn_cli` with the repository on sys.path but no install maps the
    folders to hegnn_serve.* itself (`hegnn data nbody` imports its training)."""
    done = python("-c", UNINSTALLED)
    assert done.returncode == 0, done.stderr
    assert "Usage: hegnn data nbody" in done.stdout
