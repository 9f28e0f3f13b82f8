"""`hegnn data ...`: make and import datasets (N-body, MD17 files, xTB trajectories)."""

import logging
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from hegnn_serve.training.data.md17 import ENERGY_UNITS, load_frames, write_canonical
from hegnn_serve.training.data.nbody import generate_nbody, nbody_protocol

logger = logging.getLogger(__name__)
data_app = typer.Typer(no_args_is_help=True, help="Make and import datasets.")
GENERATED = Path("data/generated")
T = TypeVar("T")


class ProtocolName(StrEnum):
    egnn = "egnn"
    hegnn = "hegnn"


class Thermostat(StrEnum):
    bussi = "bussi"
    langevin = "langevin"


def _checked(call: Callable[[], T]) -> T:
    """Run ``call``; turn input errors into a clear CLI error (exit code 2)."""
    try:
        return call()
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise typer.BadParameter(str(error)) from error


@data_app.callback()
def _logging() -> None:
    """Log INFO messages to stderr unless logging is configured already."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


@data_app.command()
def nbody(
    protocol: Annotated[ProtocolName, typer.Option(help="paper protocol")] = (
        ProtocolName.egnn
    ),
    bodies: Annotated[int, typer.Option(min=2, help="number of charges N")] = 5,
    seed: Annotated[int, typer.Option(help="generator seed")] = 43,
    train: Annotated[int | None, typer.Option(min=0, help="train sims")] = None,
    val: Annotated[int | None, typer.Option(min=0, help="val sims")] = None,
    test: Annotated[int | None, typer.Option(min=0, help="test sims")] = None,
    clip: Annotated[bool, typer.Option(help="clip force components to ±100")] = True,
    out: Annotated[Path | None, typer.Option(help=".npz to write")] = None,
) -> None:
    """Simulate the charged N-body system (HEGNN.md §7) into one .npz.

    Sizes default to the protocol's (egnn 3000/2000/2000 of a 10000/2000/2000 pool;
    hegnn 5000/2000/2000); give all three to change them.
    """
    given = (train, val, test)
    if any(s is not None for s in given) and None in given:
        raise typer.BadParameter("give all of --train, --val and --test, or none")
    sizes = None if train is None else (train, val, test)
    p = _checked(lambda: nbody_protocol(protocol.value, bodies, sizes, clip))
    out = out or GENERATED / f"nbody_{protocol.value}_{bodies}.npz"
    generate_nbody(out, p, seed)


@data_app.command()
def md17(
    path: Annotated[Path, typer.Argument(help="sGDML/rMD17 .npz, extxyz, ...")],
    unit: Annotated[
        str | None,
        typer.Option(help=f"energy unit in the file: {', '.join(ENERGY_UNITS)}"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help=".npz to write (eV)")] = None,
) -> None:
    """Import an MD17-style file; write the project's .npz in eV, eV/Å and Å.

    The energy unit is required for extxyz and other ase-read files (forces are per Å
    in the same unit); sGDML and rMD17 .npz files are kcal/mol unless stated.
    """
    frames = _checked(lambda: load_frames(path, unit))
    out = out or GENERATED / f"{path.stem}.npz"
    if out.resolve() == path.resolve():
        raise typer.BadParameter("out: would overwrite the input file")
    write_canonical(frames, out)


@data_app.command()
def xtb(
    molecule: Annotated[str, typer.Option(help="geometry in training/geometries")],
    steps: Annotated[int, typer.Option(min=1, help="MD steps (frames = steps+1)")],
    out: Annotated[Path, typer.Option(help="sGDML .npz to write")],
    seed: Annotated[int, typer.Option(help="velocities and Langevin noise")] = 0,
    temperature: Annotated[float, typer.Option(min=0.0, help="K")] = 500.0,
    timestep: Annotated[float, typer.Option(min=0.0, help="fs")] = 0.5,
    thermostat: Annotated[Thermostat, typer.Option(help="NVT thermostat")] = (
        Thermostat.bussi
    ),
    tau: Annotated[float, typer.Option(min=0.0, help="thermostat time, fs")] = 500.0,
    relax: Annotated[bool, typer.Option(help="relax the start geometry")] = True,
    chunk: Annotated[int, typer.Option(min=1, help="frames per saved chunk")] = 1000,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """GFN2-xTB NVT MD (tblite) in MD17's format; resumes an interrupted run.

    Bussi (default) keeps the angular momentum zero, like MD17's trajectories;
    Langevin lets the molecule tumble.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite loads OpenMP
    try:
        import tblite.ase  # noqa: F401
    except ImportError as error:
        raise typer.BadParameter(
            "tblite is not installed: pip install 'hegnn-serve[xtb]'"
        ) from error
    from hegnn_serve.training.data.xtb import XTBRun, run_xtb_md

    run = XTBRun(
        molecule, seed, temperature, timestep, thermostat.value, tau, relax=relax
    )
    metadata = _checked(lambda: run_xtb_md(run, steps, out, chunk, progress))
    logger.info("%.4f s per step", metadata["s_per_step"])
