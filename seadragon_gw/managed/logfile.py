"""A managed process's output: appended to one file per backend, rotated at a size limit,
with the last lines kept in memory so a failed start can say why."""

from __future__ import annotations

import collections
import contextlib
import os
from pathlib import Path
from typing import BinaryIO


class ProcessLog:
    """Lines go to `<dir>/<name>.log`; past `max_bytes` it becomes `<name>.log.1` (one old
    file kept, so a chatty process cannot fill the disk)."""

    def __init__(self, directory: str, name: str, max_bytes: int, tail_lines: int = 20) -> None:
        self.path = Path(directory) / f"{name}.log"
        self.max_bytes = max_bytes
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._file: BinaryIO | None = None

    def write(self, line: bytes, stream: str) -> None:
        if stream == "stderr":
            self._tail.append(line.decode("utf-8", "replace").rstrip())
        file = self._open()
        file.write(line if line.endswith(b"\n") else line + b"\n")
        file.flush()
        if file.tell() >= self.max_bytes:
            self._rotate()

    def tail(self) -> str:
        """The last lines the process wrote to stderr, for an error message or the log."""
        return " | ".join(line for line in self._tail if line)

    def clear_tail(self) -> None:
        self._tail.clear()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
        return self._file

    def _rotate(self) -> None:
        self.close()
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
