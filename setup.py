"""Package layout for setuptools (metadata and dependencies are in pyproject.toml).

Each top-level folder named in ``[tool.hegnn-serve.packages]`` installs, with its
sub-packages and data folders, under the import name given there: ``service/`` as
``hegnn_serve.service``, ``training/`` as ``hegnn_serve.training``. A folder that is
absent is skipped: the Docker image copies only what ``hegnn serve`` needs.
"""

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages, setup

with open("pyproject.toml", "rb") as f:
    IMPORT_NAMES: dict[str, str] = tomllib.load(f)["tool"]["hegnn-serve"]["packages"]

packages: list[str] = []
package_dir: dict[str, str] = {}
for folder, name in IMPORT_NAMES.items():
    if not (Path(folder) / "__init__.py").is_file():
        continue
    package_dir[name] = folder
    inner = find_namespace_packages(folder, exclude=["results*", "*__pycache__*"])
    packages += [name, *(f"{name}.{sub}" for sub in inner)]

setup(packages=packages, package_dir=package_dir)
