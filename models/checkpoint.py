"""Self-describing checkpoints: a directory that rebuilds its model without any Python object.

Layout (DESIGN.md section 5), written by :func:`save_checkpoint`:

- ``model.safetensors``: the state dict, weights only (never pickle), optionally cast to
  bf16 / fp16.
- ``config.json``: ``format_version`` (1), ``architecture`` (the registry name), ``config``
  (``model.config``: every constructor argument), ``labels``, ``input`` (input spec),
  ``preprocessing``, ``weights_sha256``, ``weights_dtype``, ``num_parameters``,
  ``model_class``, ``torch_version``, ``plstm_version``, ``created_utc``, ``extra``.
- ``metrics.json``: ``{result name: {"dataset", "split", "seed", ...values}}`` (may be ``{}``).

Training may add more files (e.g. curves as PNG); :func:`load_checkpoint` ignores them.
All JSON is strict (no NaN / Infinity).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.registry import check_model_arguments, create_model, model_entry

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
METRIC_KEYS = ("dataset", "split", "seed")
"""Every entry of metrics.json says what it was measured on."""
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


MISSING = "missing"
INVALID_METADATA = "invalid_metadata"
CORRUPT = "corrupt"
MISMATCH = "mismatch"


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete, corrupt or does not match its model. ``problem``
    says which: :data:`MISSING` (a file or the directory is absent), :data:`INVALID_METADATA`
    (config.json / metrics.json unreadable or invalid, or a config its architecture cannot be
    built from), :data:`CORRUPT` (weights that fail their sha256 or cannot be read) or
    :data:`MISMATCH` (weights that do not fit the architecture)."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What :func:`load_checkpoint` returns; ``model`` is in eval mode."""

    model: nn.Module
    architecture: str
    config: dict[str, Any]
    labels: list[str]
    metrics: dict[str, Any]
    input_spec: Any
    preprocessing: Any
    extra: Any
    weights_sha256: str
    weights_dtype: str
    directory: Path
    metadata: dict[str, Any]
    """The whole config.json."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dtype(value: torch.dtype | str | None, what: str) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        if value is not None and value not in WEIGHT_DTYPES.values():
            raise ValueError(f"{what} must be one of {list(WEIGHT_DTYPES)}, got {value}")
        return value
    if value not in WEIGHT_DTYPES:
        raise ValueError(f"{what} must be one of {list(WEIGHT_DTYPES)}, got {value!r}")
    return WEIGHT_DTYPES[value]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _json_text(value: Any, what: str) -> str:
    try:
        return json.dumps(value, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable (no NaN/Infinity): {exc}") from None


def _write_atomic(path: Path, write: Any) -> None:
    """Write through a temporary file in the same directory, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics must be a mapping, got {type(metrics).__name__}")
    for key, result in metrics.items():
        if not isinstance(key, str):
            raise ValueError(f"metrics keys must be strings, got {key!r}")
        if not isinstance(result, Mapping):
            raise ValueError(f"metrics[{key!r}] must be a mapping, got {type(result).__name__}")
        missing = [k for k in METRIC_KEYS if k not in result]
        if missing:
            raise ValueError(f"metrics[{key!r}] lacks {missing} (needs {list(METRIC_KEYS)})")
    return {k: dict(v) for k, v in metrics.items()}


def _package_version() -> str | None:
    try:
        return metadata.version("plstm")
    except metadata.PackageNotFoundError:
        return None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside ``torch.compile`` (``_orig_mod``) and (Distributed)DataParallel
    (``module``) wrappers, which prefix the state-dict keys."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    name: str,
    labels: Sequence[str],
    metrics: Mapping[str, Any] | None = None,
    input_spec: Any = None,
    preprocessing: Any = None,
    dtype: torch.dtype | str | None = None,
    extra: Any = None,
) -> Path:
    """Write ``model`` as a checkpoint directory (created if needed; its files are replaced).

    ``name`` is the registry name that rebuilds the model from ``model.config``; ``labels``
    the class names (or regression target names; may be empty, else one per output);
    ``metrics`` ``{result name: {"dataset", "split", "seed", ...}}``; ``input_spec``,
    ``preprocessing`` and ``extra`` any JSON values; ``dtype`` casts the floating weights
    (e.g. ``torch.bfloat16``; default: as they are, float32/fp16/bf16 only). Every argument is
    validated before anything is written (ValueError). Files are written atomically,
    config.json last. A ``torch.compile`` / DistributedDataParallel / DataParallel wrapper is
    unwrapped first, so the keys are those of the bare model. Returns the directory.
    """
    model = unwrap_model(model)
    entry = model_entry(name)
    if entry.model_class is not None and not isinstance(model, entry.model_class):
        raise ValueError(
            f"model is a {type(model).__name__} but {name!r} builds a {entry.model_class.__name__}"
        )
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(f"{type(model).__name__} has no config dict; it cannot be rebuilt")
    check_model_arguments(name, **config)
    if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"labels must be a sequence of strings, got {labels!r}")
    labels = list(labels)
    num_outputs = config.get("num_classes")
    if labels and isinstance(num_outputs, int) and len(labels) != num_outputs:
        raise ValueError(f"{len(labels)} labels for a model with {num_outputs} outputs")
    metrics = _check_metrics({} if metrics is None else metrics)
    cast = _dtype(dtype, "dtype")

    state = {}
    for key, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu")
        if cast is not None and t.is_floating_point():
            t = t.to(cast)
        elif t.is_floating_point() and t.dtype not in WEIGHT_DTYPES.values():
            raise ValueError(f"weight {key!r} has dtype {t.dtype}; pass dtype= to cast it")
        state[key] = t.contiguous()
    float_dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    weights_dtype = "/".join(sorted(_dtype_name(d) for d in float_dtypes)) or "none"

    for value, what in (
        (config, "model.config"),
        (input_spec, "input_spec"),
        (preprocessing, "preprocessing"),
        (extra, "extra"),
    ):
        _json_text(value, what)
    metrics_text = _json_text(metrics, "metrics")

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    _write_atomic(weights, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    document = {
        "format_version": FORMAT_VERSION,
        "architecture": name,
        "config": config,
        "labels": labels,
        "input": input_spec,
        "preprocessing": preprocessing,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": file_sha256(weights),
        "weights_dtype": weights_dtype,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "torch_version": torch.__version__,
        "plstm_version": _package_version(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "extra": extra,
    }
    _write_atomic(directory / METRICS_FILE, lambda p: p.write_text(metrics_text))
    config_text = _json_text(document, "config.json")
    _write_atomic(directory / CONFIG_FILE, lambda p: p.write_text(config_text))
    return directory


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing checkpoint file", MISSING)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})", INVALID_METADATA) from None


def read_checkpoint_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The validated config.json of a checkpoint, without reading or checking the weights."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory", MISSING)
    path = directory / CONFIG_FILE
    document = _read_json(path)
    if not isinstance(document, dict):
        raise CheckpointError(f"{path}: expected a JSON object", INVALID_METADATA)
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})",
            INVALID_METADATA,
        )
    for key, kind in (
        ("architecture", str),
        ("config", dict),
        ("labels", list),
        ("weights_sha256", str),
    ):
        if not isinstance(document.get(key), kind):
            raise CheckpointError(
                f"{path}: field {key!r} is missing or not a {kind.__name__}", INVALID_METADATA
            )
    return document


def load_checkpoint(
    directory: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> LoadedCheckpoint:
    """Rebuild a model from a checkpoint directory alone (``create_model`` + safetensors).

    The weights' sha256 must match config.json; the state dict must match the rebuilt model
    exactly (no missing or unexpected keys, same shapes). The model is moved to ``device``,
    cast to ``dtype`` (float32 / float16 / bfloat16) and put in eval mode.
    Raises :class:`CheckpointError` (a ValueError) naming the file or keys at fault.
    """
    directory = Path(directory)
    cast = _dtype(dtype, "dtype")
    document = read_checkpoint_metadata(directory)
    metrics = _read_json(directory / METRICS_FILE)
    if not isinstance(metrics, dict):
        raise CheckpointError(
            f"{directory / METRICS_FILE}: expected a JSON object", INVALID_METADATA
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing checkpoint file", MISSING)
    actual = file_sha256(weights)
    if actual != document["weights_sha256"]:
        raise CheckpointError(
            f"{weights}: sha256 {actual} does not match {document['weights_sha256']} "
            f"recorded in {CONFIG_FILE} (corrupt or modified weights)",
            CORRUPT,
        )

    architecture = document["architecture"]
    try:
        model = create_model(architecture, **document["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{directory / CONFIG_FILE}: cannot rebuild {architecture!r}: {exc}",
            INVALID_METADATA,
        ) from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc})", CORRUPT) from None

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match {architecture!r}: missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}",
            MISMATCH,
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{weights}: {key!r} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected[key].shape)}",
                MISMATCH,
            )
    model.load_state_dict(state, strict=True)
    model.to(device=device)
    if cast is not None:
        model.to(dtype=cast)
    model.eval()
    return LoadedCheckpoint(
        model=model,
        architecture=architecture,
        config=document["config"],
        labels=document["labels"],
        metrics=metrics,
        input_spec=document.get("input"),
        preprocessing=document.get("preprocessing"),
        extra=document.get("extra"),
        weights_sha256=actual,
        weights_dtype=document.get("weights_dtype", "unknown"),
        directory=directory,
        metadata=document,
    )
