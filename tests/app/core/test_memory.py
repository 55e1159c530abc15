"""The malloc arena cap of the server's processes (app.core.memory)."""

from __future__ import annotations

import platform

import pytest

from app.core.memory import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_arena_cap_is_accepted_by_glibc() -> None:
    assert limit_malloc_arenas() is True
