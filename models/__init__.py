"""Networks built from plstm_core: PLSTMVision, PLSTMGraph, baselines, registry, checkpoints."""
