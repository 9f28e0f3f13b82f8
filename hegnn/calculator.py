"""In-process ASE calculator for potential checkpoints (no server needed)."""

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
)

from hegnn import keys
from hegnn.checkpoint import load
from hegnn.compiled import compile_backbones
from hegnn.device import resolve_device
from hegnn.inputs import make_graph_data
from hegnn.rules import input_rule
from hegnn.structure import StructureInput, centred


class HEGNNCalculator(Calculator):
    """Energy (eV) and forces (eV/Å) from a potential checkpoint, in this process.

    ``HEGNNCalculator("checkpoints/md17-aspirin-ff-hegnn")``; ``device`` defaults to
    CUDA when available. Uses the cell and pbc of the Atoms. Positions are centred
    (periodic: wrapped into the cell) in float64 before the model, so answers do
    not depend on where the structure sits. A committee checkpoint adds
    ``energy_std`` (eV), ``forces_std`` (per atom, eV/Å) and ``max_force_std``
    (eV/Å) to ``calc.results``, as ``RemoteCalculator`` does; ``threshold`` is
    its card's calibrated ``max_force_std`` flag level (None without one).
    ``compile=True`` runs the model through ``torch.compile`` (``compile_backbones``):
    the first calculation compiles (15-40 s on a CPU), later ones are about 2x
    faster on a CPU.
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    uncertainty_properties = [keys.ENERGY_STD, keys.FORCES_STD, keys.MAX_FORCE_STD]

    def __init__(
        self,
        checkpoint: str | Path,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        compile: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.device = resolve_device(device)
        self.model, self.card = load(checkpoint, device=self.device, dtype=dtype)
        if compile:
            compile_backbones(self.model)
        self.rule = input_rule(self.card.model)
        if self.card.task != keys.TASK_POTENTIAL:
            raise ValueError(
                f"{checkpoint}: task {self.card.task!r}; HEGNNCalculator needs a "
                "potential model"
            )
        self.dtype = next(self.model.parameters()).dtype
        self.threshold: float | None = None
        if self.card.committee is not None:
            found = self.card.committee.uncertainty.get("threshold_max_force_std")
            self.threshold = None if found is None else float(found)
            self.implemented_properties = [
                *type(self).implemented_properties,
                *self.uncertainty_properties,
            ]

    def calculate(
        self, atoms=None, properties=None, system_changes=all_changes
    ) -> None:
        properties = properties or ["energy"]
        unknown = set(properties) - set(self.implemented_properties)
        if unknown:
            raise PropertyNotImplementedError(f"HEGNNCalculator: {sorted(unknown)}")
        super().calculate(atoms, properties, system_changes)
        structure = StructureInput.from_atoms(self.atoms)
        self.rule.check(structure)
        structure, _ = centred(structure)  # float64, before a float32 model
        data = make_graph_data(
            self.card.model,
            structure.positions,
            numbers=structure.numbers,
            cell=structure.cell,
            pbc=structure.pbc,
            dtype=self.dtype,
        ).to(self.device)
        out = self.model(data)
        energy = float(out[keys.ENERGY].detach().sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out[keys.FORCES].detach().cpu().numpy().astype(np.float64),
        }
        if keys.ENERGY_STD in out:
            self.results.update(
                energy_std=float(out[keys.ENERGY_STD].sum()),
                forces_std=out[keys.FORCES_STD].cpu().numpy().astype(np.float64),
                max_force_std=float(out[keys.MAX_FORCE_STD].sum()),
            )
