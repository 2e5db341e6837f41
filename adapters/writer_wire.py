"""The frames between an API process and the writer process (length-prefixed msgpack)."""

from __future__ import annotations

import asyncio
import struct
from uuid import UUID

import msgspec

from domain.ingest import IngestResult, UsageSubmission

HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024


class WriteRequest(msgspec.Struct, array_like=True):
    id: int
    submissions: list[UsageSubmission]
    # Tenants changed by the API (a cap set, say): the writer reads them again before its
    # next batch, and answers this request after that batch (one byte when empty).
    tenants_changed: list[UUID] = msgspec.field(default_factory=list)


class WriteResponse(msgspec.Struct, array_like=True):
    id: int
    results: list[IngestResult] | None
    error: str | None = None
    batch_events: int = 0
    commit_seconds: float = 0.0


ENCODER = msgspec.msgpack.Encoder()
REQUESTS = msgspec.msgpack.Decoder(WriteRequest)
RESPONSES = msgspec.msgpack.Decoder(WriteResponse)


def frame(message: WriteRequest | WriteResponse) -> bytes:
    body = ENCODER.encode(message)
    return HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the limit")
    return await reader.readexactly(size)
