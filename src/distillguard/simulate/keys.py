"""Deterministic 64-bit keys and the opaque ids built from them.

Everything random that must stay stable for one entity (an account's home address this week,
its API key ids, a conversation id) is a pure function of integer keys, so it can be computed
for millions of rows at once without a lookup table and is identical whichever block of rows
asks for it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def finalize(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection on uint64 that scatters nearby inputs."""
    z = np.asarray(x, dtype=_U64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> _U64(30))) * _M1
        z = (z ^ (z >> _U64(27))) * _M2
    return z ^ (z >> _U64(31))


def mix(*parts: np.ndarray | int) -> np.ndarray:
    """Hash any number of integer arrays (broadcast together) into one uint64 array."""
    acc = np.zeros((), dtype=_U64)
    with np.errstate(over="ignore"):
        for part in parts:
            value = np.asarray(part).astype(_U64, copy=False)
            acc = finalize(acc * _GOLDEN + value + _GOLDEN)
    return np.asarray(acc)


def unit(key: np.ndarray) -> np.ndarray:
    """Map uint64 keys to floats uniform in [0, 1)."""
    return (np.asarray(key, dtype=_U64) >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))


def below(key: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """Map uint64 keys to integers uniform in [0, n) (n may differ per key)."""
    return np.minimum((unit(key) * np.asarray(n)).astype(np.int64), np.asarray(n) - 1)


def hex_ids(prefix: str, values: np.ndarray, digits: int = 16) -> pa.StringArray:
    """``prefix`` + the low ``digits`` hex digits of each uint64, built without Python loops."""
    values = np.asarray(values, dtype=_U64)
    n = len(values)
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    width = len(head) + digits
    buf = np.empty((n, width), dtype=np.uint8)
    buf[:, : len(head)] = head
    for k in range(digits):
        buf[:, width - 1 - k] = _HEX[((values >> _U64(4 * k)) & _U64(15)).astype(np.intp)]
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(width)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf.reshape(-1)))
