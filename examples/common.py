"""What the example scripts share: server options, logging, MD17 geometries.

Imported by the scripts next to it (``python examples/<script>.py`` puts this folder
on ``sys.path``). Needs only ase besides the standard library.
"""

import argparse
import logging
from pathlib import Path

from ase import Atoms
from ase.io import read

GEOMETRIES = Path(__file__).resolve().parents[1] / "training" / "geometries"


def server_parser(doc: str, model: str) -> argparse.ArgumentParser:
    """Options every example takes: --url, --model, --api-key, --seed, --out."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server")
    parser.add_argument("--model", default=model, help="model name on the server")
    parser.add_argument("--api-key", default=None, help="Bearer key, if required")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("docs/results/examples"), help="folder"
    )
    return parser


def setup_logging() -> None:
    """INFO to stderr, without httpx's line per request."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def load_molecule(name_or_path: str) -> Atoms:
    """An MD17 geometry by name (``training/geometries/<name>.xyz``) or a file path."""
    path = Path(name_or_path)
    return read(path if path.is_file() else GEOMETRIES / f"{name_or_path}.xyz")
