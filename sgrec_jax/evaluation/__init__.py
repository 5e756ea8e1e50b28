"""Evaluation: ranking metrics, paired bootstrap between systems, multi-seed results tables."""
