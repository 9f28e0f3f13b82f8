"""The performance benchmarks of DESIGN.md §10, run by `hegnn bench`.

The CLI lives in training/bench.py; this package is not installed with the project
and runs from a source checkout.
"""
