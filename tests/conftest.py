import torch

# Small graphs run fastest on one thread, and CI has two cores for everything.
torch.set_num_threads(1)
