"""Manager commands a sensor answers (spec §13.3), shared by the TCP/5029 server and the C/S task path.

Every command is `async def run(args, out, ctx)`: `args` are the words after the command name, `out` an
`AsyncWriter` the output is streamed into (plain socket, `aes:` stream, or a `response` connection), `ctx`
the sensor's `CommandContext`. A command never raises for bad input: it writes the reply the protocol
prescribes (`access denied`, `error: cannot open file <path>`, `not_exists`, ...). Errors of `out` itself
(the peer went away) propagate.

Lookup follows the reference: the first word of the line selects the command by exact match, else the
first registered name (in alphabetical order) that occurs anywhere in the line; nothing found →
`command not found\\n`.

vmproto keeps no tar archives in its spool (per-call files only, see vmproto.sensor.spool). The
`getfile_in_tar*` commands still read tar archives found in the spool (plain, .gz, .xz, .zst), e.g. ones
copied from a reference sensor; `getfile_in_tar_check_complete` and `flush_tar` answer `OK`, since no tar
is ever being written.
"""

from __future__ import annotations

import errno
import logging
import os
import tarfile
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import trio

from vmproto.logs import log_event
from vmproto.sensor.spool.errors import SpoolAccessError
from vmproto.sensor.spool.layout import SpoolLayout

__all__ = [
    "COMMAND_NOT_FOUND",
    "COMMANDS",
    "NOT_NEED_AES",
    "AsyncWriter",
    "Command",
    "CommandContext",
    "execute",
    "find_command",
    "not_need_aes",
]

log = logging.getLogger("vmproto.sensor.manager")

COMMAND_NOT_FOUND = b"command not found\n"
ACCESS_DENIED = b"access denied"
#: The sniffer version a vmproto sensor reports (the reference release whose protocol it speaks).
COMPAT_VERSION = "2026.04.0"
#: Commands that run without the manager AES wrapper even when a manager key is set (spec §12.3).
NOT_NEED_AES = frozenset({
    "getversion", "getbuild", "getverbuild", "totalcalls", "printspool", "sniffer_stat", "datadir_stat",
    "disk_io_calibration", "disk_io_recalibrate", "sniffer_threads", "memory_stat", "jemalloc_stat",
    "tcmalloc_stats", "thread", "usleep", "sql_errors_skip", "heapprof_stop", "heapprof_dump",
    "packetbuffer_log", "packetbuffer_save",
})
_GZIP_MAGIC = b"\x1f\x8b"


class AsyncWriter(Protocol):
    """Where a command's output goes."""

    async def write(self, data: bytes) -> None: ...


@dataclass(slots=True)
class CommandContext:
    """What commands may touch. `mirror_sender`: this sensor only forwards packets (`file_exists` then
    answers `mirror`). `chunk_size`: read size when streaming files."""

    layout: SpoolLayout
    version: str = COMPAT_VERSION
    mirror_sender: bool = False
    chunk_size: int = 64 * 1024
    gzip_level: int = 6
    stats: dict[str, int] = field(default_factory=dict)


CommandFn = Callable[[list[str], AsyncWriter, CommandContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    run: CommandFn
    help: str


# ---- helpers ------------------------------------------------------------------------------------------------------


def _uint(args: list[str], i: int, default: int = 0) -> int | None:
    """args[i] as an unsigned int (`default` when absent); None when present but not a number."""
    if len(args) <= i:
        return default
    text = args[i]
    return int(text) if text.isdigit() else None


class _Gzip:
    """A gzip member produced incrementally (what the reference's RecompressStream sends for `_zip`)."""

    def __init__(self, level: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)

    def update(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def finish(self) -> bytes:
        return self._z.flush()


async def _stream_file(f: trio.abc.AsyncResource, out: AsyncWriter, zip_: bool, ctx: CommandContext) -> None:
    first = await f.read(ctx.chunk_size)  # type: ignore[attr-defined]
    # Already gzip: sent as is even for `_zip` (the reference does the same).
    gz = _Gzip(ctx.gzip_level) if zip_ and not first.startswith(_GZIP_MAGIC) else None
    chunk = first
    while chunk:
        await out.write(gz.update(chunk) if gz else chunk)
        chunk = await f.read(ctx.chunk_size)  # type: ignore[attr-defined]
    if gz is not None:
        await out.write(gz.finish())


# ---- commands -----------------------------------------------------------------------------------------------------


async def _getfile(args: list[str], out: AsyncWriter, ctx: CommandContext, zip_: bool) -> None:
    if not args:
        await out.write(b"error: missing file name")
        return
    spool_index = _uint(args, 1)
    if spool_index is None or (len(args) > 2 and not args[2].lstrip("-").isdigit()):
        await out.write(b"error: bad spool index or file type")
        return
    try:
        path = ctx.layout.resolve(args[0], spool_index)
    except SpoolAccessError as exc:
        log_event(log, logging.WARNING, "manager path refused", command="getfile", path=args[0], reason=str(exc))
        await out.write(ACCESS_DENIED)
        return
    try:
        f = await trio.open_file(path, "rb")
    except OSError:
        await out.write(b"error: cannot open file " + os.fsencode(path))
        return
    async with f:
        try:
            await _stream_file(f, out, zip_, ctx)
        except IsADirectoryError:
            await out.write(b"error: cannot open file " + os.fsencode(path))


async def getfile(args: list[str], out: AsyncWriter, ctx: CommandContext) -> None:
    """`getfile <relpath> [spool_index] [type_spool_file]`: the file's bytes."""
    await _getfile(args, out, ctx, zip_=False)


async def getfile_zip(args: list[str], out: AsyncWriter, ctx: CommandContext) -> None:
    """`getfile_zip <relpath> ...`: the file gzip-compressed, or as is when it is gzip already."""
    await _getfile(args, out, ctx, zip_=True)


def _file_size(path: Path) -> tuple[int | None, int]:
    """(size of a regular file or None, errno of the failure or 0)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return None, exc.errno or errno.ENOENT
    if not os.path.isfile(path):
        return None, errno.ENOENT
    if not os.access(path, os.R_OK):
        return None, errno.EACCES
    return st.st_size, 0


def _with_continuations(name: str, path: Path, size: int) -> str:
    # A tar split over several files: <name>.1 ... <name>.5 follow while they exist and are not empty.
    text = ""
    if size > 0 and "tar" in name:
        for k in range(1, 6):
            more, _ = _file_size(Path(f"{path}.{k}"))
            if not more:
                break
            text += f";{name}.{k}:{more}"
    return text


async def file_exists(args: list[str], out: AsyncWriter, ctx: CommandContext) -> None:
    """`file_exists <relpath>[|<relpath>...] [spool_index] [type_spool_file]` (spec §13.3).

    Single path: its size (plus tar continuations), `not_exists` or `permission_denied` (also for paths
    outside the spool). Several: `ok\\n<name>:<size>...` lines for those found, else the error word.
    """
    if ctx.mirror_sender:
        await out.write(b"mirror")
        return
    if not args:
        await out.write(b"not_exists")
        return
    spool_index = _uint(args, 1)
    names = args[0].split("|")

    def look(name: str) -> tuple[str | None, int]:
        try:
            path = ctx.layout.resolve(name, spool_index or 0)
        except SpoolAccessError:
            return None, errno.EACCES
        size, err = _file_size(path)
        if size is None:
            return None, err
        return f"{size}" + _with_continuations(name, path, size), 0

    if spool_index is None:
        await out.write(b"not_exists")
        return
    results = await trio.to_thread.run_sync(lambda: [look(n) for n in names])
    if len(names) == 1:
        found, err = results[0]
        if found is not None:
            reply = found
        else:
            reply = "permission_denied" if err == errno.EACCES else "not_exists"
    else:
        lines = [f"{n}:{found}" for n, (found, _) in zip(names, results, strict=True) if found is not None]
        if lines:
            reply = "ok\n" + "\n".join(lines)
        else:
            reply = "permission_denied" if any(err == errno.EACCES for _, err in results) else "not_exists"
    await out.write(reply.encode("utf-8", "surrogateescape"))


async def fileexists(args: list[str], out: AsyncWriter, ctx: CommandContext) -> None:
    """`fileexists <path>`: decimal size; 0 when missing or outside the spool (spec §13.4, §17)."""
    size = 0
    if args:
        try:
            path = ctx.layout.resolve(args[0], 0)
        except SpoolAccessError:
            path = None
        if path is not None:
            found, _ = await trio.to_thread.run_sync(_file_size, path)
            size = found or 0
    await out.write(b"%d" % size)


async def getfile_is_zip_support(args: list[str], out: AsyncWriter, ctx: CommandContext) -> None:
    """`getfile_is_zip_support` → `OK`."""
    await out.write(b"OK")


async def getversion(args: list[str], out: AsyncWriter, ctx: CommandContext) -> None:
    """`getversion` → the version string."""
    await out.write(ctx.version.encode("ascii"))


async def getfile_in_tar_check_complete(args: list[str], out: AsyncWriter, ctx: CommandContext) -> None:
    """`OK`: vmproto never writes tars, so a tar in the spool is never incomplete."""
    await out.write(b"OK")


async def flush_tar(args: list[str], out: AsyncWriter, ctx: CommandContext) -> None:
    """`OK`: there is no tar being written to flush."""
    await out.write(b"OK")


def _open_tar(path: Path) -> tuple[tarfile.TarFile, bool, list[BinaryIO]]:
    """Open a spool tar; return (archive, compressed?, extra handles to close). Raises OSError/TarError."""
    name = path.name.lower()
    if name.endswith((".zst", ".zstd")):
        import zstandard

        raw = open(path, "rb")  # noqa: SIM115 - closed by the caller through the returned list
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(raw)
            return tarfile.open(fileobj=reader, mode="r|"), True, [reader, raw]  # type: ignore[arg-type]
        except BaseException:
            raw.close()
            raise
    if name.endswith(".gz"):
        return tarfile.open(path, "r:gz"), True, []
    if name.endswith(".xz"):
        return tarfile.open(path, "r:xz"), True, []
    return tarfile.open(path, "r:"), False, []


def _tar_member_chunks(path: Path, member: str, chunk_size: int, emit: Callable[[bytes], None]) -> tuple[bool, bool]:
    """Stream `member` of the tar at `path` through `emit` (worker thread). Returns (found, compressed)."""
    archive, compressed, extra = _open_tar(path)
    try:
        for info in archive:
            if not info.isfile() or (info.name != member and os.path.basename(info.name) != member):
                continue
            fobj = archive.extractfile(info)
            if fobj is None:
                return False, compressed
            while chunk := fobj.read(chunk_size):
                emit(chunk)
            return True, compressed
        return False, compressed
    finally:
        archive.close()
        for h in extra:
            h.close()


async def _getfile_in_tar(args: list[str], out: AsyncWriter, ctx: CommandContext, zip_: bool) -> None:
    # <tar> <file> <dateTimeKey> [recordId] [tableType] [tarPos,...|x] [spool_index] [type_spool_file] [end]
    if len(args) < 2:
        await out.write(b"error: missing file []")
        return
    tar_name, member = args[0], args[1]
    spool_index = _uint(args, 6)
    end_string = args[8].encode("utf-8", "surrogateescape") if len(args) > 8 else b""
    try:
        if spool_index is None:
            raise SpoolAccessError("bad spool index")
        path = ctx.layout.resolve(tar_name, spool_index)
    except SpoolAccessError as exc:
        log_event(log, logging.WARNING, "manager path refused", command="getfile_in_tar", path=tar_name,
                  reason=str(exc))
        await out.write(ACCESS_DENIED)
        return
    if not os.path.isfile(path):
        await out.write(b"error: missing file [" + tar_name.encode("utf-8", "surrogateescape") + b"]")
        return
    send, receive = trio.open_memory_channel[bytes](4)
    result: list[tuple[bool, bool]] = []
    failure: list[BaseException] = []

    def worker() -> None:
        def emit(chunk: bytes) -> None:
            trio.from_thread.run(send.send, chunk)
        try:
            result.append(_tar_member_chunks(path, member, ctx.chunk_size, emit))
        except Exception as exc:  # noqa: BLE001 - OSError, TarError, zstd errors, a closed channel: all reported
            failure.append(exc)
        finally:
            trio.from_thread.run_sync(send.close)

    gz: _Gzip | None = None
    decided = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, worker)
        async with receive:
            async for chunk in receive:
                if not decided:
                    decided = True
                    compressed = path.name.lower().endswith((".gz", ".xz", ".zst", ".zstd"))
                    # A member of a plain tar goes out raw; of a compressed tar, re-gzipped for `_zip`.
                    if zip_ and compressed and not chunk.startswith(_GZIP_MAGIC):
                        gz = _Gzip(ctx.gzip_level)
                await out.write(gz.update(chunk) if gz else chunk)
    if failure:
        log_event(log, logging.WARNING, "tar read failed", tar=tar_name, error=str(failure[0]))
        if not decided:
            await out.write(b"error: cannot open file [" + tar_name.encode("utf-8", "surrogateescape") + b"]")
        return
    found = bool(result and result[0][0])
    if gz is not None:
        await out.write(gz.finish())
    elif found and not decided and zip_ and result[0][1]:
        await out.write(_Gzip(ctx.gzip_level).finish())  # empty member: an empty gzip stream
    if found and end_string:
        await out.write(end_string)


async def getfile_in_tar(args: list[str], out: AsyncWriter, ctx: CommandContext) -> None:
    """`getfile_in_tar <tar> <file> <dateTimeKey> ...`: one member of a tar in the spool."""
    await _getfile_in_tar(args, out, ctx, zip_=False)


async def getfile_in_tar_zip(args: list[str], out: AsyncWriter, ctx: CommandContext) -> None:
    """`getfile_in_tar_zip ...`: as getfile_in_tar; members of compressed tars re-gzipped."""
    await _getfile_in_tar(args, out, ctx, zip_=True)


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("file_exists", file_exists, "file exists"),
    Command("fileexists", fileexists, "file exists 2"),
    Command("flush_tar", flush_tar, "flush tar"),
    Command("getfile", getfile, "get file"),
    Command("getfile_in_tar", getfile_in_tar, "get file in tar"),
    Command("getfile_in_tar_check_complete", getfile_in_tar_check_complete, "getfile in tar check complete"),
    Command("getfile_in_tar_zip", getfile_in_tar_zip, "get file in zipped tar"),
    Command("getfile_is_zip_support", getfile_is_zip_support, "check getfile zip support"),
    Command("getfile_zip", getfile_zip, "get zipped file"),
    Command("getversion", getversion, "version"),
)}
_SORTED_NAMES = sorted(COMMANDS)


def first_line(text: str) -> str:
    """The command line: `text` cut at the first CR or LF."""
    for i, c in enumerate(text):
        if c in "\r\n":
            return text[:i]
    return text


def find_command(line: str) -> tuple[Command | None, list[str]]:
    """The command for `line` and its arguments (words after the first), as the reference looks it up."""
    words = first_line(line).split()
    if not words:
        return None, []
    cmd = COMMANDS.get(words[0])
    if cmd is None:
        cmd = next((COMMANDS[n] for n in _SORTED_NAMES if n in line), None)
    return cmd, words[1:]


def not_need_aes(line: str) -> bool:
    """True when the command of `line` works without the manager AES wrapper (spec §12.3)."""
    words = first_line(line).split()
    return bool(words) and words[0] in NOT_NEED_AES


async def execute(line: str, out: AsyncWriter, ctx: CommandContext) -> str | None:
    """Run the command of `line`, writing its output to `out`. Returns the command's name, or None after
    answering `command not found\\n`."""
    cmd, args = find_command(line)
    if cmd is None:
        await out.write(COMMAND_NOT_FOUND)
        return None
    ctx.stats[cmd.name] = ctx.stats.get(cmd.name, 0) + 1
    await cmd.run(args, out, ctx)
    return cmd.name
