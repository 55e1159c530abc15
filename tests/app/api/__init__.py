"""Tests of :mod:`app.api`."""
