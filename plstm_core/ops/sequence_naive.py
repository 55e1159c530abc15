"""Loop reference for ``plstm_1d``: one node at a time, straight from paper eq. 5-6 on a chain.

Slow and obviously correct; computes in the dtype it is given (pass float64 for references).
"""

from __future__ import annotations

import torch


def plstm_1d_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
) -> torch.Tensor:
    """pLSTM on a sequence (a linear RNN), node by node.

    q, k ``[B,H,T,K]``, v ``[B,H,T,V]``, source / transition / mark / direct ``[B,H,T]``.
    Edge t runs from node t to node t+1 and carries the cell state C_t ``[K,V]``:

        C_t = transition_t · C_{t-1} + source_t · k_t ⊗ v_t          (C_{-1} = 0)
        h_t = q_t · (mark_t · C_{t-1}) + direct_t · (q_t·k_t) · v_t

    Returns h ``[B,H,T,V]``. No input validation: this is a test oracle.
    """
    B, H, T, K = q.shape
    V = v.shape[-1]
    c_in = q.new_zeros(B, H, K, V)  # state on the edge entering node t (C_{t-1})
    outs = []
    for t in range(T):
        qt, kt, vt = q[:, :, t], k[:, :, t], v[:, :, t]
        read = mark[:, :, t, None, None] * c_in
        h = torch.einsum("bhk,bhkv->bhv", qt, read)
        h = h + direct[:, :, t, None] * (qt * kt).sum(-1, keepdim=True) * vt
        outs.append(h)
        kv = kt[..., :, None] * vt[..., None, :]
        c_in = transition[:, :, t, None, None] * c_in + source[:, :, t, None, None] * kv
    if not outs:
        return v.new_zeros(B, H, 0, V)
    return torch.stack(outs, dim=2)
