"""Datasets, training loop, metrics export and experiments; writes checkpoints for models/."""
