"""The README demo: the whole product on one machine, on loopback.

1. generate two small capture files of SIP/RTP calls (our call generator; the same bytes every run);
2. start our central (`python -m vmproto.server`) on its embedded MariaDB, with a key log;
3. put a recording proxy in front of it, so the channel is captured without privileges;
4. run a local-processing sensor (id 2) that replays one file, builds CDRs and keeps per-call PCAPs, and a
   mirroring sensor (id 3) that ships the other file's raw packets to the central, which analyses them itself;
5. fetch one of sensor 2's PCAPs back through the central, as the GUI does (`gui_command` → task → `response`),
   and check it is byte-identical to the sensor's spool file;
6. print the CDRs that landed in the central's database, then decode the recorded channel with the capture
   inspector (`python -m vmproto.inspect`).

Everything it writes goes to ./demo-out (removed first). Exit status 0 when every step worked.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import trio

from vmproto.sensor.capture.writer import PcapWriter
from vmproto.testing.callgen import CallSpec, generate_call
from vmproto.testing.recproxy import RecordingProxy
from vmproto.wire.opening import encode_opening

PASSWORD = "demo-password"
PY = sys.executable


class DemoError(Exception):
    pass


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_capture(path: Path, specs: list[CallSpec]) -> int:
    """Write the generated calls, merged in time order, as an Ethernet pcap; returns the packet count."""
    packets = sorted((p for spec in specs for p in generate_call(spec).packets), key=lambda p: p.ts_ns)
    with open(path, "wb") as fh:
        writer = PcapWriter(fh, 101)  # raw IP: the generator produces IP packets
        for p in packets:
            writer.write(p.ts_ns, p.ip_packet)
        writer.close()
    return len(packets)


def conf(path: Path, **options: object) -> Path:
    path.write_text("[general]\n" + "".join(f"{k} = {v}\n" for k, v in options.items()))
    return path


async def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    with trio.move_on_after(timeout):
        while not await predicate():
            await trio.sleep(0.2)
        return
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


async def mysql(socket_path: Path, sql: str) -> list[list[str]]:
    result = await trio.run_process(["mariadb", f"--socket={socket_path}", "-u", "root", "-N", "-B",
                                     "voipmonitor", "-e", sql], capture_stdout=True, capture_stderr=True,
                                    check=False)
    if result.returncode:
        raise DemoError(f"mariadb: {result.stderr.decode().strip()}")
    return [line.split("\t") for line in result.stdout.decode().splitlines() if line]


async def gui_fetch(port: int, sensor_id: int, command: str) -> bytes:
    """What the GUI does: a gui_command on the central's port, then read the relayed output until EOF."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(encode_opening({"type_connection": "gui_command", "sensor_id": sensor_id,
                                              "command": command}))
        data = bytearray()
        with trio.fail_after(60):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return bytes(data)


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


async def run(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    say("1. generating captures")
    local_pcap, mirror_pcap = out / "local-calls.pcap", out / "mirror-calls.pcap"
    t0 = float(int(time.time()) - 3600)  # an hour ago: recent enough for the central's daily partitions
    n1 = write_capture(local_pcap, [
        CallSpec(seed=21, call_id="demo-local-1@192.0.2.10", start_s=t0, loss=0.01, jitter_ms=5),
        CallSpec(seed=22, call_id="demo-local-2@192.0.2.10", outcome="busy", start_s=t0 + 10,
                 caller_rtp_port=10002, callee_rtp_port=20002),
    ])
    n2 = write_capture(mirror_pcap, [
        CallSpec(seed=23, call_id="demo-mirror-1@192.0.2.30", start_s=t0 + 20, caller_ip=bytes([192, 0, 2, 30]),
                 callee_ip=bytes([198, 51, 100, 40]), rtp_seconds=4.0),
    ])
    print(f"   {local_pcap.name}: {n1} packets, {mirror_pcap.name}: {n2} packets")

    say("2. starting the central (embedded MariaDB)")
    port = free_port()
    server_conf = conf(out / "server.conf", server_bind="127.0.0.1", server_bind_port=port,
                       server_password=PASSWORD, datadir=out / "central")
    keylog = out / "channel-keys.jsonl"
    server = start([PY, "-m", "vmproto.server", "--config-file", str(server_conf), "--keylog", str(keylog)],
                   out / "central.log")
    procs = [server]
    try:
        db_socket = out / "central" / "mariadb" / "mysqld.sock"

        async def server_up() -> bool:
            if server.poll() is not None:
                raise DemoError(f"central exited ({server.returncode}); see {out / 'central.log'}")
            return "server started" in (out / "central.log").read_text(errors="replace")

        await wait_for(server_up, 120, "the central to start")
        print(f"   listening on 127.0.0.1:{port}, database socket {db_socket}")

        async with trio.open_nursery() as nursery:
            proxy = RecordingProxy("127.0.0.1", port)
            proxy_port = await nursery.start(proxy.serve)
            print(f"   recording proxy on 127.0.0.1:{proxy_port}")

            say("3. sensor 2 (local processing) and sensor 3 (packet mirroring) replay their captures")
            common = {"server_destination": "127.0.0.1", "server_destination_port": proxy_port,
                      "server_password": PASSWORD, "managerport": 0}
            s2_conf = conf(out / "sensor2.conf", id_sensor=2, spooldir=out / "sensor2-spool", savesip="yes",
                           savertp="yes", **common)
            s3_conf = conf(out / "sensor3.conf", id_sensor=3, packetbuffer_sender="yes",
                           spooldir=out / "sensor3-spool", **common)
            sensor2 = start([PY, "-m", "vmproto.sensor", "--config-file", str(s2_conf), "-r", str(local_pcap),
                             "--stay"], out / "sensor2.log")
            procs.append(sensor2)
            # The proxy runs in this Trio loop: child processes must be awaited, never waited for blocking.
            with (out / "sensor3.log").open("wb") as log3, trio.fail_after(300):
                sensor3 = await trio.run_process([PY, "-m", "vmproto.sensor", "--config-file", str(s3_conf),
                                                  "-r", str(mirror_pcap)], stdout=log3,
                                                 stderr=subprocess.STDOUT, check=False)
            print(f"   sensor 3 finished: exit {sensor3.returncode}")
            if sensor3.returncode:
                raise DemoError(f"sensor 3 failed; see {out / 'sensor3.log'}")

            async def cdrs_of_sensor2() -> bool:
                return int((await mysql(db_socket, "select count(*) from cdr where id_sensor = 2"))[0][0]) >= 2

            await wait_for(cdrs_of_sensor2, 120, "sensor 2's CDRs in the central's database")
            print("   sensor 2's CDRs are committed; it stays connected for the PCAP fetch")

            async def cdrs_of_sensor3() -> bool:
                return int((await mysql(db_socket, "select count(*) from cdr where id_sensor = 3"))[0][0]) >= 1

            # The central analyses the mirrored packets itself; once sensor 3 goes quiet, its idle sweeper moves
            # that sensor's clock on so the last call's timers fire.
            await wait_for(cdrs_of_sensor3, 120, "the central's CDR for sensor 3's mirrored call")
            print("   the central built sensor 3's CDR from the mirrored packets")

            say("4. fetching a PCAP of sensor 2 through the central (gui_command → task → response)")
            spool = out / "sensor2-spool"
            files = sorted(p for p in spool.rglob("*.pcap") if p.parent.name == "SIP")
            if not files:
                raise DemoError("sensor 2 wrote no SIP pcap to its spool")
            rel = files[0].relative_to(spool)
            fetched = await gui_fetch(proxy_port, 2, f"getfile {rel}")
            same = fetched == files[0].read_bytes()
            print(f"   getfile {rel}: {len(fetched)} bytes, identical to the sensor's spool file: {same}")
            if not same:
                raise DemoError("the fetched PCAP differs from the spool file")

            await trio.to_thread.run_sync(stop, sensor2)
            nursery.cancel_scope.cancel()

        say("5. CDRs in the central's database")
        rows = await mysql(db_socket, "select id_sensor, calldate, caller, called, lastSIPresponseNum, duration, "
                                      "a_received, b_received from cdr order by id")
        print("   id_sensor  calldate             caller  called  last  duration  a_rtp  b_rtp")
        for r in rows:
            print(f"   {r[0]:>9}  {r[1]:<19}  {r[2]:<6}  {r[3]:<6}  {r[4]:>4}  {r[5]:>8}  {r[6]:>5}  {r[7]:>5}")
    finally:
        for proc in reversed(procs):
            stop(proc)

    say("6. the recorded channel, decoded by the capture inspector")
    capture = out / "channel.pcap"
    frames = proxy.write(capture)
    result = subprocess.run([PY, "-m", "vmproto.inspect", str(capture), "--keys", str(keylog), "--json",
                             "--port", str(port)], capture_output=True, check=False)
    messages = [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]
    kinds = Counter((m.get("type_connection"), m.get("kind")) for m in messages)
    print(f"   {capture.name}: {frames} frames, {len(messages)} messages decoded, inspector exit {result.returncode}")
    for (ctype, kind), count in sorted(kinds.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        print(f"   {count:>5}  {ctype:<20} {kind}")
    for m in messages:
        if m.get("type_connection") == "store" and m.get("store"):
            print(f"   first store message: id_main {m['store'].get('id_main')}, "
                  f"{(m.get('text') or '')[:100]!r}...")
            break
    print(f"\n   read it yourself: python -m vmproto.inspect {capture} --keys {keylog} --port {port}")
    if result.returncode not in (0,):
        raise DemoError("the inspector could not decode every message (see above)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmproto.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="work directory (removed first)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    started = time.monotonic()
    try:
        trio.run(run, args.out.resolve())
    except DemoError as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\ndemo OK in {time.monotonic() - started:.1f} s (everything is in {args.out}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
