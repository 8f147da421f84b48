"""Checksums written as ``algorithm:hex`` so the algorithm is never guessed.

``sha256`` is the default (S3 servers verify it natively); ``xxh3_128`` is the fast
option for data that never leaves our own disks.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import BinaryIO, Protocol

import xxhash

from ccat_operators.safefs import StreamingFile

DEFAULT_ALGORITHM = "sha256"
ALGORITHMS = ("sha256", "xxh3_128")
READ_SIZE = 1 << 20
_CHECKSUM = re.compile(r"^(?P<algorithm>[a-z0-9_]+):(?P<digest>[0-9a-f]+)$")
_DIGEST_LENGTH = {"sha256": 64, "xxh3_128": 32}
_COLLISION_RESISTANT = frozenset({"sha256"})


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def new_hasher(algorithm: str = DEFAULT_ALGORITHM) -> Hasher:
    """Return an incremental hasher for ``algorithm``."""
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "xxh3_128":
        return xxhash.xxh3_128()
    raise ValueError(f"unknown checksum algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")


def binds_content(algorithm: str) -> bool:
    """True if equal checksums of ``algorithm`` prove equal bytes, even against a forger.

    sha256 is collision resistant; xxh3_128 catches accidental damage only.
    """
    return algorithm in _COLLISION_RESISTANT


def parse(checksum: str) -> tuple[str, str]:
    """Split ``algorithm:hex`` into its parts, refusing anything malformed."""
    match = _CHECKSUM.match(checksum or "")
    if match is None or match["algorithm"] not in ALGORITHMS:
        raise ValueError(f"{checksum!r} is not a checksum of the form algorithm:hex ({', '.join(ALGORITHMS)})")
    algorithm, digest = match["algorithm"], match["digest"]
    if len(digest) != _DIGEST_LENGTH[algorithm]:
        raise ValueError(f"{checksum!r}: a {algorithm} digest has {_DIGEST_LENGTH[algorithm]} hex digits")
    return algorithm, digest


def stream_checksum(stream: BinaryIO, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """Return ``algorithm:hex`` of everything left in a binary stream, read in 1 MiB blocks."""
    hasher = new_hasher(algorithm)
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    while read := stream.readinto(buffer):
        hasher.update(view[:read])
    return f"{algorithm}:{hasher.hexdigest()}"


def file_checksum(path: Path, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """Return ``algorithm:hex`` of a file's bytes, read in 1 MiB blocks."""
    with StreamingFile(path) as stream:
        return stream_checksum(stream, algorithm)
