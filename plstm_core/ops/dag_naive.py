"""Loop reference for ``plstm_dag``: one node and one edge at a time, straight from paper eq. 5-6.

Slow and obviously correct; computes in the dtype it is given (pass float64 for references).
It does not validate its input beyond what the loops need.
"""

from __future__ import annotations

import torch


def plstm_dag_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
    edge_index: torch.Tensor,
    line_index: torch.Tensor,
) -> torch.Tensor:
    """pLSTM on a batch of DAGs, node by node in a topological order.

    q, k ``[N,H,K]``, v ``[N,H,V]``, direct ``[N,H]``, edge_index ``[2,E]``, source ``[E,H]``,
    mark ``[E,H]``, line_index ``[2,L]``, transition ``[L,H]``. Returns h ``[N,H,V]``::

        C[e] = Σ_{l=(e'→e)} transition[l] · C[e'] + source[e] · k[src(e)] ⊗ v[src(e)]
        h[n] = q[n] · Σ_{e into n} mark[e] · C[e] + direct[n] · (q[n]·k[n]) · v[n]
    """
    N = q.shape[0]
    src = edge_index[0].tolist()
    dst = edge_index[1].tolist()
    E = len(src)
    out_edges: list[list[int]] = [[] for _ in range(N)]
    in_edges: list[list[int]] = [[] for _ in range(N)]
    for e in range(E):
        out_edges[src[e]].append(e)
        in_edges[dst[e]].append(e)
    line_into: list[list[tuple[int, int]]] = [[] for _ in range(E)]  # e -> [(l, e'), ...]
    for l, (e_in, e_out) in enumerate(zip(*line_index.tolist(), strict=True)):
        line_into[e_out].append((l, e_in))

    # Kahn's algorithm, one node at a time
    indeg = [len(in_edges[n]) for n in range(N)]
    ready = [n for n in range(N) if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop()
        order.append(n)
        for e in out_edges[n]:
            indeg[dst[e]] -= 1
            if indeg[dst[e]] == 0:
                ready.append(dst[e])
    if len(order) != N:
        raise ValueError("edge_index contains a cycle")

    cell: list[torch.Tensor | None] = [None] * E
    for n in order:
        kv = k[n, :, :, None] * v[n, :, None, :]  # [H,K,V]
        for e in out_edges[n]:
            c = source[e, :, None, None] * kv
            for l, e_in in line_into[e]:
                c = c + transition[l, :, None, None] * cell[e_in]
            cell[e] = c

    rows = []
    for n in range(N):
        h = direct[n, :, None] * (q[n] * k[n]).sum(-1, keepdim=True) * v[n]  # [H,V]
        for e in in_edges[n]:
            h = h + mark[e, :, None] * torch.einsum("hk,hkv->hv", q[n], cell[e])
        rows.append(h)
    if not rows:
        return v.new_zeros(v.shape)
    return torch.stack(rows)
