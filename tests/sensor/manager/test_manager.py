"""Manager commands over the spool, and the TCP/5029 server on loopback (plain and AES-wrapped requests)."""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
from pathlib import Path

import pytest
import trio

from vmproto.sensor.manager import (
    COMMAND_NOT_FOUND,
    NEED_AES_REPLY,
    CommandContext,
    ManagerServer,
    execute,
    find_command,
    not_need_aes,
    parse_request,
)
from vmproto.sensor.spool import SpoolLayout
from vmproto.wire.crypto import AesStreamDecryptor, ManagerAesKey, wrap_manager_request

REL = "2025-11-20/10/00/SIP/call-1@x.pcap"
KEY = ManagerAesKey(b"0123456789abcdef0123456789abcdef", b"fedcba9876543210")


class Sink:
    def __init__(self) -> None:
        self.data = b""

    async def write(self, data: bytes) -> None:
        self.data += data


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    root = tmp_path / "spool"
    (root / REL).parent.mkdir(parents=True)
    (root / REL).write_bytes(bytes(range(256)) * 1000)
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "escape").symlink_to(tmp_path / "secret")
    return root


async def run(line: str, root: Path, **kw) -> bytes:
    out = Sink()
    await execute(line, out, CommandContext(layout=SpoolLayout([root]), chunk_size=4096, **kw))
    return out.data


# ---- commands -------------------------------------------------------------------------------------------------


async def test_getfile_streams_the_file(spool: Path) -> None:
    assert await run(f"getfile {REL}", spool) == (spool / REL).read_bytes()
    assert await run(f"getfile {REL} 0 -1", spool) == (spool / REL).read_bytes()
    assert await run(f"getfile {spool / REL}", spool) == (spool / REL).read_bytes()


async def test_getfile_zip_gzips_unless_already_gzip(spool: Path) -> None:
    data = await run(f"getfile_zip {REL}", spool)
    assert data[:2] == b"\x1f\x8b" and gzip.decompress(data) == (spool / REL).read_bytes()
    gz = gzip.compress(b"already")
    (spool / "x.gz").write_bytes(gz)
    assert await run("getfile_zip x.gz", spool) == gz
    (spool / "empty").write_bytes(b"")
    assert gzip.decompress(await run("getfile_zip empty", spool)) == b""


async def test_getfile_errors(spool: Path) -> None:
    assert await run("getfile nothere.pcap", spool) == f"error: cannot open file {spool}/nothere.pcap".encode()
    assert await run("getfile 2025-11-20", spool) == f"error: cannot open file {spool}/2025-11-20".encode()
    for bad in ("../secret", "2025-11-20/../../secret", "/etc/passwd", "escape", f"{REL} 1"):
        assert await run(f"getfile {bad}", spool) == b"access denied", bad
        assert await run(f"getfile_zip {bad}", spool) == b"access denied", bad
    assert await run("getfile", spool) == b"error: missing file name"
    assert await run(f"getfile {REL} x", spool) == b"error: bad spool index or file type"


async def test_file_exists_forms(spool: Path) -> None:
    size = (spool / REL).stat().st_size
    assert await run(f"file_exists {REL}", spool) == str(size).encode()
    assert await run("file_exists nope", spool) == b"not_exists"
    assert await run("file_exists ../secret", spool) == b"permission_denied"
    assert await run(f"file_exists {REL}|nope|{REL}", spool) == f"ok\n{REL}:{size}\n{REL}:{size}".encode()
    assert await run("file_exists nope|nope2", spool) == b"not_exists"
    (spool / "a.tar").write_bytes(b"1" * 10)
    (spool / "a.tar.1").write_bytes(b"1" * 5)
    (spool / "a.tar.3").write_bytes(b"1" * 5)  # .2 missing: the list stops there
    assert await run("file_exists a.tar", spool) == b"10;a.tar.1:5"
    assert await run(f"file_exists {REL}", spool, mirror_sender=True) == b"mirror"


async def test_fileexists_answers_zero_outside_the_spool(spool: Path, tmp_path: Path) -> None:
    size = (spool / REL).stat().st_size
    assert await run(f"fileexists {spool / REL}", spool) == str(size).encode()
    assert await run(f"fileexists {tmp_path / 'secret'}", spool) == b"0"
    assert await run("fileexists /etc/passwd", spool) == b"0"
    assert await run(f"fileexists {spool / 'nope'}", spool) == b"0"


async def test_small_commands_and_lookup(spool: Path) -> None:
    assert await run("getversion", spool) == b"2026.04.0"
    assert await run("getfile_is_zip_support", spool) == b"OK"
    assert await run("getfile_in_tar_check_complete a b c", spool) == b"OK"
    assert await run("flush_tar x", spool) == b"OK"
    assert await run("need_aes", spool) == COMMAND_NOT_FOUND
    assert await run("", spool) == COMMAND_NOT_FOUND
    assert await run("reload", spool) == COMMAND_NOT_FOUND
    # No exact match: the first registered name (alphabetically) found in the line.
    assert find_command("xx getversion")[0].name == "getversion"
    assert find_command("getfile_zip a 0")[0].name == "getfile_zip"
    assert find_command("getversion\r\ngarbage")[1] == []
    assert not_need_aes("getversion") and not not_need_aes("getfile a")


def _tar(path: Path, members: dict[str, bytes], mode: str) -> None:
    with tarfile.open(path, mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


async def test_getfile_in_tar(spool: Path) -> None:
    member = b"pcap bytes " * 1000
    _tar(spool / "sip.tar", {"a.pcap": b"other", "call-1@x.pcap": member}, "w")
    _tar(spool / "sip.tar.gz", {"call-1@x.pcap": member}, "w:gz")
    assert await run("getfile_in_tar sip.tar call-1@x.pcap key", spool) == member
    # plain tar: `_zip` is ignored; compressed tar: the member is re-gzipped.
    assert await run("getfile_in_tar_zip sip.tar call-1@x.pcap key", spool) == member
    assert gzip.decompress(await run("getfile_in_tar_zip sip.tar.gz call-1@x.pcap key", spool)) == member
    assert await run("getfile_in_tar sip.tar.gz call-1@x.pcap key 0 cdr x 0 -1 END", spool) == member + b"END"
    assert await run("getfile_in_tar sip.tar missing.pcap key 0 cdr x 0 -1 END", spool) == b""
    assert await run("getfile_in_tar nope.tar a key", spool) == b"error: missing file [nope.tar]"
    assert await run("getfile_in_tar ../x.tar a key", spool) == b"access denied"
    (spool / "bad.tar.gz").write_bytes(b"not a tar")
    assert await run("getfile_in_tar bad.tar.gz a key", spool) == b"error: cannot open file [bad.tar.gz]"


# ---- request parsing ------------------------------------------------------------------------------------------


def test_parse_request() -> None:
    assert parse_request(b"getversion\r\n\r\n", None).line == "getversion"
    assert parse_request(b"getfile a\nmore", KEY).line == "getfile a"
    wrapped = wrap_manager_request(b"getfile a\r\n", KEY, "aes-256-cbc")
    req = parse_request(wrapped, KEY)
    assert req.line == "getfile a" and req.cipher == "aes-256-cbc"
    assert parse_request(wrapped, None).line == "failed_aes_decrypt"
    assert parse_request(wrapped, ManagerAesKey(b"x" * 32, b"y" * 16)).line == "failed_aes_decrypt"
    assert parse_request(b"aes-128-cbc:garbage:sea", KEY).line == "failed_aes_decrypt"


# ---- the server on loopback -----------------------------------------------------------------------------------


async def _server(nursery: trio.Nursery, root: Path, key: ManagerAesKey | None = None, **kw) -> int:
    server = ManagerServer(CommandContext(layout=SpoolLayout([root])), key_source=lambda: key, **kw)
    addrs = await nursery.start(server.serve, "127.0.0.1", 0)
    return addrs[0][1]


async def _ask(port: int, request: bytes, *, pause: float = 0.0) -> tuple[bytes, float]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    t0 = trio.current_time()
    async with stream:
        if pause:
            # Send in two pieces with a gap shorter than the 500 ms assembly window.
            await stream.send_all(request[:5])
            await trio.sleep(pause)
            await stream.send_all(request[5:])
        else:
            await stream.send_all(request)
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data, trio.current_time() - t0


def _decrypt(reply: bytes, cipher: str = "aes-128-cbc") -> bytes:
    assert reply.startswith(b"aes:")
    dec = AesStreamDecryptor(KEY.key, KEY.iv, cipher)
    return dec.update(reply[4:]) + dec.finalize()


async def test_server_plain_requests(spool: Path) -> None:
    content = (spool / REL).read_bytes()
    async with trio.open_nursery() as nursery:
        port = await _server(nursery, spool)
        reply, elapsed = await _ask(port, f"getfile {REL}\r\n\r\n".encode())
        assert reply == content and elapsed < 0.45
        reply, _ = await _ask(port, f"getfile_zip {REL}\n".encode())
        assert gzip.decompress(reply) == content
        reply, _ = await _ask(port, b"getfile ../secret\r\n\r\n")
        assert reply == b"access denied"
        reply, _ = await _ask(port, b"nonsense\r\n\r\n")
        assert reply == COMMAND_NOT_FOUND
        # No line end at all: answered after 500 ms of silence.
        reply, elapsed = await _ask(port, b"getversion")
        assert reply == b"2026.04.0" and elapsed >= 0.45
        # A request that arrives in pieces is assembled.
        reply, _ = await _ask(port, f"getfile {REL}\r\n".encode(), pause=0.1)
        assert reply == content
        nursery.cancel_scope.cancel()


async def test_server_aes_requests(spool: Path) -> None:
    content = (spool / REL).read_bytes()
    async with trio.open_nursery() as nursery:
        port = await _server(nursery, spool, KEY)
        for cipher in ("aes-128-cbc", "aes-256-cbc"):
            reply, _ = await _ask(port, wrap_manager_request(f"getfile {REL}".encode(), KEY, cipher))
            assert _decrypt(reply, cipher) == content
        reply, _ = await _ask(port, wrap_manager_request(b"getfile ../secret", KEY))
        assert _decrypt(reply) == b"access denied"
        # Plain requests are refused while a key is set, except the exempt commands.
        reply, _ = await _ask(port, f"getfile {REL}\r\n\r\n".encode())
        assert reply == NEED_AES_REPLY
        reply, _ = await _ask(port, b"getversion\r\n\r\n")
        assert reply == b"2026.04.0"
        # Undecryptable: `command not found`, raw.
        reply, _ = await _ask(port, b"aes-128-cbc:" + b"\x01" * 32 + b":sea")
        assert reply == COMMAND_NOT_FOUND
        # An empty output is nothing at all on TCP/5029 (no `aes:`).
        (spool / "empty").write_bytes(b"")
        reply, _ = await _ask(port, wrap_manager_request(b"getfile empty", KEY))
        assert reply == b""
        nursery.cancel_scope.cancel()


async def test_server_unencrypted_allowed_by_option(spool: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await _server(nursery, spool, KEY, enable_unencrypted=True)
        reply, _ = await _ask(port, f"getfile {REL}\r\n\r\n".encode())
        assert reply == (spool / REL).read_bytes()
        nursery.cancel_scope.cancel()


async def test_server_survives_clients_that_vanish(spool: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await _server(nursery, spool, request_timeout=0.2)
        idle = await trio.open_tcp_stream("127.0.0.1", port)  # sends nothing: closed after the timeout
        with trio.fail_after(5):
            assert await idle.receive_some(10) == b""
        await idle.aclose()
        rude = await trio.open_tcp_stream("127.0.0.1", port)
        await rude.send_all(f"getfile {REL}\r\n\r\n".encode())
        await rude.aclose()  # gone before the reply
        reply, _ = await _ask(port, b"getversion\r\n\r\n")
        assert reply == b"2026.04.0"
        nursery.cancel_scope.cancel()


def test_manager_key_config_base64() -> None:
    from vmproto import config
    from vmproto.sensor.app import SensorSetupError, manager_key_from_config

    k, iv = base64.b64encode(KEY.key).decode(), base64.b64encode(KEY.iv).decode()
    assert manager_key_from_config(config.load_text(f"manager_aes_key = {k}\nmanager_aes_iv = {iv}\n")) == KEY
    assert manager_key_from_config(config.load_text("")) is None
    with pytest.raises(SensorSetupError):
        manager_key_from_config(config.load_text(f"manager_aes_key = {k}\n"))
    with pytest.raises(SensorSetupError):
        manager_key_from_config(config.load_text("manager_aes_key = !!\nmanager_aes_iv = !!\n"))
