"""Networks built from plstm_core: PLSTMVision, PLSTMGraph, baselines, registry, checkpoints."""

from models.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, save_checkpoint
from models.registry import create_model, list_models, register_model
from models.vision import PLSTMVision, ViT

__all__ = [
    "CheckpointError",
    "LoadedCheckpoint",
    "PLSTMVision",
    "ViT",
    "create_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
]
