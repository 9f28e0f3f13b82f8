"""What the degeneration argument predicts for each toy cell, and whether a result
agrees (HEGNN.md §6 "Prediction": chance is 50 ± 5 %, success ≥ 95 %)."""

from hegnn_serve.training.expressivity.toy_model import ToySpec

CHANCE = 50.0
CHANCE_TOLERANCE = 5.0  # at chance: |accuracy - 50| <= 5 (%)
SUCCESS = 95.0  # sees orientation: accuracy >= 95 (%)


def sees_orientation(spec: ToySpec, blind: list[int]) -> bool:
    """True if some degree l >= 1 that the readout uses is not blind.

    Every model also reads out the pooled displacement, a degree-1 vector (EGNN reads
    nothing else); degree 0 is rotation invariant and never counts.
    """
    degrees = {1} | set(spec.readout_degrees)
    return any(d not in blind for d in degrees - {0})


def agrees(mean_accuracy: float, sees: bool) -> bool:
    """Whether a cell's mean accuracy (%) matches the prediction."""
    if sees:
        return mean_accuracy >= SUCCESS
    return abs(mean_accuracy - CHANCE) <= CHANCE_TOLERANCE
