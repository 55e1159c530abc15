"""Tests of the models package: vision, graph, registry, checkpoints."""
