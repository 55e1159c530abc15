"""Tests of :mod:`app.engine`."""
