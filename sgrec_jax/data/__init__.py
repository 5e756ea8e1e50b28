"""Datasets: one in-memory type, loaders for public formats, the split, the input pipeline."""
