"""Reading a policy's bytes: only from a regular file, and only as much as a policy could be.

A path can name anything: a FIFO (reading it would wait for a writer that
never comes), `/dev/zero` (endless), a directory, or a file far too large to
be a policy. Each of these is refused with a reason, never read. The file is
opened without blocking and checked on the open descriptor, so it cannot be
swapped for something else between the check and the read.
"""

from __future__ import annotations

import os
import stat

MAX_BYTES = 4 * 1024 * 1024  # 4 MiB: a 10,000-rule policy is about 0.6 MiB
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


class SourceError(Exception):
    """Why a file cannot be read as a policy, in a few words; `missing` when it is not there."""

    def __init__(self, reason: str, missing: bool = False) -> None:
        super().__init__(reason)
        self.missing = missing


def read_source(path: str) -> bytes:
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise SourceError(exc.strerror or str(exc), isinstance(exc, FileNotFoundError)) from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SourceError("it is a directory")
        if not stat.S_ISREG(mode):
            raise SourceError("not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BYTES:
            raise SourceError(f"larger than {MAX_BYTES // (1 << 20)} MiB, too large for a policy")
        return b"".join(chunks)
    except OSError as exc:
        raise SourceError(exc.strerror or str(exc)) from exc
    finally:
        os.close(fd)
