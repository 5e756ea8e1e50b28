"""Shared math and infrastructure used by every layer (registry, group statistics, sharding)."""
