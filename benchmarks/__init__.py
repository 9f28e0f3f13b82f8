"""The performance benchmarks of DESIGN.md §10; `hegnn bench` is benchmarks/cli.py.

They read the shipped checkpoint and geometries of the source checkout they run from
(`pip install -e .`); their results go to benchmarks/results/, which is not installed.
"""
