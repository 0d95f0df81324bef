"""Reading QuestionnaireResponses from files, NDJSON, folders, Bundles and stdin, as a stream.

Every record comes out with a label that says where it came from (``file``, ``file:line``,
``file#entry[3]``), and every unreadable record comes out as an :class:`InputError` in the
stream instead of stopping it, so one broken line never blocks a batch.

Memory stays flat in the size of the input, because back-fills are files of millions of lines:
NDJSON is read line by line in binary, folders are walked lazily (in the order of their sorted
paths), and nothing is kept after it is handed on. A JSON document (one resource, or a Bundle)
is read whole and parsed once: a file that is not valid JSON gets one error, never one per line.

Which is which: ``.ndjson`` / ``.jsonl`` files are NDJSON; any other file, and stdin, is NDJSON
when its first non-blank line is a JSON value by itself and more lines follow, else one JSON
document (a pretty-printed document's first line, ``{``, is not a value by itself).

Reading happens in two steps so the CLI can parse in worker processes: :func:`read_raw` yields
``(label, bytes)`` pairs (or errors), :func:`parse_raw` turns one into records;
:func:`read_inputs` is both.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, TextIO

from .._json import JSONDecodeError, describe_error, loads
from ..errors import InputError

__all__ = ["Parsed", "Raw", "Record", "parse_raw", "read_inputs", "read_raw"]

Record = tuple[str, Any]
"""(label, parsed JSON) or (label, InputError)."""

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
SUFFIXES = (".json", *NDJSON_SUFFIXES)
_READ_BUFFER = 1 << 16


class Parsed:
    """A value parsed already while telling NDJSON from a document (so it is never parsed twice)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


Raw = tuple[str, "bytes | bytearray | Parsed | InputError", bool]
"""(label, JSON text or a parsed value or an error, whether the text is an NDJSON line)."""


def read_inputs(paths: Iterable[str], stdin: IO[Any] | None = None) -> Iterator[Record]:
    """Yield every JSON resource found in ``paths`` (``-`` is stdin), in a stable order."""
    for raw in read_raw(paths, stdin):
        yield from parse_raw(raw)


def parse_raw(raw: Raw) -> Iterator[Record]:
    """The records of one raw item: its resource, or each entry of a Bundle, or its error."""
    label, data, line = raw
    if isinstance(data, InputError):
        yield label, data
        return
    if isinstance(data, Parsed):
        yield from _unbundle(data.value, label)
        return
    try:
        doc = loads(data)
    except JSONDecodeError as exc:
        yield label, InputError(label, describe_error(exc, data, with_line=not line))
        return
    yield from _unbundle(doc, label)


def read_raw(paths: Iterable[str], stdin: IO[Any] | None = None) -> Iterator[Raw]:
    """Each NDJSON line or JSON document of ``paths`` as bytes, lazily, with its label."""
    for raw in paths:
        if raw == "-":
            yield from _read_stream(_binary(stdin or sys.stdin), "<stdin>", ndjson=None)
            continue
        path = Path(raw)
        try:
            is_dir = path.is_dir()
            exists = is_dir or path.exists() or path.is_symlink()
        except OSError as exc:
            yield str(path), InputError(str(path), f"cannot read ({exc.strerror or exc})"), False
            continue
        if is_dir:
            for item in _walk(path, set()):
                yield from _read_file(item) if isinstance(item, Path) else (item,)
        elif exists:
            yield from _read_file(path)
        else:
            yield str(path), InputError(str(path), "no such file or directory"), False


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[Path | Raw]:
    """Files named *.json / *.ndjson under ``folder``, in sorted-path order, one folder listing at a time.

    An unreadable folder is an error (never skipped in silence); a folder reached twice (a
    symlink loop) is walked once.
    """
    try:
        info = folder.stat()
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as exc:
        yield str(folder), InputError(str(folder), f"cannot read folder ({exc.strerror or exc})"), False
        return
    seen.add((info.st_dev, info.st_ino))
    for entry in entries:
        path = Path(entry.path)
        if _is_dir(entry):
            try:
                child = entry.stat()
            except OSError as exc:
                yield str(path), InputError(str(path), f"cannot read folder ({exc.strerror or exc})"), False
                continue
            if (child.st_dev, child.st_ino) not in seen:
                yield from _walk(path, seen)
        elif entry.name.endswith(SUFFIXES) and not entry.name.startswith("."):
            yield path


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _read_file(path: Path) -> Iterator[Raw]:
    label = str(path)
    try:
        handle = _open_regular(path)
    except OSError as exc:
        yield label, InputError(label, f"cannot read ({exc.strerror or exc})"), False
        return
    if isinstance(handle, str):
        yield label, InputError(label, handle), False
        return
    with handle:
        yield from _read_stream(handle, label, ndjson=path.suffix in NDJSON_SUFFIXES or None)


def _open_regular(path: Path) -> BinaryIO | str:
    """The file opened for reading, or why it is refused: a FIFO, device or socket would block or never end.

    Opened without blocking first (a FIFO without a writer would hang ``open`` itself), then
    checked on the open descriptor, so the check and the read are about the same file.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "not a file"
            )
            os.close(fd)
            return f"not a regular file ({kind}); refused (use - to read standard input)"
        os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb", buffering=_READ_BUFFER)


def _binary(stream: IO[Any]) -> IO[bytes] | _EncodedLines:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return buffer  # type: ignore[no-any-return]
    if isinstance(stream.read(0), bytes):
        return stream
    return _EncodedLines(stream)


class _EncodedLines:
    """A text stream without a binary buffer (e.g. ``io.StringIO``), read as UTF-8 lines."""

    def __init__(self, stream: IO[str] | TextIO) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            yield line.encode("utf-8", "surrogatepass")

    def read(self) -> bytes:
        return self._stream.read().encode("utf-8", "surrogatepass")


def _read_stream(stream: IO[bytes] | _EncodedLines, label: str, ndjson: bool | None) -> Iterator[Raw]:
    """NDJSON lines one by one, or the whole stream as one document (see the module docstring)."""
    lines = iter(stream)
    number = 0
    if not ndjson:
        head: list[bytes] = []  # every line read while deciding, blank ones too (for line numbers)
        first = second = None
        for text in lines:
            head.append(text)
            if text.isspace():
                continue
            if first is None:
                first = text
                continue
            second = text
            break
        if first is None:
            yield label, InputError(label, "empty: no JSON in it"), False
            return
        if second is None:
            yield label, b"".join(head), False
            return
        try:
            value = loads(first)
        except JSONDecodeError:  # not a value by itself: one document, read whole and parsed once
            yield label, _rest(head, stream), False
            return
        yield f"{label}:{head.index(first) + 1}", Parsed(value), True
        number = len(head)
        yield f"{label}:{number}", second, True
    for text in lines:
        number += 1
        if not text.isspace():
            yield f"{label}:{number}", text, True


def _rest(head: list[bytes], stream: IO[bytes] | _EncodedLines) -> bytearray:
    """The lines read so far and the rest of the stream, in one buffer (no second copy of a large document)."""
    document = bytearray().join(head)
    if isinstance(stream, _EncodedLines):
        document += stream.read()
    else:
        while chunk := stream.read(_READ_BUFFER * 16):
            document += chunk
    return document


def _unbundle(doc: Any, label: str) -> Iterator[Record]:
    """A Bundle's resources one by one; a searchset's included resources and outcomes are not responses, so left out."""
    if not (isinstance(doc, dict) and doc.get("resourceType") == "Bundle"):
        yield label, doc
        return
    entries = doc.get("entry")
    if entries is None:
        return
    if not isinstance(entries, list):
        yield label, InputError(label, "malformed Bundle: entry is not a JSON array")
        return
    searchset = doc.get("type") == "searchset"
    for index, entry in enumerate(entries):
        where = f"{label}#entry[{index}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if searchset and _search_mode(entry) in ("include", "outcome"):
            continue
        yield where, resource if resource is not None else InputError(where, "Bundle entry has no resource")


def _search_mode(entry: Any) -> Any:
    search = entry.get("search") if isinstance(entry, dict) else None
    return search.get("mode") if isinstance(search, dict) else None
