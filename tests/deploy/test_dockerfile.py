"""The Dockerfile, checked without a container engine: its instructions are parsed,
its build-time dependency list and its command are run on the host, from the
project's virtual environment."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch
import yaml
from packaging.requirements import Requirement

from hegnn import ModelConfig, build_model, save
from tests.deploy.conftest import ROOT
from tests.test_cli import serve_imports
from tests.test_packaging import import_names

# The packages of pyproject.toml that the image holds: what `hegnn serve` needs.
SOURCES = ("hegnn", "hegnn_cli", "service")
PORT = "8000"  # EXPOSE, CMD and HEALTHCHECK agree on it


def instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order; continuation lines joined, comments
    dropped (also between continuation lines, as Docker does)."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def only(keyword: str) -> str:
    """The arguments of the one (last, as Docker uses) ``keyword`` instruction."""
    found = [args for kw, args in instructions() if kw == keyword]
    assert found, f"Dockerfile has no {keyword}"
    return found[-1]


def position(predicate: Callable[[str, str], bool]) -> int:
    """Index of the first instruction for which ``predicate(kw, args)`` holds."""
    for i, (kw, args) in enumerate(instructions()):
        if predicate(kw, args):
            return i
    raise AssertionError("no such instruction in the Dockerfile")


def container_command() -> list[str]:
    """ENTRYPOINT + CMD, both in exec (JSON) form, as the container runs them."""
    entrypoint = json.loads(only("ENTRYPOINT"))
    cmd = json.loads(only("CMD"))
    return entrypoint + cmd


def healthcheck_command() -> list[str]:
    options, _, command = only("HEALTHCHECK").partition("CMD ")
    assert command, "HEALTHCHECK has no CMD"
    return json.loads(command)


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def replace_option(argv: list[str], name: str, value: str) -> list[str]:
    i = argv.index(name)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def project_packages() -> set[str]:
    """Top-level folders that setup.py installs."""
    return {
        folder for folder in import_names() if (ROOT / folder / "__init__.py").is_file()
    }


def pip_install_runs() -> list[str]:
    return [
        args for kw, args in instructions() if kw == "RUN" and "pip install" in args
    ]


def makefile_recipe(target: str) -> list[str]:
    """Recipe lines of a Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def torch_pin(text: str) -> str:
    pins = set(re.findall(r"torch==([0-9][0-9a-z.+]*)", text))
    assert len(pins) == 1, f"expected one torch==X pin, found {pins}"
    return pins.pop()


def test_base_is_slim_python_311_and_cuda_is_a_build_argument() -> None:
    args = dict(a.partition("=")[::2] for kw, a in instructions() if kw == "ARG")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["BASE_IMAGE"])
    assert only("FROM").startswith("${BASE_IMAGE}")
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


def test_torch_pin_matches_makefile_and_pyproject() -> None:
    docker_pin = torch_pin("\n".join(pip_install_runs()))
    assert docker_pin == torch_pin((ROOT / "Makefile").read_text())
    with open(ROOT / "pyproject.toml", "rb") as f:
        dependencies = tomllib.load(f)["project"]["optional-dependencies"]["serve"]
    torch_spec = next(
        Requirement(d) for d in dependencies if Requirement(d).name == "torch"
    )
    assert torch_spec.specifier.contains(docker_pin)
    torch_run = next(r for r in pip_install_runs() if "torch==" in r)
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_run


def test_dependency_layer_is_built_from_pyproject_before_the_source(
    tmp_path: Path,
) -> None:
    """pyproject.toml alone is copied, the dependencies installed, then the source."""
    copy_pyproject = position(lambda kw, a: kw == "COPY" and a == "pyproject.toml ./")
    install_deps = position(lambda kw, a: kw == "RUN" and "-r requirements.txt" in a)
    first_source = position(
        lambda kw, a: kw == "COPY" and a.split()[0].rstrip("/") in SOURCES
    )
    install_project = position(
        lambda kw, a: kw == "RUN" and "pip install --no-deps ." in a
    )
    assert copy_pyproject < install_deps < first_source < install_project
    copied = {
        args.split()[0].rstrip("/")
        for kw, args in instructions()[first_source:install_project]
        if kw == "COPY"
    }
    assert set(SOURCES) <= copied
    assert set(SOURCES) <= project_packages()

    # The build writes requirements.txt with a `python -c` one-liner: run it here.
    run = instructions()[install_deps][1]
    step = next(s for s in run.split("&&") if "requirements.txt" in s and "-c" in s)
    command = shlex.split(step.split(">")[0])
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    written = subprocess.run(
        [sys.executable, *command[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    serve = project["optional-dependencies"]["serve"]
    assert written == project["dependencies"] + serve


def test_dockerignore_keeps_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "matcher knows no '!'"

    def ignored(path: str) -> bool:
        # Docker anchors patterns at the context root; '**' spans folders.
        def regex(p: str) -> str:
            parts = re.split(r"(\*\*/?|\*|\?)", p.strip("/"))
            table = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
            return "".join(table.get(x, re.escape(x)) for x in parts)

        prefixes = [
            "/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)
        ]
        return any(re.fullmatch(regex(p), q) for p in patterns for q in prefixes)

    sources = [
        s for kw, args in instructions() if kw == "COPY" for s in args.split()[:-1]
    ]
    for source in sources:
        assert not ignored(source.rstrip("/")), f"{source} is in .dockerignore"
    for path in ("service/app.py", "training/data/nbody.py", "checkpoints/m/card.json"):
        assert not ignored(path), path
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "runs/x/log",
        "data/generated/x.npz",
        "hegnn/__pycache__/model.cpython-311.pyc",
        ".pytest_cache/v",
        ".ruff_cache/x",
        "hegnn_serve.egg-info/PKG-INFO",
        ".env",
    ):
        assert ignored(path), path


def test_image_holds_every_project_package_hegnn_serve_imports(
    tmp_path: Path,
) -> None:
    """`hegnn serve` (up to the server loop) imports no project package that the
    image leaves out (training, benchmarks)."""
    loaded = serve_imports(tmp_path / "checkpoints")
    assert loaded & project_packages() == set(SOURCES)


def test_project_installs_from_what_the_image_copies(tmp_path: Path) -> None:
    """A wheel built from the files the Dockerfile copies before `pip install .`
    holds the serving packages and the `hegnn` command."""
    pytest.importorskip("setuptools")  # the build backend, used without isolation
    install = position(lambda kw, a: kw == "RUN" and "pip install --no-deps ." in a)
    src = tmp_path / "src"
    src.mkdir()
    for kw, args in instructions()[:install]:
        if kw != "COPY":
            continue
        *sources, target = args.split()
        for source in sources:
            if (ROOT / source).is_dir():
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(ROOT / source, src / target, ignore=ignore)
            else:
                shutil.copy(ROOT / source, src / target)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--quiet", "--wheel-dir", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith("/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    installed = {import_names()[folder].replace(".", "/") for folder in SOURCES}
    assert {
        "/".join(n.split("/")[:2] if n.startswith("hegnn_serve/") else n.split("/")[:1])
        for n in names
        if n.endswith(".py")
    } == installed
    assert "hegnn = hegnn_cli:app" in scripts


def test_image_runs_as_non_root_and_exposes_the_port() -> None:
    user = only("USER")
    assert user.split(":")[0] not in {"root", "0"}
    assert position(lambda kw, a: kw == "USER") < position(lambda kw, a: kw == "CMD")
    assert only("EXPOSE") == PORT


def test_healthcheck_probes_healthz_with_python() -> None:
    command = healthcheck_command()
    assert command[0] == "python"  # slim images have no curl
    assert f"http://127.0.0.1:{PORT}/healthz" in command[-1]


def test_checkpoints_are_copied_in_readable_by_the_service_user() -> None:
    copy = position(lambda kw, a: kw == "COPY" and a == "checkpoints/ ./checkpoints/")
    assert only("WORKDIR") == "/app"  # so they land in /app/checkpoints
    # hegnn.save writes 0600 weights (safetensors) and COPY keeps the mode.
    readable = position(lambda kw, a: kw == "RUN" and "chmod -R a+rX" in a)
    assert copy < readable < position(lambda kw, a: kw == "USER")


def test_command_is_make_run() -> None:
    """The container runs `hegnn serve` with the options `make run` passes."""
    argv = container_command()
    assert argv[:2] == ["hegnn", "serve"]
    assert option(argv, "--host") == "0.0.0.0"
    assert option(argv, "--port") == PORT
    assert option(argv, "--checkpoints") == "/app/checkpoints"
    (run,) = makefile_recipe("run")
    make_argv = shlex.split(run)
    assert make_argv[0] == "$(BIN)/hegnn" and make_argv[1] == "serve"
    assert [a for a in make_argv if a.startswith("--")] == [
        a for a in argv if a.startswith("--")
    ]


def write_tiny_checkpoint(root: Path) -> None:
    """One small float32 potential, saved by the project's own ``hegnn.save``."""
    torch.manual_seed(0)
    config = ModelConfig(
        task="potential", lmax=1, hidden_dim=8, num_layers=1, species=(1, 8), r_max=4.0
    )
    save(build_model(config).eval(), root / "tiny", {"units": {"energy": "eV"}})


def test_container_command_serves_checkpoints(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """ENTRYPOINT + CMD, run on the host: only the checkpoints folder and the port
    change; /readyz lists the model, the HEALTHCHECK command passes, SIGTERM (what
    `docker stop` sends) ends the process cleanly."""
    checkpoints = tmp_path / "checkpoints"
    write_tiny_checkpoint(checkpoints)
    port = str(free_port())
    argv = container_command()
    argv = replace_option(argv, "--checkpoints", str(checkpoints))
    argv = replace_option(argv, "--port", port)
    executable = Path(sys.executable).parent / argv[0]
    assert executable.is_file(), f"{argv[0]} is not installed beside {sys.executable}"
    argv[0] = str(executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEGNN_")}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not ready:\n{log.read_text()}"
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert ready.json()["models"] == ["tiny"]

        # The image's HEALTHCHECK and the compose file's healthcheck pass.
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        compose_probe = compose["services"]["api"]["healthcheck"]["test"][1:]
        for probe in (healthcheck_command(), compose_probe):
            probe = [sys.executable if a == "python" else a for a in probe]
            probe[-1] = probe[-1].replace(f":{PORT}/", f":{port}/")
            subprocess.run(probe, check=True, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    # uvicorn shuts down gracefully, then re-raises the signal (exit status 143).
    assert code in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()
