"""Simulation helpers for the tests, the benchmarks and the example data: synthetic study sets
with planted effects, SDM folders written from them, and the CLBP example's simulated peaks."""
