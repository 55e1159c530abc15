"""What one model call costs, by model family and inference path: the terms its time is a sum
of, and its peak memory.

The table :data:`FORMULAS` maps ``(family, path)`` to a :class:`PathFormula`; a new path is one
entry. Formulas take the :class:`Architecture` (from the checkpoint's config) and the size of
one model call: an :class:`ImageBatch` (B images of X×Y patches) or a :class:`GraphBatch` (a
disjoint union of graphs). They follow the cost notes of the ops:

- pLSTM 2D on the CPU (``plstm_core/ops/grid_mix_cpu.py``, :attr:`Architecture.grid_forms`
  ``"cpu"``): ``parallel`` builds ONE summed gating matrix per image and head
  (``grid_mix_summed``): O(B·H·(N2²·Y + N²·(K+V))) time, O(B·H·N2²) memory with N2 = X2·Y
  (X2 = X padded to 2^a or 3·2^a); ``chunkwise`` and ``recurrent`` run the tiled wavefront of
  all four orientations (``grid_mix_tiles``, 4×4 tiles): O(B·H·N·(16·(K+V) + 20·K·V)) time per
  orientation in X/4 + Y/4 − 1 steps, memory linear in N; grids of at most ``SMALL_GRID``
  tokens take the summed form.
- pLSTM 2D on the CPU with the C kernels (``"native"``: model calls without autograd, as the
  server makes them): ``parallel`` builds the summed gating matrix in one sweep per orientation
  (``grid_gating_native``) and contracts it: O(B·H·N²·(K+V)) time, G and the scores in
  memory; ``chunkwise`` and ``recurrent`` run the recurrent kernel
  (``grid_recurrent_native``): O(B·H·4·N·K·V) time, the four orientations' outputs and one
  column of cell states per thread in memory; grids of at most ``NATIVE_SMALL_GRID`` tokens
  take the summed form.
- pLSTM 2D elsewhere (``"reference"``: CUDA, ONNX exports, ``PLSTM_FUSED_LAYER=0``;
  ``plstm_core/ops/grid.py``, four orientations per layer, so P = 4·B·H problems):
  ``parallel`` builds the gating matrix of N2 = X2·Y nodes (X2 = X padded to a power of two)
  in log depth: O(P·N2²·Y) time, O(P·N2²) memory; ``chunkwise`` works on c×c blocks:
  O(P·N·c²·(K+V)) time in nx+ny−1 sequential steps, memory linear in N; ``recurrent`` walks
  the X+Y−1 anti-diagonals: O(P·N·K·V) time, memory of one diagonal's cell states.
- pLSTM DAG with the C kernel (``grid_forms="native"``: the CPU without autograd): either path
  runs the recurrent form of ``plstm_core/ops/dag_native.py``, every edge's state once:
  O(H·(2E + L)·K·V) time, the states of the edges of one head per thread in memory.
- pLSTM DAG (``plstm_core/ops/dag.py``): ``parallel`` pads every component to the largest
  (Nmax nodes, Emax edges) and squares the line-graph transfer J = ⌈log2(Nmax+1)⌉ times:
  O(G·H·(J·Emax²·(Emax+Nmax) + Nmax²·(Emax+K+V))) time, O(G·H·(J·Emax·(Emax+Nmax) + Nmax²))
  memory; ``recurrent`` runs level by level (at most Nmax levels): O((E+L)·H·K·V) time.
- ViT attention O(B·H·N²·K), GIN message passing O((N+E)·D²).

Time terms are counted in multiply-adds, with one elementwise pass over a tensor element worth
:data:`ELEMENTWISE` of them (those passes are memory bound); :mod:`app.serving.cost_profile` fits
one seconds-per-unit constant per term and path from timings at warm-up, so the units need only be
proportional to the real cost within a term. Memory coefficients were fitted to the peak of live
tensors measured with ``bench/peak_memory.py`` (``bench/cost_model.py`` prints the comparison).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from models.molecule_features import MolGraph
from plstm_core.ops.dag_structure import weakly_connected_components
from plstm_core.ops.grid_mix_cpu import NATIVE_SMALL_GRID, SMALL_GRID, grid_mix_cpu_supported
from plstm_core.ops.grid_mix_summed import padded_columns
from plstm_core.ops.grid_mix_tiles import TILE
from plstm_core.ops.native import native_kernels_built

ELEMENTWISE = 16.0
"""Multiply-adds that one elementwise pass over a tensor element costs about as much time as."""
ORIENTATIONS = 4
"""A pLSTM 2D layer runs its op on the four DAG covers of the grid as one batch."""

FAMILIES = ("plstm_vision", "vit", "plstm_graph", "gin")
GRID_FORMS = ("reference", "cpu", "native")
SUMMED_ELEMENTS = 4.5
"""Elements alive per entry of one N2×N2 summed gating matrix (the matrix, the scores and the
merge temporaries), measured with ``bench/peak_memory.py``."""
TILE_ELEMENTS = (340.0, 16.0, 0.55)
"""Elements alive per token and head in the tiled wavefront: a + b·(K+V) + c·K·V (tile gating
matrices, boundary states of all four orientations), fitted to ``bench/peak_memory.py``
measurements at K = V = 8, 16, 32."""
NATIVE_SUMMED_ELEMENTS = 2.0
"""Elements alive per entry of one N×N matrix of the native summed form: G and the scores."""
NATIVE_GATING_MACS = 8.0
"""Multiply-adds of the gating kernel per entry of G (four orientations, each reaching a
quarter of the pairs with about eight operations, and the clearing of G)."""
NATIVE_RECURRENT_MACS = 5.0
"""Multiply-adds of the recurrent kernel per node, orientation and state entry (K·V): the
readout, the two outgoing states and the source term."""


def grid_forms_on(device: torch.device) -> str:
    """The implementation of the pLSTM grid layers' calls without autograd on ``device``:
    ``"native"`` where :func:`plstm_core.ops.grid_mix_cpu.grid_mix_cpu_supported` holds and
    the C kernels are built, ``"cpu"`` where only the former holds, else ``"reference"``."""
    if not grid_mix_cpu_supported(torch.empty(0, device=device)):
        return "reference"
    return "native" if native_kernels_built() else "cpu"


@dataclass(frozen=True)
class Architecture:
    """The sizes of a model that its costs depend on. ``qk_head`` K and ``v_head`` V per
    head; ``stem_widths``: channels of the convolutional stem's stride-2 layers (empty for a
    linear patch stem); ``dtype_bytes``: bytes per element of the model's tensors;
    ``grid_forms``: what runs the pLSTM layers (:func:`grid_forms_on`; ``"native"`` also
    means the DAG layers' C kernel)."""

    family: str
    dim: int
    heads: int
    depth: int
    qk_head: int
    v_head: int
    mlp_ratio: float = 4.0
    patch: int = 1
    chans: int = 3
    chunk: int = 16
    stem_widths: tuple[int, ...] = ()
    node_features: int = 0
    edge_features: int = 0
    dtype_bytes: int = 4
    grid_forms: str = "reference"

    @classmethod
    def from_config(
        cls,
        family: str,
        config: Mapping[str, Any],
        dtype_bytes: int = 4,
        grid_forms: str = "reference",
    ) -> Architecture:
        """The architecture of a model of ``family`` built from ``config`` (a checkpoint's
        model config); ValueError for an unknown family or grid form."""
        if family not in FAMILIES:
            raise ValueError(f"no cost formulas for model family {family!r}")
        if grid_forms not in GRID_FORMS:
            raise ValueError(f"grid_forms must be one of {GRID_FORMS}, got {grid_forms!r}")
        dim, depth = int(config["dim"]), int(config["depth"])
        heads = int(config.get("num_heads", 1))
        qk_dim = int(config.get("qk_dim") or dim)
        common = {
            "family": family,
            "dim": dim,
            "heads": heads,
            "depth": depth,
            "qk_head": qk_dim // heads,
            "v_head": dim // heads,
            "dtype_bytes": dtype_bytes,
            "grid_forms": grid_forms,
        }
        if family in ("plstm_vision", "vit"):
            patch = int(config["patch_size"])
            widths: tuple[int, ...] = ()
            if str(config.get("stem", "patch")).startswith("conv"):
                widths = tuple(min(dim, 32 * 2**i) for i in range(patch.bit_length() - 1))
            return cls(
                **common,
                mlp_ratio=float(config.get("mlp_ratio", 4.0)),
                patch=patch,
                chans=int(config.get("in_chans", 3)),
                chunk=int(config.get("chunk_size", 16)),
                stem_widths=widths,
            )
        return cls(
            **common,
            node_features=int(config["num_node_features"]),
            edge_features=int(config.get("num_edge_features", 0)),
        )

    def to_meta(self) -> dict[str, Any]:
        return {**self.__dict__, "stem_widths": list(self.stem_widths)}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Architecture:
        return cls(**{**meta, "stem_widths": tuple(meta["stem_widths"])})


@dataclass(frozen=True)
class ImageBatch:
    """``batch`` images of ``x`` × ``y`` patches (X from the height, Y from the width)."""

    batch: int
    x: int
    y: int

    @property
    def tokens(self) -> int:
        """Patches of one image."""
        return self.x * self.y

    def join(self, other: ImageBatch) -> ImageBatch:
        """The batch of both (same grid); ValueError for different grids."""
        if (self.x, self.y) != (other.x, other.y):
            raise ValueError(f"cannot batch {self.x}x{self.y} with {other.x}x{other.y} patches")
        return replace(self, batch=self.batch + other.batch)

    def describe(self) -> str:
        what = "image" if self.batch == 1 else f"{self.batch} images"
        return f"{what} of {self.x}x{self.y} patches"


@dataclass(frozen=True)
class GraphBatch:
    """A disjoint union of ``components`` weakly connected graphs: ``nodes`` N, ``edges`` E,
    ``line_edges`` L (pairs of consecutive edges), the largest component's ``max_nodes`` Nmax
    and ``max_edges`` Emax, and ``graphs`` (the molecules it came from)."""

    graphs: int
    components: int
    nodes: int
    edges: int
    line_edges: int
    max_nodes: int
    max_edges: int

    @property
    def tokens(self) -> int:
        """Nodes of the whole batch."""
        return self.nodes

    def join(self, other: GraphBatch) -> GraphBatch:
        return GraphBatch(
            graphs=self.graphs + other.graphs,
            components=self.components + other.components,
            nodes=self.nodes + other.nodes,
            edges=self.edges + other.edges,
            line_edges=self.line_edges + other.line_edges,
            max_nodes=max(self.max_nodes, other.max_nodes),
            max_edges=max(self.max_edges, other.max_edges),
        )

    def describe(self) -> str:
        what = "1 graph" if self.graphs == 1 else f"{self.graphs} graphs"
        return f"{what} of {self.nodes} atoms"

    @classmethod
    def of(cls, graphs: Sequence[MolGraph]) -> GraphBatch:
        """The disjoint union of ``graphs``: its components (weakly connected, by label
        propagation over all graphs at once), their largest sizes and the line edges."""
        if not graphs:
            raise ValueError("no graphs")
        counts = torch.tensor([g.num_nodes for g in graphs])
        offsets = torch.cumsum(counts, 0) - counts
        edge_index = torch.cat(
            [g.edge_index + offset for g, offset in zip(graphs, offsets.tolist(), strict=True)],
            dim=1,
        )
        n = int(counts.sum())
        src, dst = edge_index[0], edge_index[1]
        line = int((torch.bincount(dst, minlength=n) * torch.bincount(src, minlength=n)).sum())
        comp, components = weakly_connected_components(edge_index, n)
        nodes = torch.bincount(comp, minlength=components)
        edges = torch.bincount(comp[src], minlength=components)
        return cls(
            graphs=len(graphs),
            components=max(components, 1),
            nodes=n,
            edges=int(src.numel()),
            line_edges=line,
            max_nodes=int(nodes.max()) if n else 0,
            max_edges=int(edges.max()) if src.numel() else 0,
        )


Size = ImageBatch | GraphBatch
Terms = dict[str, float]


@dataclass(frozen=True)
class PathFormula:
    """``terms(arch, size)``: the time terms of one call (a fitted constant each, see
    :mod:`app.serving.cost_profile`); ``memory(arch, size)``: its peak bytes of live tensors beyond
    the weights (the input included)."""

    terms: Callable[[Architecture, Any], Terms]
    memory: Callable[[Architecture, Any], float]


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


# --- images -------------------------------------------------------------------------------


def _stem_macs(a: Architecture, s: ImageBatch) -> float:
    """Multiply-adds of the patch / conv stem for the whole batch."""
    pixels = s.batch * s.tokens * a.patch**2
    if not a.stem_widths:
        return pixels * a.chans * a.dim
    macs, width, area = 0.0, a.chans, float(pixels)
    for out in a.stem_widths:
        area /= 4
        macs += area * (9 * width * out + ELEMENTWISE * 3 * out)
        width = out
    return macs + area * width * a.dim


def _stem_memory(a: Architecture, s: ImageBatch) -> float:
    """Elements alive while the stem runs: the input, its standardised copy and the first
    convolution's output, norm and activation (a quarter of the pixels each)."""
    pixels = s.batch * s.tokens * a.patch**2
    first = a.stem_widths[0] / 4 * 3 if a.stem_widths else 0.0
    return pixels * (2 * a.chans + first)


def _token_elements(a: Architecture) -> float:
    """Activations alive per token inside a block: residual stream, norm, q/k/v, their four
    oriented copies, the gates of every orientation and the MLP's hidden layer."""
    qkv = 2 * a.heads * a.qk_head + a.dim
    if a.family == "vit":
        return a.dim * (3 + a.mlp_ratio) + qkv * 2
    return a.dim * (3 + a.mlp_ratio) + qkv * (ORIENTATIONS + 1) + 12 * ORIENTATIONS * a.heads


def _dense_macs(a: Architecture, s: ImageBatch) -> float:
    """Projections, gates, MLP and elementwise passes of every block, plus the stem."""
    d = a.dim
    per_token = d * (2 * a.heads * a.qk_head + 2 * d + 2 * a.mlp_ratio * d)
    if a.family == "plstm_vision":
        per_token += d * ORIENTATIONS * a.heads * 6
    per_token += ELEMENTWISE * _token_elements(a)
    return a.depth * s.batch * s.tokens * per_token + _stem_macs(a, s)


def _image_base_memory(a: Architecture, s: ImageBatch) -> float:
    """Elements of the input and of one block's activations."""
    pixels = s.batch * s.tokens * a.patch**2
    blocks = s.batch * s.tokens * _token_elements(a)
    return pixels * a.chans + max(blocks, _stem_memory(a, s))


def _problems(a: Architecture, s: ImageBatch) -> int:
    """Grids the op solves per layer: four orientations × batch × heads."""
    return ORIENTATIONS * s.batch * a.heads


def _grid_parallel_terms(a: Architecture, s: ImageBatch) -> Terms:
    n2 = _next_pow2(s.x) * s.y
    n = s.tokens
    pairs = n2 * n2 * (ELEMENTWISE + s.y / 2) + n * n * (a.qk_head + a.v_head + ELEMENTWISE)
    return {
        "call": 1.0,
        "dense": _dense_macs(a, s),
        "mixer": a.depth * _problems(a, s) * pairs,
    }


def _grid_parallel_memory(a: Architecture, s: ImageBatch) -> float:
    n2 = _next_pow2(s.x) * s.y
    n = s.tokens
    gating = _problems(a, s) * max(2.5 * n2 * n2, 3.0 * n * n)
    return a.dtype_bytes * (_image_base_memory(a, s) + gating)


def _chunk(a: Architecture, s: ImageBatch) -> tuple[int, int, int, int]:
    """Chunk sides (cx, cy) and padded grid (X2, Y2) of the chunkwise form."""
    cx, cy = min(a.chunk, _next_pow2(s.x)), min(a.chunk, _next_pow2(s.y))
    return cx, cy, -(-s.x // cx) * cx, -(-s.y // cy) * cy


def _grid_chunkwise_terms(a: Architecture, s: ImageBatch) -> Terms:
    cx, cy, x2, y2 = _chunk(a, s)
    n, edges = cx * cy, cx + cy
    kv = a.qk_head * a.v_head
    per_node = n * (a.qk_head + a.v_head + ELEMENTWISE) + n * max(cx, cy)
    per_node += (edges * edges + n * edges) * kv / n + edges * kv
    return {
        "call": 1.0,
        "steps": a.depth * (x2 // cx + y2 // cy - 1),
        "work": _dense_macs(a, s) + a.depth * _problems(a, s) * x2 * y2 * per_node,
    }


def _grid_chunkwise_memory(a: Architecture, s: ImageBatch) -> float:
    cx, cy, x2, y2 = _chunk(a, s)
    n, edges = cx * cy, cx + cy
    diagonal = min(x2 // cx, y2 // cy)  # blocks on the longest anti-diagonal
    # every block's gating matrix, boundary gates and q/k/v; one diagonal's border states
    blocks = x2 * y2 * (3 * n + 6 * edges + 4 * (a.qk_head + a.v_head))
    scan = 5 * diagonal * edges * a.qk_head * a.v_head
    return a.dtype_bytes * (_image_base_memory(a, s) + _problems(a, s) * (blocks + scan))


def _grid_recurrent_terms(a: Architecture, s: ImageBatch) -> Terms:
    kv = a.qk_head * a.v_head
    per_node = kv * (6 + ELEMENTWISE)
    return {
        "call": 1.0,
        "steps": a.depth * (s.x + s.y - 1),
        "work": _dense_macs(a, s) + a.depth * _problems(a, s) * s.tokens * per_node,
    }


def _grid_recurrent_memory(a: Architecture, s: ImageBatch) -> float:
    kv = a.qk_head * a.v_head
    diagonal = min(s.x, s.y)
    per_problem = diagonal * kv * 12 + s.tokens * (2 * a.qk_head + 2 * a.v_head + 10)
    return a.dtype_bytes * (_image_base_memory(a, s) + _problems(a, s) * per_problem)


def _summed_macs(a: Architecture, s: ImageBatch) -> float:
    """Multiply-adds of the summed form per image and head: the column merges (N2²·Y / 4) and
    the contraction, with an elementwise pass over the matrix."""
    n2 = padded_columns(s.x) * s.y
    n = s.tokens
    return n2 * n2 * (ELEMENTWISE + s.y / 4) + n * n * (a.qk_head + a.v_head + ELEMENTWISE)


def _tiles_macs(a: Architecture, s: ImageBatch) -> float:
    """Multiply-adds of the tiled wavefront per image and head (four orientations)."""
    kv = a.qk_head * a.v_head
    per_token = TILE * TILE * (a.qk_head + a.v_head) + (4 * TILE + 4) * kv
    return ORIENTATIONS * s.tokens * per_token


def _small(s: ImageBatch) -> bool:
    return s.tokens <= SMALL_GRID


def _grid_cpu_quadratic_terms(a: Architecture, s: ImageBatch) -> Terms:
    mixer = a.depth * s.batch * a.heads * _summed_macs(a, s)
    return {"call": 1.0, "dense": _dense_macs(a, s), "mixer": mixer}


def _grid_cpu_quadratic_memory(a: Architecture, s: ImageBatch) -> float:
    n2 = padded_columns(s.x) * s.y
    gating = s.batch * a.heads * SUMMED_ELEMENTS * n2 * n2
    return a.dtype_bytes * (_image_base_memory(a, s) + gating)


def _grid_cpu_linear_terms(a: Architecture, s: ImageBatch) -> Terms:
    """The summed form up to ``SMALL_GRID`` tokens, else the tiles; both count their mixer
    multiply-adds as ``work``, so one fitted constant serves either side of the switch."""
    if _small(s):
        mixer, steps = _summed_macs(a, s), 0
    else:
        mixer, steps = _tiles_macs(a, s), -(-s.x // TILE) + -(-s.y // TILE) - 1
    return {
        "call": 1.0,
        "steps": a.depth * steps,
        "work": _dense_macs(a, s) + a.depth * s.batch * a.heads * mixer,
    }


def _grid_cpu_linear_memory(a: Architecture, s: ImageBatch) -> float:
    if _small(s):
        return _grid_cpu_quadratic_memory(a, s)
    base, per_kv, per_product = TILE_ELEMENTS
    per_token = base + per_kv * (a.qk_head + a.v_head) + per_product * a.qk_head * a.v_head
    states = s.batch * a.heads * s.tokens * per_token
    return a.dtype_bytes * (_image_base_memory(a, s) + states)


def _native_summed_macs(a: Architecture, s: ImageBatch) -> float:
    """Multiply-adds of the native summed form per image and head: the gating sweep and the
    contraction, with an elementwise pass over the matrix."""
    n = s.tokens
    return n * n * (NATIVE_GATING_MACS + a.qk_head + a.v_head + ELEMENTWISE)


def _grid_native_quadratic_terms(a: Architecture, s: ImageBatch) -> Terms:
    mixer = a.depth * s.batch * a.heads * _native_summed_macs(a, s)
    return {"call": 1.0, "dense": _dense_macs(a, s), "mixer": mixer}


def _grid_native_quadratic_memory(a: Architecture, s: ImageBatch) -> float:
    gating = s.batch * a.heads * NATIVE_SUMMED_ELEMENTS * s.tokens * s.tokens
    return a.dtype_bytes * (_image_base_memory(a, s) + gating)


def _native_small(s: ImageBatch) -> bool:
    return s.tokens <= NATIVE_SMALL_GRID


def _grid_native_linear_terms(a: Architecture, s: ImageBatch) -> Terms:
    """The native summed form up to ``NATIVE_SMALL_GRID`` tokens, else the recurrent kernel;
    both count their mixer multiply-adds as ``work`` (one fitted constant)."""
    if _native_small(s):
        mixer = _native_summed_macs(a, s)
    else:
        mixer = ORIENTATIONS * s.tokens * a.qk_head * a.v_head * NATIVE_RECURRENT_MACS
    return {"call": 1.0, "work": _dense_macs(a, s) + a.depth * s.batch * a.heads * mixer}


def _grid_native_linear_memory(a: Architecture, s: ImageBatch) -> float:
    if _native_small(s):
        return _grid_native_quadratic_memory(a, s)
    # per token and head: the four orientations' outputs and their sum (V each), the gates (six
    # per orientation); per thread one column of cell states (at most one per sweep)
    per_token = a.heads * ((ORIENTATIONS + 1) * a.v_head + 6 * ORIENTATIONS)
    threads = min(_problems(a, s), os.cpu_count() or 1)
    states = threads * (s.y + 1) * a.qk_head * a.v_head
    return a.dtype_bytes * (_image_base_memory(a, s) + s.batch * s.tokens * per_token + states)


def _attention_terms(a: Architecture, s: ImageBatch) -> Terms:
    n = s.tokens
    return {
        "call": 1.0,
        "dense": _dense_macs(a, s),
        "mixer": a.depth * s.batch * a.heads * n * n * (a.qk_head + a.v_head + ELEMENTWISE),
    }


def _attention_memory(a: Architecture, s: ImageBatch) -> float:
    # scaled_dot_product_attention's flash / memory-efficient kernels (CPU and CUDA, float32
    # and bf16) never hold the N×N scores: only per-head copies of q, k, v and the output
    heads = 2 * s.batch * a.heads * s.tokens * (a.qk_head + a.v_head)
    return a.dtype_bytes * (_image_base_memory(a, s) + heads)


# --- graphs -------------------------------------------------------------------------------


def _node_macs(a: Architecture, s: GraphBatch) -> float:
    """Encoders, projections, gates and MLPs of every layer."""
    d = a.dim
    per_node = d * (2 * a.heads * a.qk_head + 2 * d + 8 * d + 4 * a.heads) + ELEMENTWISE * 12 * d
    encode = s.nodes * (a.node_features * d + d * d) + s.edges * a.edge_features * d
    return a.depth * s.nodes * per_node + encode


def _squarings(s: GraphBatch) -> int:
    return max(1, math.ceil(math.log2(s.max_nodes + 1)))


def _dag_parallel_terms(a: Architecture, s: GraphBatch) -> Terms:
    nmax, emax, j = s.max_nodes, s.max_edges, _squarings(s)
    per_component = j * emax * emax * (emax + nmax + ELEMENTWISE) + nmax * nmax * (
        emax + a.qk_head + a.v_head + ELEMENTWISE
    )
    return {
        "call": 1.0,
        "dense": _node_macs(a, s),
        "mixer": a.depth * s.components * a.heads * per_component,
    }


def _graph_base_memory(a: Architecture, s: GraphBatch) -> float:
    return s.nodes * (a.node_features + 8 * a.dim) + s.edges * (a.edge_features + 2 * a.dim)


def _dag_parallel_memory(a: Architecture, s: GraphBatch) -> float:
    nmax, emax, j = s.max_nodes, s.max_edges, _squarings(s)
    per_component = 2 * emax * (emax + nmax) + j * emax * emax + 2 * nmax * nmax
    return a.dtype_bytes * (_graph_base_memory(a, s) + s.components * a.heads * per_component)


def _dag_recurrent_terms(a: Architecture, s: GraphBatch) -> Terms:
    kv = a.qk_head * a.v_head
    return {
        "call": 1.0,
        "steps": a.depth * s.max_nodes,
        "work": _node_macs(a, s) + a.depth * (s.edges + s.line_edges) * a.heads * kv * 4,
    }


def _dag_recurrent_memory(a: Architecture, s: GraphBatch) -> float:
    kv = a.qk_head * a.v_head
    states = (s.edges + s.line_edges) * a.heads * kv
    return a.dtype_bytes * (_graph_base_memory(a, s) + states)


def _dag_native_terms(a: Architecture, s: GraphBatch) -> Terms:
    kv = a.qk_head * a.v_head
    # per edge its source term and its readout, per line edge one carried state
    mixer = a.depth * a.heads * (2 * s.edges + s.line_edges) * kv
    return {"call": 1.0, "work": _node_macs(a, s) + mixer}


def _dag_native_memory(a: Architecture, s: GraphBatch) -> float:
    threads = min(a.heads, os.cpu_count() or 1)
    states = threads * s.edges * a.qk_head * a.v_head
    return a.dtype_bytes * (_graph_base_memory(a, s) + states + s.nodes * a.heads * a.v_head)


def _gin_terms(a: Architecture, s: GraphBatch) -> Terms:
    d = a.dim
    per_layer = s.nodes * (2 * d * d + ELEMENTWISE * 4 * d) + s.edges * d * (
        a.edge_features + ELEMENTWISE
    )
    encode = s.nodes * a.node_features * d
    return {"call": 1.0, "work": a.depth * per_layer + encode}


def _gin_memory(a: Architecture, s: GraphBatch) -> float:
    return a.dtype_bytes * (_graph_base_memory(a, s) + 2 * s.edges * a.dim)


FORMULAS: dict[tuple[str, str], PathFormula] = {
    ("plstm_vision", "parallel"): PathFormula(_grid_parallel_terms, _grid_parallel_memory),
    ("plstm_vision", "chunkwise"): PathFormula(_grid_chunkwise_terms, _grid_chunkwise_memory),
    ("plstm_vision", "recurrent"): PathFormula(_grid_recurrent_terms, _grid_recurrent_memory),
    # an ONNX export is of the parallel form (models.onnx.export)
    ("plstm_vision", "onnx"): PathFormula(_grid_parallel_terms, _grid_parallel_memory),
    ("vit", "parallel"): PathFormula(_attention_terms, _attention_memory),
    ("vit", "onnx"): PathFormula(_attention_terms, _attention_memory),
    ("plstm_graph", "parallel"): PathFormula(_dag_parallel_terms, _dag_parallel_memory),
    ("plstm_graph", "recurrent"): PathFormula(_dag_recurrent_terms, _dag_recurrent_memory),
    ("plstm_graph", "onnx"): PathFormula(_dag_parallel_terms, _dag_parallel_memory),
    ("gin", "parallel"): PathFormula(_gin_terms, _gin_memory),
    ("gin", "onnx"): PathFormula(_gin_terms, _gin_memory),
}
"""Cost formulas by (model family, inference path)."""


CPU_GRID_FORMULAS: dict[str, PathFormula] = {
    "parallel": PathFormula(_grid_cpu_quadratic_terms, _grid_cpu_quadratic_memory),
    "chunkwise": PathFormula(_grid_cpu_linear_terms, _grid_cpu_linear_memory),
    "recurrent": PathFormula(_grid_cpu_linear_terms, _grid_cpu_linear_memory),
}
"""The pLSTM 2D paths served by the CPU forms (``grid_forms="cpu"``; ONNX keeps the
reference)."""

NATIVE_GRID_FORMULAS: dict[str, PathFormula] = {
    "parallel": PathFormula(_grid_native_quadratic_terms, _grid_native_quadratic_memory),
    "chunkwise": PathFormula(_grid_native_linear_terms, _grid_native_linear_memory),
    "recurrent": PathFormula(_grid_native_linear_terms, _grid_native_linear_memory),
}
"""The pLSTM 2D paths served by the CPU forms' C kernels (``grid_forms="native"``)."""

NATIVE_DAG_FORMULA = PathFormula(_dag_native_terms, _dag_native_memory)
"""Both pLSTM DAG paths with the C kernel (``grid_forms="native"``; ONNX keeps its own)."""


def formula(family: str, path: str, grid_forms: str = "reference") -> PathFormula:
    """The formula of ``path`` for ``family`` whose grid layers run ``grid_forms``; ValueError
    when there is none."""
    if family == "plstm_vision" and grid_forms == "cpu" and path in CPU_GRID_FORMULAS:
        return CPU_GRID_FORMULAS[path]
    if family == "plstm_vision" and grid_forms == "native" and path in NATIVE_GRID_FORMULAS:
        return NATIVE_GRID_FORMULAS[path]
    if family == "plstm_graph" and grid_forms == "native" and path in ("parallel", "recurrent"):
        return NATIVE_DAG_FORMULA
    found = FORMULAS.get((family, path))
    if found is None:
        raise ValueError(f"no cost formula for path {path!r} of a {family} model")
    return found
