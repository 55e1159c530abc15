"""Tests of :mod:`app.serving`."""
