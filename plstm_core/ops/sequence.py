"""``plstm_1d``: pLSTM on sequences, in recurrent, parallel (paper A.3) and chunkwise (A.7) form.

Edge t runs from node t to node t+1 and carries the cell state C_t ``[K,V]``:

    C_t = transition_t · C_{t-1} + source_t · k_t ⊗ v_t          (C_{-1} = 0)
    h_t = q_t · (mark_t · C_{t-1}) + direct_t · (q_t·k_t) · v_t

Unrolled, h_t = Σ_{s<t} G[t,s] (q_t·k_s) v_s + direct_t (q_t·k_t) v_t with the gating matrix
G[t,s] = mark_t · (Π_{r=s+1}^{t-1} transition_r) · source_s. All methods build G (or its
chunk-local blocks) from products only — no log/cumsum tricks — so transitions may be zero or
negative.
"""

from __future__ import annotations

import torch

from plstm_core.ops.contraction import gated_linear_attention
from plstm_core.ops.sizes import next_pow2
from plstm_core.ops.validation import (
    check_chunk_size,
    check_method,
    check_same_device,
    check_shape,
    check_tensor,
    compute_dtype,
    output_dtype,
)

METHODS = ("recurrent", "parallel", "chunkwise")


def _pad_last(x: torch.Tensor, extra: int, value: float) -> torch.Tensor:
    """Append ``extra`` entries of ``value`` along the last axis (differentiable)."""
    if extra == 0:
        return x
    return torch.nn.functional.pad(x, (0, extra), value=value)


def _hierarchy(
    source: torch.Tensor, transition: torch.Tensor, mark: torch.Tensor, direct: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generalized Source, Transition, Mark and gating of one block of n nodes (paper eq. 17-20).

    Inputs ``[..., n]`` (any leading axes, e.g. ``[B,H]`` or ``[B,H,chunks]``), any n ≥ 1.
    Returns, for the block as a whole:

    - S ``[..., n]``: S[j] = source_j · Π_{r=j+1}^{n-1} transition_r (node j into the outgoing edge)
    - T ``[...]``:    Π_{r=0}^{n-1} transition_r (incoming edge to outgoing edge)
    - M ``[..., n]``: M[j] = mark_j · Π_{r=0}^{j-1} transition_r (incoming edge into node j)
    - G ``[..., n, n]`` indexed (target t, source s): G[t,s] = mark_t Π_{r=s+1}^{t-1}
      transition_r · source_s for s < t, direct_t on the diagonal, 0 above it.

    n is padded to the next power of two n' with transition 1 and source / mark / direct 0, so
    the padded nodes change none of the returned (truncated) entries. Level l holds n'/2^l blocks
    of 2^l nodes; two neighbours (left L, right R) merge by

        S = [S_L·T_R, S_R],  T = T_L·T_R,  M = [M_L, T_L·M_R],  G = [[G_L, 0], [M_R ⊗ S_L, G_R]]

    using only broadcast products and concatenation; the Python loop runs over the log2(n')
    levels only. Cost: O(n'²) time and memory per leading index (the levels form a geometric
    series dominated by the last one).
    """
    n = source.shape[-1]
    n_pad = next_pow2(n)
    extra = n_pad - n
    s = _pad_last(source, extra, 0.0)[..., None]  # [..., blocks, width]
    t = _pad_last(transition, extra, 1.0)  # [..., blocks]
    m = _pad_last(mark, extra, 0.0)[..., None]  # [..., blocks, width]
    g = _pad_last(direct, extra, 0.0)[..., None, None]  # [..., blocks, width, width]
    lead = source.shape[:-1]
    blocks, width = n_pad, 1
    while blocks > 1:
        blocks //= 2
        s2 = s.reshape(*lead, blocks, 2, width)
        t2 = t.reshape(*lead, blocks, 2)
        m2 = m.reshape(*lead, blocks, 2, width)
        g2 = g.reshape(*lead, blocks, 2, width, width)
        s_l, s_r = s2[..., 0, :], s2[..., 1, :]
        t_l, t_r = t2[..., 0], t2[..., 1]
        m_l, m_r = m2[..., 0, :], m2[..., 1, :]
        g_l, g_r = g2[..., 0, :, :], g2[..., 1, :, :]
        s = torch.cat([s_l * t_r[..., None], s_r], dim=-1)  # eq. 17
        t = t_l * t_r  # eq. 18
        m = torch.cat([m_l, t_l[..., None] * m_r], dim=-1)  # eq. 19
        cross = m_r[..., :, None] * s_l[..., None, :]  # eq. 20: left sources → right targets
        top = torch.cat([g_l, torch.zeros_like(g_l)], dim=-1)
        bottom = torch.cat([cross, g_r], dim=-1)
        g = torch.cat([top, bottom], dim=-2)
        width *= 2
    s = s[..., 0, :n]
    m = m[..., 0, :n]
    g = g[..., 0, :n, :n]
    t = t[..., 0]
    return s, t, m, g


def _recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
) -> torch.Tensor:
    """Paper eq. 5-6 on a chain, one step per node, vectorised over B and H.

    Cost: O(B·H·T·K·V) time; O(B·H·K·V) live state, O(B·H·T·K·V) kept for autograd.
    """
    B, H, T, K = q.shape
    V = v.shape[-1]
    c_in = q.new_zeros(B, H, K, V)
    outs = []
    for step in range(T):
        qt, kt, vt = q[:, :, step], k[:, :, step], v[:, :, step]
        h = torch.einsum("bhk,bhkv->bhv", qt * mark[:, :, step, None], c_in)
        h = h + (direct[:, :, step] * (qt * kt).sum(-1))[..., None] * vt
        outs.append(h)
        kv = (kt * source[:, :, step, None])[..., :, None] * vt[..., None, :]
        c_in = transition[:, :, step, None, None] * c_in + kv
    return torch.stack(outs, dim=2)


def _parallel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
) -> torch.Tensor:
    """Hierarchical gating matrix (paper A.3, eq. 17-20), then one masked contraction (eq. 7).

    Cost: O(B·H·T'²) memory and time for G (T' = next power of two ≥ T), plus
    O(B·H·T²·(K+V)) time and O(B·H·T²) memory for h = ((q kᵀ) ⊙ G) v.
    """
    g = _hierarchy(source, transition, mark, direct)[3]
    return gated_linear_attention(q, k, v, g.transpose(-1, -2))


def _chunkwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """Chunkwise-parallel form (paper A.7): hierarchy inside chunks, recurrence across them.

    Steps: (1) pad T to a multiple of c = chunk_size (transition 1, other gates 0: padded nodes
    only follow the real ones and are cut off); (2) per chunk j, all chunks in parallel, the
    chunk's S_j, T_j, M_j, G_j from ``_hierarchy`` (eq. 17-20); (3) the chunk's state update
    U_j = Σ_n S_j[n] k_n ⊗ v_n; (4) recurrence over chunks on the edge between them,
    C_in[j+1] = T_j · C_in[j] + U_j, C_in[0] = 0; (5) h = ((q kᵀ) ⊙ G_j) v inside the chunk
    + (M_j ⊙ q) · C_in[j].
    Cost: O(B·H·T·c·(K+V) + B·H·T·K·V) time, O(B·H·T·c + B·H·(T/c)·K·V) memory — linear in T.
    """
    B, H, T, K = q.shape
    V = v.shape[-1]
    n_chunks = -(-T // chunk_size)
    extra = n_chunks * chunk_size - T

    def nodes(x: torch.Tensor, value: float) -> torch.Tensor:  # [B,H,T] → [B,H,NC,c]
        return _pad_last(x, extra, value).reshape(B, H, n_chunks, chunk_size)

    def feats(x: torch.Tensor) -> torch.Tensor:  # [B,H,T,D] → [B,H,NC,c,D]
        if extra:
            x = torch.nn.functional.pad(x, (0, 0, 0, extra))
        return x.reshape(B, H, n_chunks, chunk_size, x.shape[-1])

    s, t, m, g = _hierarchy(
        nodes(source, 0.0), nodes(transition, 1.0), nodes(mark, 0.0), nodes(direct, 0.0)
    )
    qc, kc, vc = feats(q), feats(k), feats(v)
    update = torch.einsum("bhjnk,bhjnv->bhjkv", kc * s[..., None], vc)  # [B,H,NC,K,V]
    states = [q.new_zeros(B, H, K, V)]
    for j in range(n_chunks - 1):
        states.append(t[:, :, j, None, None] * states[-1] + update[:, :, j])
    c_in = torch.stack(states, dim=2)  # [B,H,NC,K,V]: state entering chunk j
    h = gated_linear_attention(qc, kc, vc, g.transpose(-1, -2))
    h = h + torch.einsum("bhjnk,bhjkv->bhjnv", qc * m[..., None], c_in)
    return h.reshape(B, H, n_chunks * chunk_size, V)[:, :, :T]


def plstm_1d(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
    *,
    method: str = "parallel",
    chunk_size: int = 64,
) -> torch.Tensor:
    """pLSTM on sequences (paper eq. 5-7 on a chain; A.3 parallel, A.7 chunkwise).

    q, k ``[B,H,T,K]``, v ``[B,H,T,V]``, source / transition / mark / direct ``[B,H,T]``.
    Edge t runs from node t to node t+1: C_t = transition_t·C_{t-1} + source_t·k_t⊗v_t,
    h_t = q_t·mark_t·C_{t-1} + direct_t·(q_t·k_t)·v_t (C_{-1} = 0). Returns h ``[B,H,T,V]``.

    Methods (all agree to fp32 rounding, forward and backward):

    - ``"recurrent"``: one step per node (eq. 5-6). Time O(B·H·T·K·V), memory
      O(B·H·T·K·V) kept for autograd.
    - ``"parallel"``: hierarchical S/T/M/G construction (eq. 17-20) in log2(T) levels, then
      h = ((q kᵀ) ⊙ G) v (eq. 7). Time O(B·H·T²·(K+V)), memory O(B·H·T²).
    - ``"chunkwise"``: ``"parallel"`` inside chunks of ``chunk_size`` nodes, a recurrence over
      the [K,V] state between chunks (A.7). Time O(B·H·T·(c·(K+V) + K·V)), memory
      O(B·H·(T·c + (T/c)·K·V)) with c = chunk_size. T need not be a multiple of c.
      ``chunk_size`` is only used here but is validated (positive int) for every method.

    dtype: computes in float64 if any input is float64, else float32 (bf16 accumulates in
    fp32); h has the promoted dtype of the inputs. Bad input raises ``ValueError``.
    """
    named = {
        "q": q,
        "k": k,
        "v": v,
        "source": source,
        "transition": transition,
        "mark": mark,
        "direct": direct,
    }
    check_tensor("q", q, 4)
    check_tensor("k", k, 4)
    check_tensor("v", v, 4)
    for name in ("source", "transition", "mark", "direct"):
        check_tensor(name, named[name], 3)
    B, H, T, K = q.shape
    check_shape("k", k, (B, H, T, K), "[B,H,T,K]")
    V = v.shape[-1]
    check_shape("v", v, (B, H, T, V), "[B,H,T,V]")
    for name in ("source", "transition", "mark", "direct"):
        check_shape(name, named[name], (B, H, T), "[B,H,T]")
    check_same_device(named)
    check_method(method, METHODS)
    check_chunk_size(chunk_size)

    tensors = tuple(named.values())
    out_dtype = output_dtype(*tensors)
    work = compute_dtype(*tensors)
    if T == 0:
        return v.new_zeros(B, H, 0, V, dtype=out_dtype)
    args = tuple(x.to(work) for x in tensors)
    if method == "recurrent":
        h = _recurrent(*args)
    elif method == "parallel":
        h = _parallel(*args)
    else:
        h = _chunkwise(*args, chunk_size=chunk_size)
    return h.to(out_dtype)
