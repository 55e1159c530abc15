"""Serving models: the model repository (scan, load, warm-up), inference backends and paths,
the :class:`~app.serving.runtime.Runtime` protocol and its in-process implementation
(:mod:`.inference`: dynamic batching), admission and deadlines, the cost model and its limits,
image decoding, decoder processes, explanations and draining. Imports only :mod:`app.core` of
:mod:`app`."""
