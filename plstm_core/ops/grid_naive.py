"""Loop reference for ``plstm_2d``: one node at a time, straight from paper eq. 5-6.

Slow and obviously correct; computes in the dtype it is given (pass float64 for references).
"""

from __future__ import annotations

import torch


def plstm_2d_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
) -> torch.Tensor:
    """pLSTM on one DAG orientation of an X×Y grid, node by node in raster order.

    q, k ``[B,H,X,Y,K]``, v ``[B,H,X,Y,V]``, source ``[B,H,X,Y,2]``,
    transition ``[B,H,X,Y,2,2]`` (``[..., in, out]``), mark ``[B,H,X,Y,2]``,
    direct ``[B,H,X,Y]``. Edge direction 0 runs (x,y)→(x+1,y), direction 1 (x,y)→(x,y+1).
    Returns h ``[B,H,X,Y,V]``.
    """
    B, H, X, Y, K = q.shape
    V = v.shape[-1]
    zero = q.new_zeros(B, H, K, V)
    # cell[x][y][o]: the state on the outgoing edge o of node (x, y)
    cell: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[(zero, zero)] * Y for _ in range(X)]
    rows = []
    for x in range(X):
        row = []
        for y in range(Y):
            c_in = (
                cell[x - 1][y][0] if x > 0 else zero,  # edge 0 arrives from (x-1, y)
                cell[x][y - 1][1] if y > 0 else zero,  # edge 1 arrives from (x, y-1)
            )
            kv = k[:, :, x, y, :, None] * v[:, :, x, y, None, :]
            outs = []
            for o in range(2):
                c = source[:, :, x, y, o, None, None] * kv
                for i in range(2):
                    c = c + transition[:, :, x, y, i, o, None, None] * c_in[i]
                outs.append(c)
            cell[x][y] = (outs[0], outs[1])
            read = sum(mark[:, :, x, y, i, None, None] * c_in[i] for i in range(2))
            qx = q[:, :, x, y]
            h = torch.einsum("bhk,bhkv->bhv", qx, read)
            h = (
                h
                + direct[:, :, x, y, None]
                * (qx * k[:, :, x, y]).sum(-1, keepdim=True)
                * v[:, :, x, y]
            )
            row.append(h)
        rows.append(torch.stack(row, dim=2))
    return torch.stack(rows, dim=2)
