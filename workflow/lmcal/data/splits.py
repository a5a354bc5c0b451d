"""Hash-based held-out splits: which side of a train/evaluation split an item falls on, by its key alone.

Used for the by-country fact split (calibration evaluation vs SFT data), the emergence problem split and the
ladder's held-out documents. A key's side depends on (key, seed, fraction) only, so it is the same whatever
subset or order of keys a caller holds, and a larger fraction only moves keys into the held-out side.

The key's hash is read as a number in [0, 1) from the first 64 bits of the digest. The three splits used three
spellings before they were merged here (SHA-256 truncated to 48 and 32 bits, BLAKE2b-64); the callers keep
their digest and salting so no default assignment moved (64 bits agree with the shorter reads except for keys
within 2^-32 of the threshold; none of the default keys is).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

DIGESTS = {
    "sha256": lambda data: hashlib.sha256(data).digest(),
    "blake2b": lambda data: hashlib.blake2b(data, digest_size=8).digest(),
}


def unit_hash(text: str, digest: str = "sha256") -> float:
    """``text``'s hash as a number in [0, 1): the first 8 bytes of the digest, big-endian, over 2^64."""
    if digest not in DIGESTS:
        raise ValueError(f"digest: expected one of {sorted(DIGESTS)}, got {digest!r}")
    return int.from_bytes(DIGESTS[digest](text.encode("utf-8"))[:8], "big") / 2.0**64


def _check_fraction(fraction: float) -> float:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction: expected a held-out share in [0, 1], got {fraction}")
    return float(fraction)


def is_held_out(key: str, fraction: float, seed: int | None = None, digest: str = "sha256") -> bool:
    """Whether ``key`` is on the held-out side: hash of ``"{seed}:{key}"`` (``key`` alone when seed is None)."""
    salted = str(key) if seed is None else f"{seed}:{key}"
    return unit_hash(salted, digest) < _check_fraction(fraction)


def held_out_mask(keys: Iterable[str], fraction: float, seed: int | None = None,
                  digest: str = "sha256") -> np.ndarray:
    """Boolean mask over ``keys``: ``is_held_out`` of each."""
    fraction = _check_fraction(fraction)
    return np.asarray([is_held_out(k, fraction, seed, digest) for k in keys], dtype=bool)
