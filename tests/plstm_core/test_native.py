"""Building and loading the C kernels (``plstm_core.ops.native``): built once into the cache
and reused, rebuilt under a new name when the source changes, and None (with a warning, the
PyTorch forms serving instead) when disabled, without a compiler or when the build fails."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from plstm_core.ops import native

needs_compiler = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("PLSTM_NATIVE_CACHE", str(tmp_path / "native"))
    monkeypatch.delenv("PLSTM_NATIVE_KERNELS", raising=False)
    native._load.cache_clear()
    yield tmp_path / "native"
    native._load.cache_clear()


@needs_compiler
def test_kernel_is_built_into_the_cache_and_its_functions_load(cache: Path) -> None:
    library = native.native_library("grid_gating")
    assert library is not None and library.summed_gating_f32 is not None
    built = list(cache.glob("grid_gating-*.so"))
    assert len(built) == 1
    assert not list(cache.glob("*.tmp"))
    assert (cache.stat().st_mode & 0o777) == 0o700


@needs_compiler
def test_built_kernel_is_reused_by_a_later_process(cache: Path) -> None:
    native.native_library("grid_gating")
    (built,) = cache.glob("grid_gating-*.so")
    os.utime(built, (1, 1))
    native._load.cache_clear()
    assert native.native_library("grid_gating") is not None
    assert built.stat().st_mtime == 1


@needs_compiler
@pytest.mark.parametrize("changed", ["grid_recurrent.c", "threads.h"])
def test_changed_source_or_header_is_built_under_a_new_name(
    changed: str, cache: Path, tmp_path: Path, monkeypatch
) -> None:
    sources = tmp_path / "csrc"
    shutil.copytree(native.SOURCES, sources)
    monkeypatch.setattr(native, "SOURCES", sources)
    native.native_library("grid_recurrent")
    with (sources / changed).open("a") as file:
        file.write("\n/* changed */\n")
    native._load.cache_clear()
    assert native.native_library("grid_recurrent") is not None
    assert len(list(cache.glob("grid_recurrent-*.so"))) == 2


def test_disabled_kernels_are_never_built(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("PLSTM_NATIVE_KERNELS", "0")
    assert native.native_library("grid_gating") is None
    assert not cache.exists()


def test_missing_compiler_gives_none_and_a_warning(cache: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-anywhere")
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.native_library("grid_gating") is None
    assert "no C compiler found" in caplog.text


def test_failed_build_gives_none_and_leaves_no_file(cache: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("CC", "false")  # exits 1
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.native_library("grid_gating") is None
    assert "unavailable" in caplog.text and "failed" in caplog.text
    assert not list(cache.iterdir())


def test_unwritable_cache_falls_back_to_a_private_temporary_directory(
    tmp_path: Path, monkeypatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PLSTM_NATIVE_CACHE", str(blocker / "native"))  # under a file
    native._private_temporary_directory.cache_clear()
    directory = native.cache_directory()
    assert directory.is_dir() and directory.name.startswith("plstm-native-")
    assert (directory.stat().st_mode & 0o777) == 0o700
    assert native.cache_directory() == directory  # one per process, for every kernel
    directory.rmdir()
    native._private_temporary_directory.cache_clear()


@pytest.mark.parametrize(
    ("machine", "features", "vector"),
    [
        ("x86_64", {"sse2", "avx2", "fma"}, True),
        ("x86_64", {"sse2", "avx", "fma"}, False),
        ("aarch64", {"asimd", "avx2"}, False),
    ],
)
def test_vector_flags_only_where_the_cpu_has_them(machine, features, vector, monkeypatch) -> None:
    monkeypatch.setattr(native.platform, "machine", lambda: machine)
    monkeypatch.setattr(native, "cpu_features", lambda: features)
    flags = native.compiler_flags()
    expected = native.CFLAGS + (tuple(native.VECTOR_FLAGS.values()) if vector else ())
    assert flags == expected
