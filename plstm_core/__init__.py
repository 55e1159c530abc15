"""pLSTM (parallelizable Linear Source Transition Mark networks, Pöppel et al. 2025).

The three ops of DESIGN.md section 3, each with ``method=`` and a float64 loop reference in
``plstm_core.ops.*_naive``; gate parameterisations in ``plstm_core.gates``; nn.Module layers
in ``plstm_core.layers``.
"""

from plstm_core.ops.dag import plstm_dag
from plstm_core.ops.dag_structure import build_line_index
from plstm_core.ops.grid import grid_gating_matrix, plstm_2d
from plstm_core.ops.sequence import plstm_1d

__all__ = ["build_line_index", "grid_gating_matrix", "plstm_1d", "plstm_2d", "plstm_dag"]
