# -*- test-case-name: tests.blobs.test_store -*-
"""
Content-addressed blob files under the data directory.

A blob's id is derived from the SHA-256 of its bytes, so the same content is
stored once however many accounts or messages refer to it.  Every C{put}
returns only once the blob is durable (its file and the directories naming
it fsynced): an acknowledged blob survives a crash.  These are blocking
calls for worker threads.

Many blobs can be made durable together (delivered messages moved from
their staging rows, L{jmapd.blobs.writeback}): L{FileBlobStore.write} puts
a blob's file in place without waiting for the disk and
L{FileBlobStore.sync} then makes a whole batch durable with one flush of
the file system instead of two fsyncs per blob.
Because a written file is in place before it is durable, a crash can leave
a file whose content is incomplete under its final name: nothing refers to
it (the caller records a blob only after C{sync}), and the next C{write}
of the same content compares what is there and replaces it.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import itertools
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

from attrs import frozen

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


def _load_syncfs() -> Callable[[int], None] | None:
    """
    Linux's C{syncfs(2)} (not in the C{os} module of Python 3.11), or
    C{None} where there is none.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if function(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))

    return syncfs


#: Flush a whole file system, given a descriptor of a file in it.  Since
#: Linux 5.8 it reports writeback errors of the file system, as fsync does.
_syncfs = _load_syncfs() if sys.platform.startswith("linux") else None


def _fsync(path: str) -> None:
    """
    fsync a file or directory by name (Linux flushes an inode whichever
    descriptor asks).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@frozen
class Written:
    """
    A blob whose file is in place but not yet durable (L{FileBlobStore.write}).

    @ivar path: its file.
    @ivar directories: the directories to fsync with it: the file's and,
        while that one may be new, its parents.
    """

    blob_id: str
    path: str
    directories: tuple[str, ...]


class FileBlobStore:
    """
    Blobs as files C{root/xx/yy/<blob id>}.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._tmp = os.path.join(root, "tmp")
        os.makedirs(self._tmp, exist_ok=True)
        # The fan-out directories whose entries, and their parents', are
        # known to be durable: a blob added to one needs only it fsynced,
        # and no call asks the file system whether it exists.
        self._durable: set[str] = set()
        self._lock = threading.Lock()
        self._serial = itertools.count()

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
        return self.put_many([data])[0]

    def put_many(self, items: Sequence[bytes]) -> list[str]:
        """
        Store each of C{items}; return their blob ids once all are durable.
        """
        written = [self.write(data) for data in items]
        self.sync(written)
        return [w.blob_id for w in written]

    def write(self, data: bytes) -> Written:
        """
        Put C{data} in its file without waiting for the disk; L{sync}
        makes it durable.  Until then, nothing may refer to its blob id
        durably (the blobs table, an Email).
        """
        blob_id = blob_id_of(data)
        final = self.path(blob_id)
        directories = self._directories_for(os.path.dirname(final))
        if not self._holds(final, data):
            # The temporary file is made beside the final one, not in the
            # shared tmp directory: on ext4 creating a file in a directory
            # where many were created and renamed away costs about 1.3 ms
            # of CPU (searching the inode bitmap), in the fan-out
            # directory 0.2 ms.  Its name (a dot, never a blob id) is
            # unique to this process and thread.
            tmp = os.path.join(
                os.path.dirname(final), f".{blob_id}.{os.getpid()}.{threading.get_ident()}.{next(self._serial)}"
            )
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp, final)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        # A file already there may not be durable yet either (written for
        # a group whose sync or transaction failed): it is synced anyway.
        return Written(blob_id, final, directories)

    def sync(self, written: Iterable[Written]) -> None:
        """
        Make written blobs durable, all at once.

        On Linux this is one C{syncfs} of the store's file system: on the
        disks measured, every fsync costs a device cache flush, even one
        whose journal commit an earlier fsync already did, so one call
        for the group is cheaper than one per file and one per directory
        from two blobs on (it also writes out whatever else is pending on
        that file system: keep the data directory on its own).  Elsewhere
        each file is fsynced, then each directory a write changed, once
        however many blobs it holds.
        """
        written = list(written)
        if not written:
            return
        if _syncfs is not None:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                _syncfs(fd)
            finally:
                os.close(fd)
        else:
            directories: dict[str, None] = {}
            for w in written:
                _fsync(w.path)
                for directory in w.directories:
                    directories[directory] = None
            for directory in directories:
                _fsync(directory)
        with self._lock:
            for w in written:
                if len(w.directories) > 1:
                    self._durable.add(w.directories[0])

    @staticmethod
    def _holds(path: str, data: bytes) -> bool:
        """
        Whether the file C{path} exists with exactly C{data} in it (a crash
        may have left an incomplete file there).
        """
        try:
            with open(path, "rb") as f:
                return f.read(len(data) + 1) == data
        except FileNotFoundError:
            return False

    def _directories_for(self, directory: str) -> tuple[str, ...]:
        """
        Make sure the fan-out directory C{directory} exists; return the
        directories to fsync for a file added to it: C{directory} itself
        and, until it is known to be durable, its parents up to the root.
        """
        if directory in self._durable:
            return (directory,)
        os.makedirs(directory, exist_ok=True)
        parent = os.path.dirname(directory)
        return (directory, parent, os.path.dirname(parent))

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
            directories = self._directories_for(os.path.dirname(final))
            # Even when the file exists: it may be a write not yet synced
            # (or cut short by a crash); this one is durable, and replacing
            # is atomic for readers.
            os.replace(tmp, final)
            for directory in directories:
                _fsync(directory)
            with self._lock:
                self._durable.add(directories[0])
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

    def remove_leftovers(self, before: float) -> int:
        """
        Remove the temporary files that writes interrupted by a crash left
        behind, last changed before C{before} (seconds since the epoch):
        the dot-named files beside the blobs (L{write}) and the files in
        C{tmp/} (L{put_chunks}).  A write that is still going on (this
        process's, or another node's sharing the directory) changed its
        file more recently than any sensible C{before}; a blob (named by
        its id) is never touched.

        @return: how many files were removed.
        """
        removed = 0
        for directory, names in self._leftover_candidates():
            for name in names:
                path = os.path.join(directory, name)
                try:
                    if os.lstat(path).st_mtime < before:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    # Renamed into place or removed meanwhile.
                    pass
        return removed

    def _leftover_candidates(self) -> Iterator[tuple[str, list[str]]]:
        """
        Each directory that may hold temporary files, with the names in it
        that may be ones: every file of C{tmp/}, the dot-named files of
        each fan-out directory.
        """
        with os.scandir(self._tmp) as entries:
            yield self._tmp, [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]
        for first in _fan_out(self.root):
            for second in _fan_out(first):
                with os.scandir(second) as entries:
                    names = [
                        entry.name
                        for entry in entries
                        if entry.name.startswith(".") and entry.is_file(follow_symlinks=False)
                    ]
                if names:
                    yield second, names


def _fan_out(directory: str) -> list[str]:
    """
    The fan-out directories (two characters of a blob id) in C{directory}.
    """
    with os.scandir(directory) as entries:
        return [
            entry.path
            for entry in entries
            if len(entry.name) == 2 and not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
        ]
