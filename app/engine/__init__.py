"""The inference engine of ``--engine process``: one process (:mod:`.server`) holds the models
and batches the requests of every HTTP worker (:mod:`.client`) over a Unix socket
(:mod:`.protocol`); :mod:`.launcher` starts it, :mod:`.entries` describes its models to the
workers. Imports :mod:`app.serving` and :mod:`app.core`."""
