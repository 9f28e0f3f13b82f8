"""MD17 trajectory rule (GMN protocol): heavy atoms on a bond + 2-hop graph."""

import numpy as np
import torch
from torch import Tensor

from hegnn import keys
from hegnn.errors import InputError
from hegnn.graph import bond_2hop_graph, count_bond_2hop_edges
from hegnn.rules.base import InputRule
from hegnn.structure import StructureInput

HYDROGEN = 1
Z_SCALE = 10.0  # constant scale for Z (not the batch maximum: see HEGNN.md §3.5)


class MD17TrajRule(InputRule):
    """Node s_i = [|v_i|, Z_i/10]; edge e_ij = [Z_i/10, Z_j/10, 1 if two-hop else 0,
    |x_ij|^2 at the input frame].

    Edges: pairs closer than ``bond_cutoff`` Å plus pairs two bonds apart, built
    from the given positions (training: from the trajectory's frame 0). With
    ``heavy_atoms_only`` the model sees no hydrogens, as in the protocol.
    """

    name = "md17-traj"
    task = "dynamics"
    required = (keys.VELOCITIES, keys.NUMBERS)
    refused = (keys.CHARGES, keys.CELL, keys.PBC)
    uses = (keys.VELOCITIES, keys.NUMBERS)
    node_dim = 2
    edge_dim = 4

    def check(self, s: StructureInput) -> None:
        super().check(s)
        if self.config.heavy_atoms_only:
            hydrogens = np.flatnonzero(s.numbers == HYDROGEN)
            if len(hydrogens):
                shown = hydrogens[:10].tolist()
                more = f" and {len(hydrogens) - 10} more" if len(hydrogens) > 10 else ""
                raise InputError(
                    keys.NUMBERS,
                    f"hydrogen at atoms {shown}{more}: this model takes heavy atoms "
                    "only (heavy_atoms_only in its card); remove the hydrogens",
                )

    def atom_mask(self, numbers: np.ndarray) -> np.ndarray:
        if self.config.heavy_atoms_only:
            return np.asarray(numbers) != HYDROGEN
        return super().atom_mask(numbers)

    def edges(self, positions, cell=None, pbc=None) -> dict[str, Tensor]:
        edge_index, hop = bond_2hop_graph(positions, self.config.bond_cutoff)
        return {keys.EDGE_INDEX: edge_index, keys.EDGE_HOP: hop}

    def count_edges(self, positions, cell=None, pbc=None) -> int:
        return count_bond_2hop_edges(positions, self.config.bond_cutoff)

    def attributes(self, data, x_ij: Tensor) -> tuple[Tensor, Tensor]:
        j, i = data[keys.EDGE_INDEX]
        dtype = x_ij.dtype
        speed = data[keys.VELOCITIES].norm(dim=-1, keepdim=True)
        z = data[keys.NUMBERS].to(dtype) / Z_SCALE
        two_hop = (data[keys.EDGE_HOP] == 2).to(dtype).unsqueeze(-1)
        d2 = (x_ij * x_ij).sum(dim=-1, keepdim=True)
        node = torch.cat([speed, z.unsqueeze(-1)], dim=-1)
        edge = torch.cat([z[i].unsqueeze(-1), z[j].unsqueeze(-1), two_hop, d2], dim=-1)
        return node, edge

    def describe(self) -> str:
        atoms = "heavy atoms only" if self.config.heavy_atoms_only else "all atoms"
        return (
            f"bonds (< {self.config.bond_cutoff} Å in the input frame) + 2-hop pairs, "
            f"{atoms}"
        )
