"""Predictor: one loaded model and its card; arrays in (Å), arrays out (eV, eV/Å).

Knows nothing of HTTP. ``prepare`` checks one structure against the model (species,
required inputs, distances, cell) and builds its graph; ``forces`` evaluates many
prepared structures in one batched model call (torch_geometric ``Batch``);
``rollout`` propagates dynamics models by their Δt. Errors are ``InputError`` with
the offending field's path.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.spatial import cKDTree
from torch import nn
from torch_geometric.data import Batch, Data
from vesin import NeighborList

from hegnn import ModelCard, keys, load, make_graph_data
from service.errors import InputError, LimitError

logger = logging.getLogger(__name__)

# N-body positions are in simulation units: only coincident bodies are refused.
COINCIDENT = 1e-6
POTENTIAL_UNITS = {"energy": "eV", "forces": "eV/Å", "positions": "Å"}


@dataclass(frozen=True)
class StructureInput:
    """Raw arrays of one structure, shape-checked by the schemas (float64)."""

    positions: NDArray[np.float64]  # [n, 3] Å (N-body: simulation units)
    numbers: NDArray[np.int64] | None = None  # [n]
    velocities: NDArray[np.float64] | None = None  # [n, 3]
    charges: NDArray[np.float64] | None = None  # [n]
    cell: NDArray[np.float64] | None = None  # [3, 3] Å, rows are lattice vectors
    pbc: NDArray[np.bool_] | None = None  # [3]

    @property
    def periodic(self) -> bool:
        return self.pbc is not None and bool(self.pbc.any())


@dataclass(frozen=True)
class Prepared:
    """A checked structure as a graph in the model's dtype, ready to batch."""

    data: Data
    n_atoms: int


@dataclass(frozen=True)
class ForceResult:
    """Energy (eV) and forces ``[n, 3]`` (eV/Å) of one structure."""

    energy: float
    forces: NDArray[np.float64]

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.energy) and np.isfinite(self.forces).all())


class Predictor:
    """One loaded model and its card, served under ``name`` (the folder name)."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        card: ModelCard,
        device: torch.device,
        min_distance: float = 0.5,
        max_edges: int = 200_000,
    ) -> None:
        self.name = name
        # Serving never trains: without parameter gradients, autograd records only
        # what F = -dE/dx needs (faster, less memory for batches).
        self.model = model.requires_grad_(False)
        self.card = card
        self.config = card.model
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.min_distance = min_distance
        self.max_edges = max_edges

    @classmethod
    def load(
        cls,
        directory: Path,
        device: torch.device,
        dtype: torch.dtype | None = None,
        **limits: float,
    ) -> "Predictor":
        """Load a checkpoint folder (CheckpointError if it cannot be trusted)."""
        model, card = load(directory, device=device, dtype=dtype)
        return cls(directory.name, model, card, device, **limits)

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def features(self) -> str:
        return self.config.features

    @property
    def units(self) -> dict[str, str]:
        """Units of this model's inputs and outputs, as stated in answers."""
        if self.task == keys.TASK_POTENTIAL:
            return dict(POTENTIAL_UNITS)
        in_angstrom = self.features == "md17-traj"
        return {
            "positions": self.card.units.get(
                "positions", "Å" if in_angstrom else "simulation length unit"
            ),
            "velocities": self.card.units.get(
                "velocities",
                self.card.model_extra.get("velocity_unit", "training units (card)"),
            ),
            "time": self.card.units.get("time", "velocity time unit"),
        }

    # -- checks ----------------------------------------------------------------

    def prepare(self, s: StructureInput) -> Prepared:
        """Check one structure against this model and build its graph."""
        self._check_inputs(s)
        self._check_cell(s)
        self._check_distances(s)
        try:
            data = make_graph_data(
                self.config,
                s.positions,
                numbers=s.numbers,
                velocities=None if self.features == "species" else s.velocities,
                charges=s.charges,
                cell=s.cell if s.periodic else None,
                pbc=s.pbc if s.periodic else None,
                dtype=self.dtype,
            )
        except ValueError as err:  # the library names the field: "cell: ..."
            field, _, message = str(err).partition(": ")
            known = field in ("positions", "numbers", "cell", "pbc")
            raise InputError(
                (field if known else "positions",), message if known else str(err)
            ) from err
        n_edges = data[keys.EDGE_INDEX].shape[1]
        if n_edges > self.max_edges:
            raise LimitError(
                ("positions",),
                f"the graph has {n_edges} edges, more than this server's "
                f"{self.max_edges} (HEGNN_MAX_EDGES); atoms too dense or cell too "
                "small",
            )
        return Prepared(data, len(s.positions))

    def _check_inputs(self, s: StructureInput) -> None:
        """Each feature rule needs its own inputs and refuses the others."""
        needs = {
            "species": ("numbers",),
            "nbody": ("velocities", "charges"),
            "md17-traj": ("velocities", "numbers"),
        }[self.features]
        unused = {
            "species": ("charges",),  # velocities: MD initial state only
            "nbody": ("numbers", "cell", "pbc"),
            "md17-traj": ("charges", "cell", "pbc"),
        }[self.features]
        kind = f"{self.task} model ({self.features})"
        for field in needs:
            if getattr(s, field) is None:
                raise InputError((field,), f"required by this {kind}")
        for field in unused:
            value = getattr(s, field)
            if value is not None and (field != "pbc" or value.any()):
                raise InputError((field,), f"not used by this {kind}; remove it")
        species = self.config.species
        if species and s.numbers is not None:
            unknown = sorted(set(s.numbers.tolist()) - set(species))
            if unknown:
                raise InputError(
                    ("numbers",),
                    f"species {unknown} not known to this model "
                    f"(knows {list(species)})",
                )

    def _check_cell(self, s: StructureInput) -> None:
        if not s.periodic:
            return
        if s.cell is None:
            raise InputError(("cell",), "periodic boundaries (pbc) need a cell")
        volume = abs(float(np.linalg.det(s.cell)))
        if volume < 1e-9:
            raise InputError(
                ("cell",),
                "periodic boundaries need a cell of non-zero volume (give all "
                "three lattice vectors, also along non-periodic directions)",
            )
        for k in np.flatnonzero(s.pbc):
            # Perpendicular width of the cell along lattice vector k.
            area = np.linalg.norm(np.cross(s.cell[(k + 1) % 3], s.cell[(k + 2) % 3]))
            width = volume / area if area > 0 else 0.0
            if not width >= self.min_distance:
                raise InputError(
                    ("cell",),
                    f"the cell is {width:.3g} Å wide along periodic vector {k}; "
                    f"at least {self.min_distance} Å needed",
                )

    def _check_distances(self, s: StructureInput) -> None:
        """No pair (periodic images included) closer than the minimum distance."""
        cutoff = COINCIDENT if self.features == "nbody" else self.min_distance
        if s.periodic:
            nl = NeighborList(cutoff=cutoff, full_list=False)
            i, j, dist = nl.compute(
                points=np.ascontiguousarray(s.positions),
                box=np.ascontiguousarray(s.cell),
                periodic=[bool(p) for p in s.pbc],
                quantities="ijd",
            )
            if not len(dist):
                return
            k = int(np.argmin(dist))
            pair, closest = (int(i[k]), int(j[k])), float(dist[k])
        elif len(s.positions) > 1:
            nearest, index = cKDTree(s.positions).query(s.positions, k=2)
            k = int(np.argmin(nearest[:, 1]))
            pair, closest = (k, int(index[k, 1])), float(nearest[k, 1])
            if closest >= cutoff:
                return
        else:
            return
        unit = "simulation units" if self.features == "nbody" else "Å"
        images = " (periodic images included)" if s.periodic else ""
        raise InputError(
            ("positions",),
            f"atoms {min(pair)} and {max(pair)} are {closest:.3g} {unit} "
            f"apart{images}; the minimum is {cutoff:g} {unit}",
        )

    # -- evaluation --------------------------------------------------------------

    def _batch(self, prepared: Sequence[Prepared]) -> Batch:
        return Batch.from_data_list([p.data for p in prepared]).to(self.device)

    def forces(self, prepared: Sequence[Prepared]) -> list[ForceResult]:
        """Energies and forces of many structures in one model call, in order."""
        batch = self._batch(prepared)
        with torch.enable_grad():
            out = self.model(batch)
        energy = out[keys.ENERGY].detach().cpu().to(torch.float64).numpy()
        forces = out[keys.FORCES].detach().cpu().to(torch.float64).numpy()
        bounds = batch.ptr.cpu().numpy()
        return [
            ForceResult(float(energy[k]), forces[bounds[k] : bounds[k + 1]])
            for k in range(len(prepared))
        ]

    def rollout(
        self, prepared: Sequence[Prepared], steps: int, every: int = 1
    ) -> list[NDArray[np.float64]]:
        """Positions after every ``every``-th Δt: ``[steps // every, n, 3]`` each."""
        batch = self._batch(prepared)
        frames = self.model.rollout(batch, steps)  # [steps, n_total, 3]
        kept = frames[every - 1 :: every].cpu().to(torch.float64).numpy()
        bounds = batch.ptr.cpu().numpy()
        return [kept[:, bounds[k] : bounds[k + 1]] for k in range(len(prepared))]

    @property
    def delta_t(self) -> float:
        return float(self.card.delta_t if self.card.delta_t is not None else 1.0)

    def summary(self) -> dict:
        """What /v1/models lists for this model."""
        return {
            "name": self.name,
            "task": self.task,
            "features": self.features,
            "species": list(self.config.species) if self.config.species else None,
            "units": self.units,
            "metrics": self.card.metrics,
            "delta_t": self.card.delta_t,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "model": self.config.model_dump(mode="json"),
        }
