"""A checkpoint's records in the state topic: its chunks and its manifest, written and read back; no I/O.

A checkpoint of partition `<topic>[<p>]` for group `<g>` is
- chunks of the snapshot, keyed `<g>/<topic>/<p>/<slot>/<n>`, each under CHUNK_BYTES (a message stays
  under the broker's default 1 MB limit), then
- a manifest, keyed `<g>/<topic>/<p>`, written only once every chunk is: it names the offset the
  snapshot covers (the next record to read), the rules' version, the snapshot format, the slot, the
  chunk count, the stored bytes' length and SHA-256, when it was written, and the snapshot's length.
The snapshot is stored zstd-compressed (record format 2; about 0.38 of its size, which is what a restart
reads back); format 1, stored as it is, is still read, so an upgrade restores the checkpoints before it.
Whoever can write the state topic can write anything there: a manifest is bounded as it is decoded (its
sizes and counts before anything is allocated for them), and chunks that do not add up to its hash are
refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

import cramjam
import msgspec
from aiokafka import TopicPartition

CHUNK_BYTES = 512 * 1024  # well under the broker's and the producer's 1 MB defaults, with room for key and headers
RECORD_FORMAT = 2  # the manifest's own layout and the chunks' encoding: 2 is zstd-compressed, 1 stored as is
READABLE_FORMATS = (1, 2)
ZSTD_LEVEL = 1  # 0.38 of a snapshot's size at ~450 MB/s; higher levels gain a few percent at twice the time
MAX_BYTES = 1 << 30  # a snapshot this large is no partition's state within GUARD_MAX_CAMPAIGNS' reach: refused
MAX_CHUNKS = MAX_BYTES // CHUNK_BYTES

Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_CHUNKS)]


class Manifest(msgspec.Struct, array_like=True):
    """Bounded as it is decoded (the state topic is input, whoever wrote it): a manifest out of these
    bounds is refused before anything is allocated for it."""

    format: int  # RECORD_FORMAT
    snapshot_format: int
    offset: Annotated[int, msgspec.Meta(ge=0)]  # the first input record the snapshot does not cover
    rules_version: Annotated[str, msgspec.Meta(max_length=64)]
    slot: Annotated[int, msgspec.Meta(ge=0, le=1)]
    chunks: Count
    size: Annotated[int, msgspec.Meta(ge=0, le=MAX_BYTES)]
    sha256: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    written_ms: Annotated[int, msgspec.Meta(ge=0)]  # wall clock: a checkpoint older than the look-back is not used
    other_chunks: Count = 0  # chunk keys the other slot holds (numbers below this): the next write's tombstones
    raw_size: Annotated[int, msgspec.Meta(ge=0, le=MAX_BYTES)] = 0  # format 2: the snapshot's length, uncompressed

    def __post_init__(self) -> None:
        if self.chunks != max(1, -(-self.size // CHUNK_BYTES)):
            raise ValueError(f"{self.chunks} chunks for {self.size} bytes")


_manifest_decoder = msgspec.msgpack.Decoder(Manifest)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint whose snapshot is assembled: its chunks joined, checked against the manifest, decompressed."""

    offset: int
    rules_version: str
    snapshot_format: int
    written_ms: int
    slot: int
    data: bytes
    chunks: int = 0
    other_chunks: int = 0


@dataclass(frozen=True, slots=True)
class Found:
    """A checkpoint read back: its manifest decoded and every chunk at hand. `assembled` does the rest (the
    join, the hash, the decompression: tenths of a second for a large partition, done when it is to be used)."""

    manifest: Manifest
    parts: tuple[bytes, ...]
    torn: int = 0  # chunks of a later write whose manifest never arrived (a crash mid-write); not used
    skipped: tuple[CheckpointError, ...] = ()  # why each newer manifest of the partition could not be used
    previous: Found | None = None  # the checkpoint before it, if its records were read

    @property
    def offset(self) -> int:
        return self.manifest.offset

    @property
    def rules_version(self) -> str:
        return self.manifest.rules_version

    @property
    def snapshot_format(self) -> int:
        return self.manifest.snapshot_format

    @property
    def written_ms(self) -> int:
        return self.manifest.written_ms

    @property
    def slot(self) -> int:
        return self.manifest.slot

    @property
    def chunks(self) -> int:
        return self.manifest.chunks

    @property
    def other_chunks(self) -> int:
        return self.manifest.other_chunks

    def assembled(self) -> Checkpoint:
        """The checkpoint with its snapshot; CheckpointError if the chunks do not add up to the manifest."""
        manifest = self.manifest
        data = b"".join(self.parts)
        if len(data) != manifest.size or hashlib.sha256(data).digest() != manifest.sha256:
            raise CheckpointError("chunks do not match the manifest (a torn or corrupt write)")
        if manifest.format == 2:
            data = _decompressed(data, manifest.raw_size)
        return Checkpoint(
            manifest.offset,
            manifest.rules_version,
            manifest.snapshot_format,
            manifest.written_ms,
            manifest.slot,
            data,
            chunks=manifest.chunks,
            other_chunks=manifest.other_chunks,
        )


class CheckpointError(ValueError):
    """A stored checkpoint that cannot be used: torn, corrupt, or of another record format."""


class TornCheckpoint(CheckpointError):
    """Chunks of a partition's first checkpoint, written without their manifest (a crash mid-write)."""


class OtherSettingsCheckpoint(CheckpointError):
    """A sound checkpoint taken under other settings (GUARD_DEDUPE_HORIZON, GUARD_RESUME_GRACE, the capacity shares)."""


class InvalidCheckpoint(CheckpointError):
    """A checkpoint whose bytes add up but whose values do not: out of bounds, forged or from a broken writer."""


def partition_key(group: str, tp: TopicPartition) -> str:
    return f"{group}/{tp.topic}/{tp.partition}"


def chunk_key(prefix: str, slot: int, number: int) -> bytes:
    return f"{prefix}/{slot}/{number}".encode()


def stored_chunks(prefix: str, keys: Iterable[bytes]) -> dict[int, set[int]]:
    """The chunk numbers present per slot among `keys`, for the partition of `prefix`."""
    found: dict[int, set[int]] = {0: set(), 1: set()}
    start = f"{prefix}/".encode()
    for key in keys:
        if key.startswith(start):
            slot, _, number = key[len(start) :].partition(b"/")
            if slot in (b"0", b"1") and number.isdigit():
                found[int(slot)].add(int(number))
    return found


def records(
    group: str,
    tp: TopicPartition,
    data: bytes,
    offset: int,
    rules_version: str,
    snapshot_format: int,
    slot: int,
    other_chunks: int = 0,
) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of one checkpoint, in the order they must be written: the manifest last."""
    prefix = partition_key(group, tp)
    stored = bytes(cramjam.zstd.compress(data, level=ZSTD_LEVEL))
    chunks = [stored[at : at + CHUNK_BYTES] for at in range(0, len(stored), CHUNK_BYTES)] or [b""]
    manifest = Manifest(
        RECORD_FORMAT,
        snapshot_format,
        offset,
        rules_version,
        slot,
        len(chunks),
        len(stored),
        hashlib.sha256(stored).digest(),
        int(time.time() * 1000),
        other_chunks,
        len(data),
    )
    written = [(chunk_key(prefix, slot, n), chunk) for n, chunk in enumerate(chunks)]
    return [*written, (prefix.encode(), msgspec.msgpack.encode(manifest))]


def found(manifest_value: bytes, latest: dict[bytes, bytes], prefix: str) -> Found:
    """The checkpoint a manifest names, its chunks the newest value of their keys; CheckpointError if a chunk is
    missing or the manifest cannot be used. Its snapshot is not assembled yet (`Found.assembled`)."""
    manifest = manifest_of(manifest_value)
    parts = [latest.get(chunk_key(prefix, manifest.slot, n)) for n in range(manifest.chunks)]
    if any(part is None for part in parts):
        raise CheckpointError("chunks missing")
    return Found(manifest, tuple(parts))  # type: ignore[arg-type]


def assemble(manifest_value: bytes, latest: dict[bytes, bytes], prefix: str) -> Checkpoint:
    """The checkpoint a manifest names, from the newest value of every key; CheckpointError if it does not add up."""
    return found(manifest_value, latest, prefix).assembled()


def _decompressed(stored: bytes, size: int) -> bytes:
    """The snapshot of `size` bytes that `stored` holds compressed; never more than `size` is written."""
    snapshot = bytearray(size)
    try:
        written = cramjam.zstd.decompress_into(stored, snapshot)
    except cramjam.DecompressionError as error:
        raise InvalidCheckpoint(f"the snapshot does not decompress to its {size} bytes: {error}") from None
    if written != size:
        raise InvalidCheckpoint(f"the snapshot decompresses to {written} bytes, its manifest says {size}")
    return bytes(snapshot)


def manifest_of(value: bytes) -> Manifest:
    """The manifest `value` holds, within its bounds; CheckpointError if it does not."""
    try:
        manifest = _manifest_decoder.decode(value)
    except msgspec.ValidationError as error:  # "... at `$[2]`": name the field
        named = re.sub(r"`\$\[(\d+)\]`", lambda at: Manifest.__struct_fields__[int(at[1])], str(error))
        raise InvalidCheckpoint(f"invalid manifest: {named}") from None
    except Exception as error:  # whatever the bytes: unusable, never a crash
        raise CheckpointError(f"unreadable manifest: {error!r}") from None
    if manifest.format not in READABLE_FORMATS:
        raise CheckpointError(f"checkpoint record format {manifest.format}, this guard reads {READABLE_FORMATS}")
    return manifest


def complete(
    prefix: str, latest: dict[bytes, tuple[bytes | None, int]], manifests: list[tuple[bytes | None, int]] | None = None
) -> int | None:
    """The time of the partition's newest usable manifest once it and its chunks have been read, else None:
    read further back. `manifests` are every value of its manifest key read, newest first (default: the
    newest alone); an unusable one is passed over for the one before it, a tombstone ends the search."""
    if manifests is None:
        manifests = [latest[prefix.encode()]] if prefix.encode() in latest else []
    for value, written_ms in manifests:
        if value is None:
            return written_ms
        try:
            manifest = manifest_of(value)
        except CheckpointError:
            continue
        if all(chunk_key(prefix, manifest.slot, n) in latest for n in range(manifest.chunks)):
            return written_ms
        return None
    return None


def whole(
    prefix: str, manifests: list[tuple[bytes | None, int]], values: dict[bytes, bytes]
) -> list[Found | CheckpointError]:
    """Why each newer manifest cannot be used, then the newest checkpoint with all its chunks, with the one before it
    (up to a tombstone) as its `previous`. Ends with an error when no checkpoint has all its chunks. Nothing is
    assembled: a checkpoint whose chunks do not add up is found so when it is (the restore then takes the one
    before it)."""
    tried: list[Found | CheckpointError] = []
    usable: list[Found] = []
    for value, _ in manifests:
        if value is None:
            break
        try:
            checkpoint = found(value, values, prefix)
        except CheckpointError as error:
            if not usable:
                tried.append(error)
            continue
        except Exception as error:  # whatever a record holds: unusable, never a crash
            if not usable:
                tried.append(CheckpointError(f"unreadable checkpoint: {error!r}"))
            continue
        usable.append(checkpoint)
        if len(usable) == 2:  # the slots alternate: an older one's chunks were written over by the newest
            break
    previous: Found | None = None
    for checkpoint in reversed(usable):
        previous = dataclasses.replace(checkpoint, previous=previous)
    return [*tried, previous] if previous is not None else tried
