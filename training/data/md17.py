"""Read MD17-style molecular frames from any common format into eV and Å, once.

Formats, recognised by content:

- sGDML ``.npz`` (``R`` Å, ``E`` kcal/mol, ``F`` kcal/mol/Å, ``z``), including the
  files of ``hegnn data xtb``, whose metadata record states their units;
- revised MD17 ``.npz`` (``nuclear_charges``, ``coords``, ``energies``, ``forces``;
  kcal/mol);
- the project's canonical ``.npz`` written by :func:`write_canonical` (eV, units in
  its metadata);
- anything ``ase.io.read`` reads with energies and forces (extxyz, ...): the energy
  unit is not in such files, so it must be given (forces are per Å in that unit).

Conversions use ``ase.units``. Positions are always Å. Knows nothing of graphs.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import units

from hegnn import keys
from hegnn_serve.training.data.store import file_sha256, read_metadata, write_npz

logger = logging.getLogger(__name__)

CANONICAL_FORMAT = "hegnn-md17"
NPZ_FORMATS: dict[str, tuple[str, ...]] = {  # keys of numbers, positions, E, F
    CANONICAL_FORMAT: ("numbers", "positions", "energies", "forces"),
    "sgdml": ("z", "R", "E", "F"),
    "rmd17": ("nuclear_charges", "coords", "energies", "forces"),
}
ENERGY_UNITS: dict[str, float] = {  # eV per unit
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
    "Hartree": units.Hartree,
}


@dataclass(frozen=True)
class MD17Frames:
    """Frames of one molecule: energies in eV, forces in eV/Å, positions in Å."""

    numbers: np.ndarray  # [n_atoms] atomic numbers Z
    positions: np.ndarray  # [n_frames, n_atoms, 3] Å
    energies: np.ndarray  # [n_frames] eV, float64
    forces: np.ndarray  # [n_frames, n_atoms, 3] eV/Å
    source: dict[str, Any] = field(default_factory=dict)  # file, format, units, ...

    def __post_init__(self) -> None:
        n_frames, n_atoms = self.positions.shape[:2]
        expected = {
            "numbers": (n_atoms,),
            "positions": (n_frames, n_atoms, 3),
            "energies": (n_frames,),
            "forces": (n_frames, n_atoms, 3),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"{name}: expected shape {shape}, got {getattr(self, name).shape}"
                )

    def __len__(self) -> int:
        return len(self.energies)


SPLIT_NAMES = ("train", "val", "test")


def subset(frames: MD17Frames, index: np.ndarray) -> MD17Frames:
    """The frames at ``index`` (the source record is not carried)."""
    return MD17Frames(
        numbers=frames.numbers,
        positions=frames.positions[index],
        energies=frames.energies[index],
        forces=frames.forces[index],
    )


def split_frames(
    frames: MD17Frames, sizes: tuple[int, int, int], seed: int
) -> dict[str, MD17Frames]:
    """Train / val / test: the frames shuffled by ``default_rng(seed)``, cut into
    ``sizes`` in that order."""
    if sum(sizes) > len(frames):
        raise ValueError(f"sizes: {sizes} need {sum(sizes)} frames, have {len(frames)}")
    order = np.random.default_rng(seed).permutation(len(frames))
    bounds = np.cumsum((0, *sizes))
    return {
        name: subset(frames, order[bounds[k] : bounds[k + 1]])
        for k, name in enumerate(SPLIT_NAMES)
    }


def fingerprint(positions: np.ndarray, numbers: np.ndarray) -> bytes:
    """One frame's atoms (species, position to 1e-4 Å) in a canonical order, so
    the same configuration matches whatever order a file lists its atoms in."""
    rows = np.column_stack([numbers, np.round(positions, 4)])
    return rows[np.lexsort(rows.T[::-1])].tobytes()


def unseen(frames: MD17Frames, *seen: MD17Frames) -> np.ndarray:
    """Indices of ``frames`` that are no configuration of any ``seen`` (to 1e-4 Å,
    in any atom order)."""
    known = {fingerprint(x, s.numbers) for s in seen for x in s.positions}
    return np.array(
        [
            i
            for i, x in enumerate(frames.positions)
            if fingerprint(x, frames.numbers) not in known
        ],
        dtype=int,
    )


def energy_factor(unit: str) -> float:
    """eV per ``unit``; ValueError listing the known units."""
    if unit not in ENERGY_UNITS:
        raise ValueError(
            f"unit: unknown energy unit {unit!r}; known: {list(ENERGY_UNITS)}"
        )
    return ENERGY_UNITS[unit]


def _frames(
    numbers, positions, energies, forces, unit: str, source: dict[str, Any]
) -> MD17Frames:
    """Build frames from raw arrays in ``unit`` (energy) and ``unit``/Å (forces)."""
    factor = energy_factor(unit)
    return MD17Frames(
        numbers=np.asarray(numbers, dtype=np.int64).reshape(-1),
        positions=np.asarray(positions, dtype=np.float64),
        energies=np.asarray(energies, dtype=np.float64).reshape(-1) * factor,
        forces=np.asarray(forces, dtype=np.float64) * factor,
        source={**source, "energy_unit_in_file": unit},
    )


def _npz_unit(meta: dict[str, Any] | None, default: str, unit: str | None) -> str:
    """The unit stated by the file's metadata, else ``unit``, else ``default``."""
    stated = (meta or {}).get("units", {}).get("energy")
    if stated and unit and unit != stated:
        raise ValueError(f"unit: file states energies in {stated}, not {unit}")
    return stated or unit or default


def _npz_format(path: Path, npz) -> str:
    """Which of :data:`NPZ_FORMATS` an opened .npz is; ValueError if none."""
    meta = read_metadata(npz) or {}
    if meta.get("format") == CANONICAL_FORMAT:
        return CANONICAL_FORMAT
    for fmt in ("sgdml", "rmd17"):
        if set(NPZ_FORMATS[fmt]) <= set(npz.files):
            return fmt
    raise ValueError(
        f"{path}: not an MD17 file; expected keys R,E,F,z (sGDML) or "
        f"nuclear_charges,coords,energies,forces (rMD17), got {sorted(npz.files)}"
    )


def load_frames(path: str | Path, unit: str | None = None) -> MD17Frames:
    """Read any supported file (see the module docstring) into eV and Å.

    ``unit`` is the energy unit of the file: required for ase-readable files (extxyz),
    optional for .npz files (default kcal/mol for sGDML and rMD17; files with a
    metadata record use the units it states, and a different ``unit`` is an error).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {path}")
    source: dict[str, Any] = {"file": str(path), "file_sha256": file_sha256(path)}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            fmt, meta = _npz_format(path, npz), read_metadata(npz)
            arrays = [npz[k] for k in NPZ_FORMATS[fmt]]
        file_unit = _npz_unit(meta, "kcal/mol", unit)
        source.update(format=fmt, metadata=meta)
        frames = _frames(*arrays, unit=file_unit, source=source)
    else:
        frames = _load_ase(path, unit, source)
    logger.info(
        "read %d frames of %d atoms from %s (%s, energies in %s)",
        len(frames),
        len(frames.numbers),
        path,
        frames.source["format"],
        frames.source["energy_unit_in_file"],
    )
    return frames


def _load_ase(path: Path, unit: str | None, source: dict[str, Any]) -> MD17Frames:
    """Frames from a file ase.io reads; every frame needs energy and forces."""
    if unit is None:
        raise ValueError(
            f"unit: the energy unit of {path.name} is not stored in the file; pass "
            f"it (one of {list(ENERGY_UNITS)}; forces are per Å in the same unit), "
            "e.g. `hegnn data md17 FILE --unit kcal/mol`"
        )
    energy_factor(unit)
    from ase.io import read

    images = read(path, index=":")
    if not images:
        raise ValueError(f"{path}: no frames")
    numbers = images[0].numbers
    energies, forces = [], []
    for k, atoms in enumerate(images):
        if not np.array_equal(atoms.numbers, numbers):
            raise ValueError(f"{path}: frame {k} has other atoms than frame 0")
        results = atoms.calc.results if atoms.calc is not None else {}
        if "energy" not in results or "forces" not in results:
            raise ValueError(f"{path}: frame {k} has no energy and forces")
        energies.append(results["energy"])
        forces.append(results["forces"])
    positions = np.stack([a.positions for a in images])
    source["format"] = "ase:" + path.suffix.lstrip(".")
    return _frames(numbers, positions, energies, forces, unit, source)


def write_canonical(frames: MD17Frames, path: str | Path) -> dict[str, Any]:
    """Write ``frames`` as the project's .npz (eV, eV/Å, Å); return the metadata."""
    arrays = {
        "numbers": frames.numbers,
        "positions": frames.positions,
        "energies": frames.energies,
        "forces": frames.forces,
    }
    metadata = {
        "format": CANONICAL_FORMAT,
        "version": 1,
        "generator": "hegnn-serve training.data.md17",
        "units": dict(keys.POTENTIAL_UNITS),
        "n_frames": len(frames),
        "n_atoms": len(frames.numbers),
        "source": {k: v for k, v in frames.source.items() if k != "metadata"},
        "source_metadata": frames.source.get("metadata"),
    }
    metadata = write_npz(path, arrays, metadata)
    logger.info("wrote %s (%d frames, eV)", path, len(frames))
    return metadata
