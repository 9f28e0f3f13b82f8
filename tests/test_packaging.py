"""The installed layout: a wheel built from this tree installs the client's packages
as its base dependencies and no generic top-level module name (`service`, `training`);
the `hegnn` command in a client-only install names the extra to install."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CLIENT_DEPENDENCIES = {"numpy", "httpx", "ase", "msgpack"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools")  # the build backend, used without isolation
    # A copy: setuptools builds in the source tree (build/, *.egg-info).
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in import_names():
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--quiet", "--wheel-dir", str(dist), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = dist.glob("*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def import_names() -> dict[str, str]:
    """Top-level folder → installed import name (pyproject.toml, read by setup.py)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["hegnn-serve"]["packages"]


def metadata(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


def test_top_level_names_are_the_projects_own(wheel: zipfile.ZipFile) -> None:
    top_level = {n.split("/")[0] for n in wheel.namelist() if n.endswith(".py")}
    assert top_level == {"hegnn", "hegnn_cli", "hegnn_serve"}
    assert "hegnn_serve/__init__.py" not in wheel.namelist()  # a namespace package


def test_every_package_folder_is_installed_under_its_name(
    wheel: zipfile.ZipFile,
) -> None:
    names = import_names()
    installed = set(wheel.namelist())
    for folder, name in names.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            inner = init.relative_to(ROOT / folder).as_posix()
            assert f"{name.replace('.', '/')}/{inner}" in installed, init
    geometries = ROOT / "training" / "geometries"
    for xyz in geometries.glob("*.xyz"):
        assert f"hegnn_serve/training/geometries/{xyz.name}" in installed


def test_base_install_is_the_client(wheel: zipfile.ZipFile) -> None:
    fields = Parser().parsestr(metadata(wheel, "METADATA"))
    requirements = [Requirement(r) for r in fields.get_all("Requires-Dist")]
    base = {r.name for r in requirements if r.marker is None}
    assert base == CLIENT_DEPENDENCIES
    serve = {r.name for r in requirements if r.marker and "serve" in str(r.marker)}
    assert {"torch", "fastapi", "uvicorn", "typer"} <= serve


def test_hegnn_command_in_a_client_only_install_names_the_extra() -> None:
    code = "import sys; sys.modules['typer'] = None; import hegnn_cli"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "pip install 'hegnn-serve[serve]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_base_install_in_a_fresh_venv(tmp_path: Path) -> None:
    """`pip install .` (no extras) into a fresh venv from the package index: no torch,
    `pip check` clean, the client imports, `hegnn` names the extra (about 15 s)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(ROOT)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.lower()
    assert "torch" not in listed and "fastapi" not in listed
    subprocess.run([python, "-m", "pip", "check"], check=True, capture_output=True)
    code = "from hegnn_serve.service.calculator import RemoteCalculator"
    subprocess.run([python, "-c", code], check=True, cwd=tmp_path, timeout=120)
    done = subprocess.run(
        [venv / "bin" / "hegnn"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "hegnn-serve[serve]" in done.stderr
