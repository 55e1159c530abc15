"""Tests of :mod:`app.core`."""
