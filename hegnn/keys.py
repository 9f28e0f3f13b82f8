"""Field names, shapes and units used from data files to JSON. One vocabulary.

Edges are directed j -> i: ``edge_index[0]`` is the source j, ``edge_index[1]`` the
target i, and a message m_ij is aggregated at i.
"""

from typing import Final

POSITIONS: Final = "positions"  # [n_atoms, 3] Å (N-body: simulation units)
NUMBERS: Final = "numbers"  # [n_atoms] atomic numbers Z
VELOCITIES: Final = "velocities"  # [n_atoms, 3] Å/fs, or dataset units (model card)
CHARGES: Final = "charges"  # [n_atoms] N-body charges q = ±1
BATCH: Final = "batch"  # [n_atoms] index of each atom's graph
EDGE_INDEX: Final = "edge_index"  # [2, n_edges] row 0 source j, row 1 target i
EDGE_SHIFTS: Final = "edge_shifts"  # [n_edges, 3] Å, x_ij = x_i - x_j + shift (PBC)
EDGE_HOP: Final = "edge_hop"  # [n_edges] 1 = bond, 2 = two-hop (md17-traj graph)
CELL: Final = "cell"  # [3, 3] Å, rows are lattice vectors
PBC: Final = "pbc"  # [3] bool
ENERGY: Final = "energy"  # [n_graphs] eV (float64)
FORCES: Final = "forces"  # [n_atoms, 3] eV/Å
TARGET_POSITIONS: Final = "target_positions"  # [n_atoms, 3] positions after Δt
# Committees (N members): spread of the members around their mean.
ENERGY_STD: Final = "energy_std"  # [n_graphs] eV, std of the members' energies
FORCES_STD: Final = "forces_std"  # [n_atoms] eV/Å, RMS deviation of member forces
MAX_FORCE_STD: Final = "max_force_std"  # [n_graphs] eV/Å, max of forces_std per graph
COMMITTEE_OUTPUTS: Final = (ENERGY_STD, FORCES_STD, MAX_FORCE_STD)

TASK_POTENTIAL: Final = "potential"
TASK_DYNAMICS: Final = "dynamics"

# Units of every field, as in ASE; defined here only. Dynamics models state theirs
# in the card (N-body: simulation units; MD17 trajectory: Å per frame).
TIME: Final = "time"
MASS: Final = "mass"
UNITS: Final = {
    POSITIONS: "Å",
    VELOCITIES: "Å/fs",
    ENERGY: "eV",
    FORCES: "eV/Å",
    ENERGY_STD: "eV",
    FORCES_STD: "eV/Å",
    MAX_FORCE_STD: "eV/Å",
    CELL: "Å",
    TIME: "fs",
    MASS: "amu",
}
# What a potential model's answers are in, and what server-side MD adds.
POTENTIAL_UNITS: Final = {k: UNITS[k] for k in (ENERGY, FORCES, POSITIONS)}
COMMITTEE_UNITS: Final = {
    **POTENTIAL_UNITS,
    **{k: UNITS[k] for k in COMMITTEE_OUTPUTS},
}
MD_UNITS: Final = {**POTENTIAL_UNITS, VELOCITIES: UNITS[VELOCITIES], TIME: UNITS[TIME]}
