"""Device names -> ``torch.device``, in one place: ``auto`` is CUDA when present."""

import torch


def resolve_device(
    name: str | torch.device | None = "auto", local_rank: int | None = None
) -> torch.device:
    """``auto``/None -> CUDA if available, else CPU; ``cuda`` without CUDA is an
    error. A bare ``cuda`` becomes ``cuda:local_rank`` when a rank is given (DDP)."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {name!r} requested but CUDA is not available")
        if device.index is None and local_rank is not None:
            device = torch.device("cuda", local_rank)
    return device
