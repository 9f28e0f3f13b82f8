"""Shared check: a training graph is the served graph of the same structure."""

import torch


def assert_served_graph_plus(g, served, *targets: str) -> None:
    """``g`` is ``served`` (same fields, dtypes and values) plus ``targets``."""
    assert set(g.keys()) == {*served.keys(), *targets}
    for key in served.keys():
        a, b = g[key], served[key]
        if isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a, b), key
        else:
            assert a == b, key
