"""Open Inference Protocol v2 tensors in JSON: the datatypes, row-major flattening of nested
``data`` and the check of every element against its datatype (:func:`check_tensor`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

INTEGER_RANGES = {
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}


FLOAT_DATATYPES = ("FP16", "BF16", "FP32", "FP64")


DATATYPES = ("BOOL", *INTEGER_RANGES, *FLOAT_DATATYPES, "BYTES")
"""The Open Inference Protocol v2 tensor datatypes."""


Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "BF16",
    "FP32",
    "FP64",
    "BYTES",
]


def flatten_data(data: Any) -> list[Any]:
    """Row-major flattening of a (possibly nested) JSON tensor ``data`` list."""
    if not isinstance(data, list):
        return [data]
    if not any(issubclass(kind, list) for kind in set(map(type, data))):
        return data
    out: list[Any] = []
    stack: list[Iterable[Any]] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


FLOAT_MAX = {
    "FP16": float(np.finfo(np.float16).max),
    "BF16": 3.3895313892515355e38,
    "FP32": float(np.finfo(np.float32).max),
    "FP64": float(np.finfo(np.float64).max),
}
"""Largest finite magnitude of each float datatype."""


_ELEMENT_TYPES: dict[str, frozenset[type]] = {
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
    **{datatype: frozenset({int}) for datatype in INTEGER_RANGES},
    **{datatype: frozenset({int, float}) for datatype in FLOAT_DATATYPES},
}


TensorValues = np.ndarray | list[str]
"""Flat row-major tensor elements: a numpy array (bool, int64, uint64 for UINT64, float32 for
FP16 / BF16 / FP32, float64 for FP64) or, for BYTES, a list of str."""


class TensorValueError(ValueError):
    """A tensor element of the right type whose value is not finite or out of range."""


def _type_problem(datatype: str, value: Any) -> str | None:
    """Why ``value`` is not of an element type of ``datatype``, or None."""
    if type(value) in _ELEMENT_TYPES[datatype]:
        return None
    if datatype == "BOOL":
        return "expected true or false"
    if datatype == "BYTES":
        return "expected a string"
    return "expected an integer" if datatype in INTEGER_RANGES else "expected a number"


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _integers(name: str, datatype: str, flat: list[Any]) -> np.ndarray:
    low, high = INTEGER_RANGES[datatype]
    out_of_range = f"out of the {datatype} range [{low}, {high}]"
    try:
        values = np.array(flat, dtype=np.uint64 if datatype == "UINT64" else np.int64)
    except OverflowError:  # beyond 64 bits: find it element by element
        i = next(i for i, v in enumerate(flat) if not low <= v <= high)
        raise TensorValueError(f"{name}: data[{i}] = {flat[i]!r}: {out_of_range}") from None
    bad = (values < low) | (values > high)
    if bad.any():
        i = _first(bad)
        raise TensorValueError(f"{name}: data[{i}] = {flat[i]!r}: {out_of_range}")
    return values


def _floats(name: str, datatype: str, flat: list[Any]) -> np.ndarray:
    limit = FLOAT_MAX[datatype]
    out_of_range = f"out of the {datatype} range [{-limit:.7g}, {limit:.7g}]"
    try:
        values = np.array(flat, dtype=np.float64)
    except OverflowError:  # an integer beyond float64: find it element by element
        i = next(i for i, v in enumerate(flat) if isinstance(v, int) and abs(v) > limit)
        raise TensorValueError(f"{name}: data[{i}] = {flat[i]}: {out_of_range}") from None
    finite = np.isfinite(values)
    if not finite.all():
        i = _first(~finite)
        raise TensorValueError(
            f"{name}: data[{i}] = {flat[i]!r}: expected a finite number for {datatype}"
        )
    too_large = np.abs(values) > limit
    if too_large.any():
        i = _first(too_large)
        raise TensorValueError(f"{name}: data[{i}] = {flat[i]!r}: {out_of_range}")
    return values if datatype == "FP64" else values.astype(np.float32)


def check_tensor(name: str, shape: Sequence[int], datatype: str, data: Any) -> TensorValues:
    """Validate a JSON tensor; returns its flattened elements (:data:`TensorValues`).
    ValueError names the problem: unknown datatype, shape product != number of elements,
    element of the wrong type; :class:`TensorValueError` (a ValueError) an element that is not
    finite or out of its datatype's range. Checks are vectorised (numpy) but for locating the
    first bad element."""
    if datatype not in DATATYPES:
        raise ValueError(f"{name}: unknown datatype {datatype!r} (one of {', '.join(DATATYPES)})")
    flat = flatten_data(data)
    expected = math.prod(shape)
    if expected != len(flat):
        raise ValueError(
            f"{name}: shape {list(shape)} holds {expected} elements but data has {len(flat)}"
        )
    if not set(map(type, flat)) <= _ELEMENT_TYPES[datatype]:  # C speed; the loop only on error
        for i, value in enumerate(flat):
            problem = _type_problem(datatype, value)
            if problem is not None:
                raise ValueError(f"{name}: data[{i}] = {value!r}: {problem} for {datatype}")
    if datatype == "BYTES":
        return flat
    if datatype == "BOOL":
        return np.array(flat, dtype=bool)
    if datatype in INTEGER_RANGES:
        return _integers(name, datatype, flat)
    return _floats(name, datatype, flat)
