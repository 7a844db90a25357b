"""Quantum Pipeline on Dagster: VQE simulations to Iceberg feature tables."""

__version__ = "0.1.0"
