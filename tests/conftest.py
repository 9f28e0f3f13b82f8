import torch

# Small graphs run fastest on one thread, and CI has two cores for everything.
torch.set_num_threads(1)


def unboxed(output: str) -> str:
    """Rich wraps a CLI error in a box as wide as the terminal, so a long path splits
    the message across lines: join the box back into words."""
    return " ".join(output.translate(str.maketrans("│╭╮╰╯─", "      ")).split())
