"""`keycheck` connections (spec §12.6): relay a licence check to the configured checker, without a shell."""

from __future__ import annotations

import logging
import os
import subprocess

import trio

from vmproto.logs import log_event
from vmproto.server.handlers.context import ServerContext
from vmproto.server.handlers.handshake import run_handshake
from vmproto.server.handlers.io import MachineStream, PeerGone, Shutdown
from vmproto.wire import events as ev
from vmproto.wire.errors import RemoteProtocolError

__all__ = ["handle_keycheck", "run_checker", "UNDEFINED"]

log = logging.getLogger("vmproto.server")

UNDEFINED = b"error: undefined keycheck on server side"
CHECK_TIMEOUT = 30.0
OUTPUT_CAP = 64 * 1024


async def handle_keycheck(ctx: ServerContext, io: MachineStream, rsa_key: object, opened_ts: float) -> None:
    """Serve one keycheck connection."""
    creds = await run_handshake(io, rsa_key, opened_ts)
    if not isinstance(creds, ev.Credentials):
        return
    await io.send(ev.HandshakeOK())
    script = str(ctx.cfg.get("keycheck", "") or "")
    try:
        while True:
            item = await io.next_event()
            if isinstance(item, ev.KeycheckRequest):
                ctx.stats.blocks_in["keycheck"] += 1
                await io.send(ev.KeycheckReply(await run_checker(script, item.data)))
            elif isinstance(item, ev.ConnectionClosed | Shutdown):
                return
    except RemoteProtocolError as exc:
        ctx.log_hostile(io.peer[0], "keycheck connection error", port=io.peer[1], reason=exc.reason)
    except PeerGone:
        pass


async def run_checker(script: str, data: bytes) -> bytes:
    """Run `php <script> <first line of data>` (argument vector, no shell), 30 s and 64 KiB at most.

    Returns its output, or the reference's `error: ...` texts.
    """
    if not script:
        return UNDEFINED
    if not os.path.exists(script):
        return f"error: missing '{script}' on server side".encode()
    argument = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "surrogateescape")
    try:
        with trio.fail_after(CHECK_TIMEOUT):
            proc = await trio.run_process(["php", script, argument], capture_stdout=True, stderr=subprocess.DEVNULL,
                                          check=False, stdin=subprocess.DEVNULL)
    except OSError:
        return f"error: failed to run command [php {script}]".encode()
    except trio.TooSlowError:
        log_event(log, logging.WARNING, "keycheck timed out", script=script)
        return b"error: error when checking license"
    output = proc.stdout[:OUTPUT_CAP]
    if proc.returncode != 0 or not output:
        return b"error: error when checking license"
    return output
