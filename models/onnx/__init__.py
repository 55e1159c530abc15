"""ONNX for the models: the file format and sidecar (``files``), the export of a checkpoint
(``export``, with the graph-model inputs of ``graph`` and the op translations of
``symbolics``) and ONNX Runtime sessions with the one agreement check against torch
(``runtime``)."""
