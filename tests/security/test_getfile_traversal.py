"""Manager `getfile` / `getfile_zip` never read outside the spool (spec §13.4, §17.2): `..`, absolute paths,
symlinks out of the spool and NUL bytes are answered `access denied`; a file inside is served."""

from __future__ import annotations

import pytest

from vmproto.sensor.manager.commands import ACCESS_DENIED, CommandContext, execute
from vmproto.sensor.spool.layout import SpoolLayout


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data


@pytest.fixture
def spool(tmp_path):
    root = tmp_path / "spool"
    (root / "2026-04-14" / "13" / "57" / "SIP").mkdir(parents=True)
    (root / "2026-04-14" / "13" / "57" / "SIP" / "call.pcap").write_bytes(b"inside")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP-SECRET-OUTSIDE")
    (root / "escape").symlink_to(tmp_path)
    (root / "link.pcap").symlink_to(secret)
    return root, secret


@pytest.mark.parametrize("command", ["getfile", "getfile_zip"])
@pytest.mark.parametrize("path", [
    "../secret.txt", "2026-04-14/../../secret.txt", "..", "escape/secret.txt", "link.pcap",
    "{secret}", "/etc/passwd", "..\\\\secret.txt", "2026-04-14/\x00/x",
])
async def test_traversal_refused(spool, command, path):
    root, secret = spool
    ctx = CommandContext(layout=SpoolLayout((root,)))
    out = Sink()
    await execute(f"{command} {path.format(secret=secret)}", out, ctx)
    assert b"TOP-SECRET" not in bytes(out.data)
    assert bytes(out.data) == ACCESS_DENIED


async def test_file_inside_is_served(spool):
    root, _ = spool
    out = Sink()
    await execute("getfile 2026-04-14/13/57/SIP/call.pcap", out, CommandContext(layout=SpoolLayout((root,))))
    assert bytes(out.data) == b"inside"
