"""Predictor: one loaded model and its card; arrays in (Å), arrays out (eV, eV/Å).

Knows nothing of HTTP. ``prepare`` checks one structure against the model (its input
rule's checks, then distances and cell) and builds its graph through
``hegnn.make_graph_data``; ``forces`` evaluates many prepared structures in one
batched model call (torch_geometric ``Batch``); ``rollout`` propagates dynamics
models by their Δt. Input errors are hegnn's ``InputError`` with the offending
field's path.
"""

import copy
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.spatial import cKDTree
from torch import nn
from torch_geometric.data import Batch, Data
from vesin import NeighborList

from hegnn import (
    Committee,
    ModelCard,
    compile_backbones,
    keys,
    load,
    make_graph_data,
)
from hegnn.rules import input_rule
from hegnn.structure import StructureInput, centred
from hegnn_serve.service.errors import InputError, LimitError

logger = logging.getLogger(__name__)

__all__ = ["EdgeBudget", "ForceResult", "Predictor", "Prepared", "StructureInput"]


@dataclass(frozen=True)
class Prepared:
    """A checked structure as a graph in the model's dtype, ready to batch; its
    positions were centred (``hegnn.structure.centred``): the input positions are
    the graph's plus ``shift``."""

    data: Data
    n_atoms: int
    n_edges: int = 0
    shift: NDArray[np.float64] | None = None  # [1, 3] or [n, 3]


@dataclass(frozen=True)
class ForceResult:
    """Energy (eV) and forces ``[n, 3]`` (eV/Å) of one structure; a committee's
    also their spread: ``energy_std`` (eV), ``forces_std`` ``[n]`` and
    ``max_force_std`` (eV/Å)."""

    energy: float
    forces: NDArray[np.float64]
    energy_std: float | None = None
    forces_std: NDArray[np.float64] | None = None
    max_force_std: float | None = None

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.energy) and np.isfinite(self.forces).all())


class EdgeBudget:
    """Graph edges inside model calls at once, over all models of the process.

    A model call's memory grows with its edges (about 10 kB per edge for an L=3
    force field with forces), so this bounds the process's memory when several
    models' batches and MD jobs run at once: a call waits until its edges fit. A
    call larger than the whole budget runs alone.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, edges: int) -> Iterator[None]:
        edges = min(edges, self.capacity)
        with self._cond:
            self._cond.wait_for(lambda: self.in_use + edges <= self.capacity)
            self.in_use += edges
        try:
            yield
        finally:
            if edges >= TRIM_EDGES:
                _malloc_trim()  # before the next call may take these edges
            with self._cond:
                self.in_use -= edges
                self._cond.notify_all()


TRIM_EDGES = 10_000  # calls this large give their freed memory back to the OS


def _load_malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0), or a no-op elsewhere.

    Each thread allocates from its own malloc arena, and memory freed in one arena
    is not reused by the next thread's call: without a trim, the process keeps the
    peak of every thread that ran a large call (measured: 3.1 GB for three
    99k-edge calls in turn, 1.4 GB with the trim).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


_malloc_trim = _load_malloc_trim()


class Predictor:
    """One loaded model and its card, served under ``name`` (the folder name)."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        card: ModelCard,
        device: torch.device,
        min_distance: float = 0.5,
        max_edges: int = 100_000,
    ) -> None:
        self.name = name
        # Serving never trains: without parameter gradients, autograd records only
        # what F = -dE/dx needs (faster, less memory for batches).
        self.model = model.requires_grad_(False)
        self.card = card
        self.config = card.model
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.rule = input_rule(self.config)
        self.min_distance = min_distance
        self.max_edges = max_edges
        self.budget: EdgeBudget | None = None  # shared by the registry's models

    @classmethod
    def load(
        cls,
        directory: Path,
        device: torch.device,
        dtype: torch.dtype | None = None,
        compile: bool = False,
        **limits: float,
    ) -> "Predictor":
        """Load a checkpoint folder (CheckpointError if it cannot be trusted).
        ``compile``: a force field is compiled (``hegnn.compile_backbones``) and
        warmed up here, so no request waits for the compiler."""
        model, card = load(directory, device=device, dtype=dtype)
        predictor = cls(directory.name, model, card, device, **limits)
        if compile and predictor.task == keys.TASK_POTENTIAL:
            start = time.perf_counter()
            try:
                compile_backbones(predictor.model)
                predictor.warm_up()
            except Exception as err:  # e.g. no C++ compiler for inductor on a CPU
                logger.warning(
                    "%s: torch.compile failed, serving it uncompiled: %s: %s",
                    directory.name,
                    type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "",
                )
                return cls.load(directory, device, dtype, **limits)
            logger.info(
                "compiled %s in %.0f s", directory.name, time.perf_counter() - start
            )
        return predictor

    def warm_up(self) -> None:
        """One energy + forces call on a made-up molecule of the model's species
        (3 or more atoms on a helix, neighbours 1.25 Å apart); a committee's
        stacked and looped paths both."""
        species = self.config.species or (1,)
        n = max(3, len(species))
        turn = np.arange(n, dtype=np.float64)
        positions = np.stack([np.cos(turn), np.sin(turn), 0.8 * turn], axis=-1)
        numbers = np.resize(np.asarray(species, dtype=np.int64), n)
        molecule = self.prepare(StructureInput(positions, numbers=numbers))
        self.forces([molecule])
        if isinstance(self.model, Committee):  # large batches run members in turn
            with self.model.looped():
                self.forces([molecule])

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
            return dict(
                keys.COMMITTEE_UNITS if self.committee else keys.POTENTIAL_UNITS
            )
        stated = self.card.units
        return {
            keys.POSITIONS: stated.get(keys.POSITIONS, self.rule.length_unit),
            keys.VELOCITIES: stated.get(
                keys.VELOCITIES,
                self.card.model_extra.get("velocity_unit", "training units (card)"),
            ),
            keys.TIME: stated.get(keys.TIME, "velocity time unit"),
        }

    # -- checks ----------------------------------------------------------------

    def check(self, s: StructureInput) -> int:
        """Check one structure's inputs and cell; its number of graph edges
        (counted, not built), LimitError over HEGNN_MAX_EDGES."""
        self.rule.check(s)  # required/refused inputs, species, heavy atoms
        self._check_cell(s)
        n_edges = self.rule.count_edges(
            s.positions, s.cell if s.periodic else None, s.pbc if s.periodic else None
        )
        if n_edges > self.max_edges:
            raise LimitError(
                keys.POSITIONS,
                f"the graph would have {n_edges} edges, more than this server's "
                f"{self.max_edges} per structure (HEGNN_MAX_EDGES); atoms too dense "
                "or cell too small",
            )
        return n_edges

    def prepare(self, s: StructureInput, n_edges: int | None = None) -> Prepared:
        """Check one structure against this model and build its graph, centred
        next to the origin. ``n_edges``: ``check(s)`` was already called."""
        if n_edges is None:
            n_edges = self.check(s)
        self._check_distances(s)
        moved, shift = centred(s)
        data = make_graph_data(  # the rule keeps the inputs it uses
            self.config,
            moved.positions,
            numbers=moved.numbers,
            velocities=moved.velocities,
            charges=moved.charges,
            cell=moved.cell if moved.periodic else None,
            pbc=moved.pbc if moved.periodic else None,
            dtype=self.dtype,
        )
        return Prepared(data, len(s.positions), n_edges, shift)

    def _check_cell(self, s: StructureInput) -> None:
        if not s.periodic:
            return
        if s.cell is None:
            raise InputError(keys.CELL, "periodic boundaries (pbc) need a cell")
        volume = abs(float(np.linalg.det(s.cell)))
        if volume < 1e-9:
            raise InputError(
                keys.CELL,
                "periodic boundaries need a cell of non-zero volume (give all "
                "three lattice vectors, also along non-periodic directions)",
            )
        for k in np.flatnonzero(s.pbc):
            # Perpendicular width of the cell along lattice vector k.
            area = np.linalg.norm(np.cross(s.cell[(k + 1) % 3], s.cell[(k + 2) % 3]))
            width = volume / area if area > 0 else 0.0
            if not width >= self.min_distance:
                raise InputError(
                    keys.CELL,
                    f"the cell is {width:.3g} Å wide along periodic vector {k}; "
                    f"at least {self.min_distance} Å needed",
                )

    def _check_distances(self, s: StructureInput) -> None:
        """No pair (periodic images included) closer than the rule's minimum."""
        cutoff = self.rule.min_distance(self.min_distance)
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
        unit = self.rule.length_unit
        images = " (periodic images included)" if s.periodic else ""
        raise InputError(
            keys.POSITIONS,
            f"atoms {min(pair)} and {max(pair)} are {closest:.3g} {unit} "
            f"apart{images}; the minimum is {cutoff:g} {unit}",
        )

    # -- evaluation --------------------------------------------------------------

    def _batch(self, prepared: Sequence[Prepared]) -> Batch:
        return Batch.from_data_list([p.data for p in prepared]).to(self.device)

    def forces(self, prepared: Sequence[Prepared]) -> list[ForceResult]:
        """Energies and forces of many structures in one model call, in order."""
        if len(prepared) == 1:  # one graph needs no collation (0.2 ms a call)
            batch = copy.copy(prepared[0].data).to(self.device)
            batch[keys.POSITIONS] = batch[keys.POSITIONS].detach()  # input untouched
        else:
            batch = self._batch(prepared)
        with self._hold(sum(p.n_edges for p in prepared)), torch.enable_grad():
            out = self.model(batch)
        found = {
            key: out[key].detach().cpu().to(torch.float64).numpy()
            for key in (*keys.COMMITTEE_OUTPUTS, keys.ENERGY, keys.FORCES)
            if key in out
        }
        bounds = np.cumsum([0, *(p.data.num_nodes for p in prepared)])
        results = []
        for k in range(len(prepared)):
            atoms = slice(bounds[k], bounds[k + 1])
            spread = {}
            if self.committee:
                spread = {
                    "energy_std": float(found[keys.ENERGY_STD][k]),
                    "forces_std": found[keys.FORCES_STD][atoms],
                    "max_force_std": float(found[keys.MAX_FORCE_STD][k]),
                }
            energy = float(found[keys.ENERGY][k])
            results.append(ForceResult(energy, found[keys.FORCES][atoms], **spread))
        return results

    def rollout(
        self,
        prepared: Sequence[Prepared],
        steps: int,
        every: int = 1,
        check: Callable[[], None] | None = None,
    ) -> list[NDArray[np.float64]]:
        """Positions after every ``every``-th Δt: ``[steps // every, n, 3]`` each,
        moved back where the input was. ``check`` runs before each Δt step and
        may raise to stop the rollout (deadline, cancellation)."""
        batch = self._batch(prepared)
        frames = self.model.rollout(batch, steps, check)  # [steps, n_total, 3]
        kept = frames[every - 1 :: every].cpu().to(torch.float64).numpy()
        bounds = batch.ptr.cpu().numpy()
        out = []
        for k, p in enumerate(prepared):
            x = kept[:, bounds[k] : bounds[k + 1]]
            out.append(x if p.shift is None else x + p.shift)
        return out

    def _hold(self, edges: int):
        return self.budget.hold(edges) if self.budget is not None else nullcontext()

    @property
    def committee(self) -> bool:
        return self.card.committee is not None

    @property
    def threshold(self) -> float | None:
        """The card's ``max_force_std`` above which an answer is flagged."""
        if not self.committee:
            return None
        value = self.card.committee.uncertainty.get("threshold_max_force_std")
        return None if value is None else float(value)

    def committee_summary(self) -> dict | None:
        """Members, seeds and calibration of a committee, for /v1/models."""
        if not self.committee:
            return None
        spec = self.card.committee
        return {
            "members": [m.model_dump(mode="json") for m in spec.members],
            "uncertainty": spec.uncertainty,
        }

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
            "committee": self.committee_summary(),
        }
