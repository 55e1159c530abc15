"""nn.Module layers built on the pLSTM ops: 2D grid, DAG, multi-head RMSNorm."""

from plstm_core.layers.dag_layer import PLSTMDAGLayer
from plstm_core.layers.grid_layer import PLSTMGridLayer
from plstm_core.layers.norm import MultiHeadRMSNorm

__all__ = ["MultiHeadRMSNorm", "PLSTMDAGLayer", "PLSTMGridLayer"]
