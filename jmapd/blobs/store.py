# -*- test-case-name: tests.blobs.test_store -*-
"""
Content-addressed blob files under the data directory.

A blob's id is derived from the SHA-256 of its bytes, so the same content is
stored once however many accounts or messages refer to it.  A blob is
written to a temporary file, fsynced, renamed into place and its directory
fsynced before its id is returned: an acknowledged blob survives a crash.
These are blocking calls for worker threads.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from typing import BinaryIO

_CHUNK = 1 << 16
_BLOB_ID = re.compile(r"b[a-z2-7]{52}")


def blob_id_for_digest(digest: bytes) -> str:
    return "b" + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def blob_id_of(data: bytes) -> str:
    """
    The blob id the content C{data} has.
    """
    return blob_id_for_digest(hashlib.sha256(data).digest())


def is_blob_id(value: str) -> bool:
    # fullmatch: "$" would also accept a trailing newline.
    return bool(_BLOB_ID.fullmatch(value))


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobStore:
    """
    Blobs as files C{root/xx/yy/<blob id>}.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._tmp = os.path.join(root, "tmp")
        os.makedirs(self._tmp, exist_ok=True)

    def path(self, blob_id: str) -> str:
        if not is_blob_id(blob_id):
            raise ValueError(f"not a blob id: {blob_id!r}")
        return os.path.join(self.root, blob_id[1:3], blob_id[3:5], blob_id)

    def exists(self, blob_id: str) -> bool:
        return is_blob_id(blob_id) and os.path.exists(self.path(blob_id))

    def size(self, blob_id: str) -> int:
        return os.path.getsize(self.path(blob_id))

    def put(self, data: bytes) -> str:
        """
        Store C{data}; return its blob id once it is durable.
        """
        return self.put_chunks([data])

    def put_file(self, source: BinaryIO) -> str:
        """
        Store what C{source} holds from its current position to the end.
        """
        return self.put_chunks(iter(lambda: source.read(_CHUNK), b""))

    def put_chunks(self, chunks: Iterable[bytes]) -> str:
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            blob_id = blob_id_for_digest(digest.digest())
            final = self.path(blob_id)
            if os.path.exists(final):
                os.unlink(tmp)
                return blob_id
            directory = os.path.dirname(final)
            os.makedirs(directory, exist_ok=True)
            os.replace(tmp, final)
            _fsync_directory(directory)
            return blob_id
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def open(self, blob_id: str) -> BinaryIO:
        return open(self.path(blob_id), "rb")

    def read(self, blob_id: str) -> bytes:
        with self.open(blob_id) as f:
            return f.read()

    def delete(self, blob_id: str) -> None:
        try:
            os.unlink(self.path(blob_id))
        except FileNotFoundError:
            pass
