"""Serving models: the model repository (scan, load, warm-up), inference backends and paths,
dynamic batching, admission and deadlines, the cost model and its limits, image decoding, decoder
processes, explanations and draining. Imports only :mod:`app.core` of :mod:`app`."""
