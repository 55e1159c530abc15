"""The model repository: ``<root>/<model name>/<version>/`` directories, one checkpoint each.

A version directory is the checkpoint directory itself (``config.json``, ``model.safetensors``,
``metrics.json``) or holds exactly one such directory. Versions are positive integers written
without leading zeros; other directory names are skipped with a warning. Every version is
loaded with :func:`models.checkpoint.load_checkpoint` (which verifies the weights' sha256),
warmed up on every inference path, given its cost profile (predicted time and memory per path,
timed on a few sizes when warm-up is on: :mod:`app.serving.cost_calibration`) and then marked READY;
any failure marks only that version UNAVAILABLE with a reason class (:mod:`app.serving.model_state`)
and logs the details. A model directory without any version is kept as a model without
versions (reason ``no_versions``).

With ``onnx=True`` (``PLSTM_ONNX``) every loaded version also gets an ONNX Runtime session
(:func:`attach_onnx`): the export ``model.onnx`` next to the checkpoint is reused when its
sidecar shows it was made from these weights, else the model is exported there (or, when the
checkpoint directory is read-only, under :data:`ONNX_CACHE_DIR`); the session is warmed up
and checked against torch before ``path=onnx`` is offered. Any ONNX failure only leaves the
version on its torch paths: the details are logged, and ``entry.onnx_error`` keeps a summary
without file paths, which clients may see.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.core.errors import ApiError
from app.core.settings import Settings, model_process_threads
from app.serving import backends
from app.serving.cost_calibration import build_cost_profile
from app.serving.cost_profile import CostProfile
from app.serving.cuda_graphs import InferenceGraphs
from app.serving.model_state import (
    ARCHITECTURE_UNSUPPORTED,
    CHECKPOINT_AMBIGUOUS,
    CHECKPOINT_CORRUPT,
    CHECKPOINT_MISMATCH,
    CHECKPOINT_MISSING,
    CONFIG_INVALID,
    LOAD_FAILED,
    NO_VERSIONS,
    READY,
    UNAVAILABLE,
    WARMUP_FAILED,
    LoadFailure,
    ModelUnavailable,
)
from models import checkpoint as ckpt
from models.capabilities import ModelCapabilities
from models.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_metadata,
)
from models.input_spec import native_image_size
from models.molecule_features import MolGraph
from models.onnx.export import DEFAULT_MAX_GRAPH_NODES
from models.registry import model_entry

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "bfloat16")
"""Values of the ``inference_precision`` setting (:func:`autocast_dtype`)."""

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
WARMUP_GRAPH_NODES = 6
ONNX_CACHE_DIR = Path(tempfile.gettempdir()) / "plstm-onnx"
"""Where exports go when a checkpoint directory cannot be written (read-only repository)."""
ONNX_TOLERANCE = 1e-3
"""Largest max-abs difference of ONNX vs torch outputs on the warm-up input."""
CHECKPOINT_REASONS = {
    ckpt.MISSING: CHECKPOINT_MISSING,
    ckpt.INVALID_METADATA: CONFIG_INVALID,
    ckpt.CORRUPT: CHECKPOINT_CORRUPT,
    ckpt.MISMATCH: CHECKPOINT_MISMATCH,
}
"""The reason class of each :class:`models.checkpoint.CheckpointError` problem."""


class ModelNotFound(ApiError, KeyError):
    """No such model, or no such version of it (404)."""

    status_code = 404

    def __init__(self, name: str, version: int | None = None) -> None:
        self.name = name
        self.version = version
        what = f"model {name!r}" if version is None else f"model {name!r} version {version}"
        super().__init__(self.status_code, f"{what} not found")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(eq=False)
class ModelEntry:
    """One version of one model. ``model`` is None unless the checkpoint loaded; ``state``
    is READY only after a successful warm-up, else UNAVAILABLE with ``reason`` (a class of
    :mod:`app.serving.model_state`, shown to clients) and ``detail`` (for the log only)."""

    name: str
    version: int
    directory: Path
    state: str = UNAVAILABLE
    reason: str | None = None
    detail: str | None = None
    architecture: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    input_spec: Any = None
    preprocessing: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None
    model: nn.Module | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    onnx_session: Any = None
    """ONNX Runtime session (see :mod:`app.serving.backends`); None unless ONNX is enabled and
    ready."""
    onnx_export: dict[str, Any] | None = None
    """The export's sidecar (models.onnx.export) plus ``file`` and ``providers``."""
    onnx_error: str | None = None
    """Why ONNX is enabled but not available for this version."""
    graphs: InferenceGraphs | None = field(default=None, repr=False)
    """CUDA-graph cache of the image forward (:mod:`app.serving.cuda_graphs`); None = always
    eager."""
    cost: CostProfile | None = field(default=None, repr=False)
    """Predicted time and memory per path (:mod:`app.serving.cost_profile`); None for a model that
    is not loaded."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Held while the model runs: switching the pLSTM method is not thread-safe."""
    autocast_dtype: torch.dtype | None = None
    """The dtype the model calls run under autocast in; None: float32 (see
    :func:`autocast_dtype`)."""

    @property
    def capabilities(self) -> ModelCapabilities | None:
        """What the architecture declares (:mod:`models.capabilities`); None when unknown."""
        return architecture_capabilities(self.architecture)

    @property
    def kind(self) -> str | None:
        """``"image"`` or ``"graph"`` from the architecture; None when it is unknown."""
        capabilities = self.capabilities
        return None if capabilities is None else capabilities.kind

    @property
    def ready(self) -> bool:
        return self.state == READY

    def mark_unavailable(self, reason: str, detail: str) -> None:
        """UNAVAILABLE for ``reason`` (drops the model); ``detail`` is logged."""
        self.model = None
        self.state, self.reason, self.detail = UNAVAILABLE, reason, detail
        logger.error(
            "model %s version %d is UNAVAILABLE (%s): %s", self.name, self.version, reason, detail
        )

    def unavailable(self) -> ModelUnavailable:
        """The error that answers requests for this version while it is UNAVAILABLE."""
        return ModelUnavailable(self.name, self.version, self.reason or LOAD_FAILED)

    def onnx_status(self) -> dict[str, Any] | None:
        """ONNX state for metadata: None when ONNX is off; else ``available`` and either the
        export's ``providers``, ``opset``, ``image_size`` / ``max_graph_nodes`` and
        ``weights_sha256`` (of the weights it was exported from), or the ``error``."""
        if self.onnx_export is None and self.onnx_error is None:
            return None
        if self.onnx_session is None or self.onnx_export is None:
            return {"available": False, "error": self.onnx_error}
        keys = ("providers", "opset", "image_size", "max_graph_nodes", "weights_sha256")
        return {
            "available": True,
            **{k: self.onnx_export[k] for k in keys if k in self.onnx_export},
        }


def architecture_capabilities(architecture: str | None) -> ModelCapabilities | None:
    """What the registered ``architecture`` declares it can do; None when it is unknown or
    declares nothing (it cannot be served)."""
    if architecture is None:
        return None
    try:
        return model_entry(architecture).capabilities
    except ValueError:
        return None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → cuda when available, else cpu; ``"cuda"`` without CUDA → ValueError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def _parse_version(name: str) -> int | None:
    if not name.isdigit() or name.startswith("0"):
        return None
    return int(name)


def _checkpoint_dir(version_dir: Path) -> Path:
    """The checkpoint directory of a version (the version dir itself or its only child that
    holds a config.json); :class:`LoadFailure` saying what is there instead."""
    if (version_dir / CONFIG_FILE).is_file():
        return version_dir
    children = sorted(p for p in version_dir.iterdir() if (p / CONFIG_FILE).is_file())
    if len(children) == 1:
        return children[0]
    if children:
        names = [p.name for p in children]
        raise LoadFailure(
            CHECKPOINT_AMBIGUOUS, f"{version_dir}: several checkpoints {names}, expected one"
        )
    if not any(version_dir.iterdir()):
        raise LoadFailure(
            CHECKPOINT_MISSING, f"{version_dir}: empty version directory (no checkpoint)"
        )
    raise LoadFailure(CHECKPOINT_MISSING, f"{version_dir}: no checkpoint ({CONFIG_FILE} not found)")


@contextlib.contextmanager
def _failing_as(reason: str) -> Iterator[None]:
    """Turns what a loading step raises into :class:`LoadFailure`: checkpoint errors by their
    problem (:data:`CHECKPOINT_REASONS`), other ValueError / OSError / RuntimeError as
    ``reason``."""
    try:
        yield
    except CheckpointError as exc:
        raise LoadFailure(CHECKPOINT_REASONS.get(exc.problem, reason), str(exc)) from exc
    except (ValueError, OSError, RuntimeError) as exc:
        raise LoadFailure(reason, str(exc)) from exc


def _warmup_image(entry: ModelEntry) -> torch.Tensor:
    height, width = native_image_size(entry.input_spec, entry.config)
    chans = int(entry.config.get("in_chans", 3))
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, chans, height, width, generator=gen)


def _warmup_graph(entry: ModelEntry) -> MolGraph:
    """A random chain of :data:`WARMUP_GRAPH_NODES` nodes with the model's feature sizes."""
    gen = torch.Generator().manual_seed(0)
    n = WARMUP_GRAPH_NODES
    nodes = int(entry.config["num_node_features"])
    edges = int(entry.config.get("num_edge_features", 0))
    edge_index = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    return MolGraph(
        torch.rand(n, nodes, generator=gen), edge_index, torch.rand(n - 1, edges, generator=gen)
    )


def warm_up(entry: ModelEntry) -> None:
    """Run every explicit inference path of ``entry`` once on a dummy input of the training
    size (with CUDA graphs: once per batch-size bucket, capturing them); ValueError if a path
    fails or gives non-finite outputs."""
    for path in backends.model_paths(entry):
        if entry.kind == "image":
            image = _warmup_image(entry)
            sizes = [1]
            if entry.graphs is not None and path == "parallel":
                sizes = [1 << i for i in range(entry.graphs.max_batch.bit_length())]
            for n in sizes:
                out = backends.run_images(entry, image.expand(n, -1, -1, -1), path)
        else:
            out = backends.run_graphs(entry, [_warmup_graph(entry)], path)
        if not torch.isfinite(out).all():
            raise ValueError(f"warm-up on path {path!r} gave non-finite outputs")


def _onnx_providers(device: torch.device) -> list[str]:
    """CUDA then CPU as onnxruntime has them; CPU only when the models run on the CPU."""
    from models.onnx.runtime import session_providers

    providers = session_providers()
    if device.type != "cuda":
        providers = [p for p in providers if p != "CUDAExecutionProvider"]
    return providers or ["CPUExecutionProvider"]


def _onnx_agreement(entry: ModelEntry) -> float:
    """max |onnx − parallel| on the warm-up input."""
    if entry.kind == "image":
        image = _warmup_image(entry)
        onnx = backends.run_images(entry, image, "onnx")
        torch_out = backends.run_images(entry, image, "parallel")
    else:
        graphs = [_warmup_graph(entry)]
        onnx = backends.run_graphs(entry, graphs, "onnx")
        torch_out = backends.run_graphs(entry, graphs, "parallel")
    if not bool(torch.isfinite(onnx).all()):
        return float("inf")
    return float((onnx - torch_out).abs().max())


def attach_onnx(entry: ModelEntry, max_graph_nodes: int, cache_dir: Path | None = None) -> bool:
    """Give a loaded ``entry`` its ONNX Runtime session (module docstring); True on success.
    Never raises: on failure the torch paths stay, ``entry.onnx_error`` names the kind of
    error (the message, which may hold file paths, is logged)."""
    from models.onnx.export import ensure_export
    from models.onnx.runtime import create_session

    cache = ONNX_CACHE_DIR if cache_dir is None else cache_dir
    entry.onnx_session = entry.onnx_export = entry.onnx_error = None
    try:
        try:
            export = ensure_export(
                entry.directory, model=entry.model, max_graph_nodes=max_graph_nodes
            )
        except OSError as exc:  # e.g. a read-only model repository: export to the cache
            out = cache / entry.name / str(entry.version) / "model.onnx"
            logger.warning(
                "model %s version %d: %s; exporting to %s", entry.name, entry.version, exc, out
            )
            export = ensure_export(
                entry.directory, model=entry.model, out=out, max_graph_nodes=max_graph_nodes
            )
        session = create_session(export.path, _onnx_providers(entry.device))
        entry.onnx_export = {
            **export.info,
            "file": str(export.path),
            "providers": list(session.get_providers()),
            "reused": export.reused,
        }
        entry.onnx_session = session
        diff = _onnx_agreement(entry)
        if not diff <= ONNX_TOLERANCE:
            raise ValueError(
                f"ONNX Runtime disagrees with torch on the warm-up input by {diff:.3g} "
                f"(tolerance {ONNX_TOLERANCE})"
            )
    except Exception as exc:  # an optional path: whatever fails, the model keeps its torch paths
        entry.onnx_session = entry.onnx_export = None
        entry.onnx_error = f"ONNX unavailable: {type(exc).__name__} (see the server log)"
        logger.warning(
            "model %s version %d: ONNX unavailable: %s: %s",
            entry.name,
            entry.version,
            type(exc).__name__,
            exc,
        )
        return False
    logger.info(
        "model %s version %d: ONNX %s %s on %s",
        entry.name,
        entry.version,
        "reused" if export.reused else "exported to",
        export.path,
        ", ".join(entry.onnx_export["providers"]),
    )
    return True


class ModelRepository:
    """Loads and holds every model version under ``path`` on ``device`` ("auto" | "cpu" |
    "cuda" | a torch.device). ``onnx``: also serve ONNX exports (:func:`attach_onnx`), for
    graph components of up to ``onnx_max_graph_nodes`` nodes (the server passes
    ``max_atoms``). ``precision``: the models' calls in float32 or under bf16 autocast
    (:func:`autocast_dtype`)."""

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        warmup: bool = True,
        *,
        onnx: bool = False,
        onnx_max_graph_nodes: int = DEFAULT_MAX_GRAPH_NODES,
        cuda_graphs: bool = False,
        max_batch_size: int = 64,
        max_request_memory_mb: float | None = None,
        precision: str = "auto",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.path = Path(path)
        self.precision = precision
        self.device = resolve_device(device)
        self.warmup = warmup
        self.onnx = onnx
        self.onnx_max_graph_nodes = onnx_max_graph_nodes
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.max_batch_size = max_batch_size
        self.max_request_memory_mb = max_request_memory_mb
        self._entries: dict[str, dict[int, ModelEntry]] = {}
        self._unversioned: list[str] = []

    def load_all(self) -> list[ModelEntry]:
        """Scan the repository and load every version (replacing what was loaded before).
        ValueError if the repository directory does not exist."""
        if not self.path.is_dir():
            raise ValueError(f"model repository {self.path} is not a directory")
        entries: dict[str, dict[int, ModelEntry]] = {}
        unversioned: list[str] = []
        for model_dir in sorted(p for p in self.path.iterdir() if p.is_dir()):
            if not MODEL_NAME.match(model_dir.name):
                logger.warning("skipping %s: not a valid model name", model_dir)
                continue
            versions: dict[int, ModelEntry] = {}
            for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
                version = _parse_version(version_dir.name)
                if version is None:
                    logger.warning("skipping %s: versions are positive integers", version_dir)
                    continue
                versions[version] = self._load(model_dir.name, version, version_dir)
            if versions:
                entries[model_dir.name] = dict(sorted(versions.items()))
            else:
                logger.error(
                    "model %s is UNAVAILABLE (%s): %s holds no version directory",
                    model_dir.name,
                    NO_VERSIONS,
                    model_dir,
                )
                unversioned.append(model_dir.name)
        self._entries = entries
        self._unversioned = unversioned
        return self.entries()

    def _load(self, name: str, version: int, version_dir: Path) -> ModelEntry:
        entry = ModelEntry(name=name, version=version, directory=version_dir, device=self.device)
        try:
            self._load_into(entry, version_dir)
        except LoadFailure as exc:
            entry.mark_unavailable(exc.reason, str(exc))
            return entry
        entry.state = READY
        precision = "float32" if entry.autocast_dtype is None else "bf16 autocast"
        logger.info(
            "model %s version %d READY (%s on %s, %s)",
            name,
            version,
            entry.architecture,
            self.device,
            precision,
        )
        return entry

    def _load_into(self, entry: ModelEntry, version_dir: Path) -> None:
        """Load, check and warm up the checkpoint of ``version_dir`` into ``entry``;
        :class:`LoadFailure` naming the reason class otherwise."""
        with _failing_as(LOAD_FAILED):
            entry.directory = _checkpoint_dir(version_dir)
        # fill in what describes the model even when the weights turn out bad
        with contextlib.suppress(ValueError):
            entry.architecture = read_checkpoint_metadata(entry.directory)["architecture"]
        with _failing_as(LOAD_FAILED):
            checkpoint = load_checkpoint(entry.directory, device=self.device)
        entry.architecture = checkpoint.architecture
        entry.config = dict(checkpoint.model.config)
        entry.labels = list(checkpoint.labels)
        entry.input_spec = checkpoint.input_spec
        entry.preprocessing = checkpoint.preprocessing
        entry.metrics = checkpoint.metrics
        entry.weights_sha256 = checkpoint.weights_sha256
        if entry.kind is None:
            raise LoadFailure(
                ARCHITECTURE_UNSUPPORTED, f"architecture {entry.architecture!r} cannot be served"
            )
        entry.model = checkpoint.model
        entry.autocast_dtype = autocast_dtype(self.precision, self.device, checkpoint.weights_dtype)
        if self.cuda_graphs and entry.kind == "image":
            entry.graphs = InferenceGraphs(max_batch=self.max_batch_size)
        if self.warmup:
            with _failing_as(WARMUP_FAILED):
                warm_up(entry)
        if self.onnx:
            attach_onnx(entry, self.onnx_max_graph_nodes)
        with _failing_as(WARMUP_FAILED):
            entry.cost = build_cost_profile(
                entry, self.max_request_memory_mb, calibrate=self.warmup
            )

    def entries(self) -> list[ModelEntry]:
        """Every version of every model, by name then version."""
        return [e for name in sorted(self._entries) for e in self._entries[name].values()]

    def names(self) -> list[str]:
        """Every model, with versions or without (:meth:`unversioned`)."""
        return sorted([*self._entries, *self._unversioned])

    def unversioned(self) -> list[str]:
        """The models whose directory holds no version (UNAVAILABLE, ``no_versions``)."""
        return list(self._unversioned)

    def versions(self, name: str) -> list[ModelEntry]:
        """The versions of ``name``, lowest first (none for an unversioned model);
        :class:`ModelNotFound` for an unknown model."""
        if name in self._unversioned:
            return []
        if name not in self._entries:
            raise ModelNotFound(name)
        return list(self._entries[name].values())

    def get(self, name: str, version: int | None = None) -> ModelEntry:
        """Version ``version`` of ``name``; without a version the latest: the highest READY
        version, or the highest version when none is ready. :class:`ModelNotFound` for an
        unknown model or version, :class:`ModelUnavailable` for a model without versions."""
        if name in self._unversioned:
            raise ModelUnavailable(name, None, NO_VERSIONS)
        versions = self._entries.get(name)
        if not versions:
            raise ModelNotFound(name)
        if version is not None:
            if version not in versions:
                raise ModelNotFound(name, version)
            return versions[version]
        ready = [e for e in versions.values() if e.ready]
        return ready[-1] if ready else list(versions.values())[-1]


def autocast_dtype(precision: str, device: torch.device, weights_dtype: str) -> torch.dtype | None:
    """The autocast dtype of a model's calls for the ``inference_precision`` setting: bf16 when
    asked for, or with ``auto`` on a GPU for weights stored in bf16; None (float32) otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "bfloat16" or (
        precision == "auto" and device.type == "cuda" and weights_dtype == "bfloat16"
    ):
        return torch.bfloat16
    return None


def build_repository(settings: Settings) -> ModelRepository:
    """The (not yet loaded) repository ``settings`` describe; ValueError when the configured
    device does not exist here. The process that builds it runs the models: its torch threads
    are set to :func:`~app.core.settings.model_process_threads`."""
    torch.set_num_threads(model_process_threads(settings))
    return ModelRepository(
        settings.model_repository,
        settings.device,
        warmup=settings.warmup,
        onnx=settings.onnx,
        onnx_max_graph_nodes=settings.max_atoms,
        cuda_graphs=settings.cuda_graphs,
        max_batch_size=settings.max_batch_size,
        max_request_memory_mb=settings.max_request_memory_mb,
        precision=settings.inference_precision,
    )
