"""Small C kernels of the CPU forms (``plstm_core/ops/csrc/*.c``, sharing ``csrc/*.h``),
compiled on first use with the machine's C compiler and loaded with ctypes.

A kernel replaces a chain of many small tensor operations whose dispatch, not arithmetic, is
the cost on the CPU (see :mod:`plstm_core.ops.grid_gating_native`). It is plain C11 (no
Python or torch headers): ``cc -O3 -std=c11 -shared -fPIC`` builds it in well under a second.
On x86-64 machines whose CPU has AVX2 (read from ``/proc/cpuinfo``) the build adds ``-mavx2``
(the recurrent kernel runs about 1.5× faster with 256-bit vectors); ``-std=c11`` keeps GCC from
contracting a·b + c into fused multiply-adds, so the results do not depend on the CPU. The
library is kept in a private cache directory under a name that hashes the source, the compiler
and its flags, so a changed source or another CPU is built anew, and several processes may
build it at once (each writes its own file and renames it into place).

- ``PLSTM_NATIVE_KERNELS=0``: never use them (the PyTorch forms run instead; same results);
- ``CC``: the compiler (default ``cc``, else ``gcc``);
- ``PLSTM_NATIVE_CACHE``: the cache directory (default ``$XDG_CACHE_HOME/plstm/native`` or
  ``~/.cache/plstm/native``; a fresh private temporary directory if that cannot be created).

Without a compiler, or when a build fails, :func:`native_library` returns None once with a
warning, and the callers keep their PyTorch forms.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCES = Path(__file__).with_name("csrc")
KERNELS = ("grid_gating", "grid_recurrent", "dag_recurrent")
"""The kernels (``csrc/<name>.c``): the grid layer's summed gating matrix and recurrent form,
the DAG layer's recurrent form."""
CFLAGS = ("-O3", "-std=c11", "-shared", "-fPIC", "-pthread")
VECTOR_FLAGS = {"avx2": "-mavx2"}
"""CPU features (``/proc/cpuinfo`` flags) → the compiler flag that lets the kernels use them;
added only when the CPU has all of them."""
BUILD_TIMEOUT_S = 120.0


def native_library(name: str) -> ctypes.CDLL | None:
    """The compiled ``csrc/<name>.c`` (built on first use), or None when native kernels are
    disabled (``PLSTM_NATIVE_KERNELS=0``), no C compiler is found or the build fails."""
    if os.environ.get("PLSTM_NATIVE_KERNELS") == "0":
        return None
    return _load(name)


def native_function(library: str, function: str, argtypes: list) -> ctypes._CFuncPtr | None:
    """``function`` of the kernel ``library`` with its argument types set (an ``int`` result),
    or None where :func:`native_library` gives none."""
    loaded = native_library(library)
    if loaded is None:
        return None
    bound = getattr(loaded, function)
    if bound.argtypes is None:
        bound.argtypes, bound.restype = argtypes, ctypes.c_int
    return bound


def native_kernels_built() -> bool:
    """Whether every kernel of :data:`KERNELS` is available (then the CPU forms use them for
    calls without autograd)."""
    return all(native_library(name) is not None for name in KERNELS)


def _compiler() -> str | None:
    named = os.environ.get("CC")
    if named:
        return shutil.which(named)
    return shutil.which("cc") or shutil.which("gcc")


def cpu_features() -> set[str]:
    """The feature flags of this machine's first CPU in ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in info.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def compiler_flags() -> tuple[str, ...]:
    """:data:`CFLAGS`, plus :data:`VECTOR_FLAGS` on an x86-64 CPU that has them all."""
    if platform.machine() in ("x86_64", "AMD64") and set(VECTOR_FLAGS) <= cpu_features():
        return CFLAGS + tuple(VECTOR_FLAGS.values())
    return CFLAGS


def cache_directory() -> Path:
    """Where the built libraries are kept (see the module docstring); created, private."""
    named = os.environ.get("PLSTM_NATIVE_CACHE")
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        directory = Path(named) if named else base / "plstm" / "native"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except (OSError, RuntimeError):  # RuntimeError: no home directory to be found
        return _private_temporary_directory()
    return directory if os.access(directory, os.W_OK) else _private_temporary_directory()


@functools.cache
def _private_temporary_directory() -> Path:
    """One fresh private directory per process, for every kernel of it."""
    return Path(tempfile.mkdtemp(prefix="plstm-native-"))


@functools.cache
def _load(name: str) -> ctypes.CDLL | None:
    source = SOURCES / f"{name}.c"
    compiler = _compiler()
    if compiler is None:
        logger.warning("no C compiler found (CC, cc, gcc): the PyTorch form replaces %s", name)
        return None
    flags = compiler_flags()
    digest = hashlib.sha256(source.read_bytes())
    for header in sorted(SOURCES.glob("*.h")):  # the headers it may include
        digest.update(header.read_bytes())
    digest.update("\0".join((compiler, *flags, platform.machine())).encode())
    library = cache_directory() / f"{name}-{digest.hexdigest()[:16]}.so"
    try:
        if not library.exists():
            _build([compiler, *flags], source, library)
        return ctypes.CDLL(str(library))
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("native kernel %s unavailable, the PyTorch form replaces it: %s", name, exc)
        return None


def _build(compiler: list[str], source: Path, library: Path) -> None:
    partial = library.with_name(f"{library.name}.{os.getpid()}.tmp")
    command = [*compiler, "-o", str(partial), str(source)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            raise OSError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
        os.replace(partial, library)
    finally:
        partial.unlink(missing_ok=True)
