"""Species rule (force fields): one-hot Z on a radius graph with cutoff r_max."""

import torch
from torch import Tensor

from hegnn import keys
from hegnn.errors import InputError
from hegnn.graph import count_radius_edges, radius_graph
from hegnn.rules.base import InputRule
from hegnn.structure import StructureInput


class SpeciesRule(InputRule):
    """Node s_i = one-hot(Z_i) over the model's species; no static edge attributes.

    Edges: every pair closer than ``r_max`` Å, periodic images included when the
    structure has ``pbc`` (vesin). Velocities are accepted (initial MD state) but
    not used by the model.
    """

    name = "species"
    task = "potential"
    required = (keys.NUMBERS,)
    refused = (keys.CHARGES,)
    uses = (keys.NUMBERS,)
    edge_dim = 0

    def __init__(self, config) -> None:
        super().__init__(config)
        self.species: tuple[int, ...] = tuple(config.species or ())
        self.node_dim = len(self.species)

    def validate_config(self) -> None:
        super().validate_config()
        if not self.species:
            raise ValueError("species: a species model needs the atomic numbers")
        if self.config.r_max is None:
            raise ValueError("r_max: a species model needs a cutoff radius")

    def check(self, s: StructureInput) -> None:
        super().check(s)
        unknown = set(s.numbers.tolist()) - set(self.species)
        if unknown:
            raise self._unknown(unknown)

    def species_index(self, numbers: Tensor) -> Tensor:
        """Index of each atom's Z in the species list; InputError for unknown Z."""
        species = torch.as_tensor(self.species, device=numbers.device)
        match = numbers.unsqueeze(-1) == species  # [n_atoms, n_species]
        self._check_known(numbers, match.any(dim=-1))
        return match.long().argmax(dim=-1)

    # A data-dependent branch: outside torch.compile's graph (a clean break, no
    # recompiles and no warning)
    @torch.compiler.disable
    def _check_known(self, numbers: Tensor, known: Tensor) -> None:
        if not bool(known.all()):
            raise self._unknown(set(numbers[~known].tolist()))

    def _unknown(self, unknown: set[int]) -> InputError:
        return InputError(
            keys.NUMBERS,
            f"species {sorted(unknown)} not known to this model "
            f"(knows {list(self.species)})",
        )

    def edges(self, positions, cell=None, pbc=None) -> dict[str, Tensor]:
        edge_index, shifts = radius_graph(positions, self.config.r_max, cell, pbc)
        return {keys.EDGE_INDEX: edge_index, keys.EDGE_SHIFTS: shifts}

    def count_edges(self, positions, cell=None, pbc=None) -> int:
        return count_radius_edges(positions, self.config.r_max, cell, pbc)

    def attributes(self, data, x_ij: Tensor) -> tuple[Tensor, Tensor]:
        index = self.species_index(data[keys.NUMBERS])
        node = torch.nn.functional.one_hot(index, self.node_dim).to(x_ij.dtype)
        return node, x_ij.new_zeros((*x_ij.shape[:-1], 0))

    def describe(self) -> str:
        return (
            f"radius graph, cutoff {self.config.r_max} Å, polynomial envelope "
            f"p={self.config.envelope_p} (vesin)"
        )
