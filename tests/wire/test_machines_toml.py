"""spec/machines/*.toml is the twin of vmproto/wire/_state.py: same states, transitions, directions, timeouts.
Then every (state, input) pair of every machine is walked: allowed inputs move exactly as the table says, and a
peer input the table does not allow raises RemoteProtocolError and leaves the machine CLOSED."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.wire.pair import CKEY, IVEC, rsa_key
from vmproto.wire import events as ev
from vmproto.wire._state import CLOSE_INPUT, TABLES, TIMEOUTS, Role, State
from vmproto.wire.acceptor import SERVER_MACHINES
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.gui import GuiCommandClient, ManagerCommandClient
from vmproto.wire.keycheck import KeycheckClient
from vmproto.wire.packetbuffer import PacketbufferClient
from vmproto.wire.query import QueryClient
from vmproto.wire.response import ResponseClient, ResponsesClient
from vmproto.wire.service import ServiceClient
from vmproto.wire.store import StoreClient
from vmproto.wire.store_msg import StoreMessage

MACHINES_DIR = Path(__file__).resolve().parents[2] / "spec" / "machines"
TYPES = sorted({t for t, _r in TABLES})

CLIENT_MACHINES = {
    "service": ServiceClient, "query": QueryClient, "store": StoreClient, "packetbuffer block": PacketbufferClient,
    "responses": ResponsesClient, "keycheck": KeycheckClient, "response": ResponseClient,
    "gui_command": GuiCommandClient, "manager_command": ManagerCommandClient,
}


def _toml(ctype: str) -> dict:
    return tomllib.loads((MACHINES_DIR / f"{ctype.replace(' ', '_')}.toml").read_text())


def _table_from_toml(section: dict) -> dict:
    table = {}
    for row in section["transition"]:
        table[(State[row["state"]], row["input"])] = (State[row["next"]], row["direction"])
        assert row["spec"].startswith("§")
    if section["closes_from_every_state"]:
        for name in section["states"]:
            if name != "CLOSED":
                table[(State[name], CLOSE_INPUT)] = (State.CLOSED, "both")
    return table


@pytest.mark.parametrize("ctype", TYPES)
def test_toml_equals_code(ctype):
    doc = _toml(ctype)
    assert doc["connection_type"] == ctype
    for role in Role:
        section = doc[role.value]
        code = TABLES[(ctype, role)]
        assert section["initial"] == "OPENING"
        assert _table_from_toml(section) == code
        used = {s for s, _ in code} | {t for t, _ in code.values()}
        assert {State[s] for s in section["states"]} == used
        timeouts = {}
        for row in section.get("timeout", []):
            seconds = None if row["seconds"] == 0 else float(row["seconds"])
            timeouts[State[row["state"]]] = (seconds, row["clock"], row["action"])
        assert timeouts == {s: tuple(t) for s, t in TIMEOUTS[(ctype, role)].items()}


def test_every_toml_file_is_a_machine():
    assert sorted(p.stem for p in MACHINES_DIR.glob("*.toml")) == sorted(t.replace(" ", "_") for t in TYPES)


_MSG = StoreMessage(10, None, (b"select 1",), False)
SAMPLES: dict[str, ev.Event] = {
    "OpenConnection": ev.OpenConnection("query"), "RsaKey": ev.RsaKey(b"pem"),
    "Credentials": ev.Credentials("p", CKEY, IVEC),
    "PacketbufferCredentials": ev.PacketbufferCredentials("p", CKEY, IVEC, "", 1, ""),
    "ServiceCredentials": ev.ServiceCredentials(2, "p", CKEY, IVEC, 1), "HandshakeOK": ev.HandshakeOK(),
    "StoreAccepted": ev.StoreAccepted(), "ServiceAccepted": ev.ServiceAccepted(), "Refuse": ev.Refuse("x"),
    "Refuse/delayed": ev.Refuse("x", delay=5), "Ping": ev.Ping(), "Ping/await": ev.Ping(), "Ping/noawait": ev.Ping(),
    "Pong": ev.Pong(), "Stop": ev.Stop(), "Task": ev.Task("1:2", b"x"), "ChartPush": ev.ChartPush(b"x"),
    "ChartReply": ev.ChartReply("OK"), "StoreQueries": ev.StoreQueries(_MSG), "StoreCheck": ev.StoreCheck(),
    "StoreOK": ev.StoreOK(), "StoreError": ev.StoreError("e"), "QueryRequest": ev.QueryRequest(b"x"),
    "QueryResponse": ev.QueryResponse(b"x"), "End": ev.End(),
    "PacketbufferBlock/confirm": ev.PacketbufferBlock(b"x", 1, True),
    "PacketbufferBlock/noconfirm": ev.PacketbufferBlock(b"x", 1, False), "BlockLoss": ev.BlockLoss(1, 3),
    "BlockReply": ev.BlockReply(), "Rejected/reply": ev.Rejected("r", "r"), "Rejected/noreply": ev.Rejected("r"),
    "ResponseKeys": ev.ResponseKeys(CKEY, IVEC), "ResponseData": ev.ResponseData(b"x"),
    "ResponseEnd": ev.ResponseEnd(), "ResponseItem": ev.ResponseItem("1:2", b"x"),
    "ResponseReply": ev.ResponseReply(), "GuiCommand": ev.GuiCommand(2, "c", "c"),
    "ManagerCommand": ev.ManagerCommand("active"), "ReplyData": ev.ReplyData(b"x"), "ReplyEnd": ev.ReplyEnd(),
    "RawReply": ev.RawReply(b"x"), "ActiveServices": ev.ActiveServices(), "KeycheckRequest": ev.KeycheckRequest(b"x"),
    "KeycheckReply": ev.KeycheckReply(b"x"),
}
ALL_INPUTS = sorted({n for table in TABLES.values() for _s, n in table} - {CLOSE_INPUT})


def _machine(ctype: str, role: Role):
    if role is Role.CLIENT:
        cls = CLIENT_MACHINES[ctype]
        return cls(aes_ckey=CKEY, aes_ivec=IVEC) if ctype == "response" else cls()
    cls = SERVER_MACHINES[ctype]
    if ctype in ("gui_command", "manager_command", "response"):
        return cls()
    return cls(rsa_key=rsa_key(2048), password="p")


def test_samples_cover_every_input():
    assert set(ALL_INPUTS) <= set(SAMPLES)


@pytest.mark.parametrize(("ctype", "role"), sorted(TABLES, key=lambda k: (k[0], k[1].value)))
def test_walk_every_state_and_input(ctype, role):
    for state in State:
        if state is State.CLOSED:
            continue
        for name in ALL_INPUTS:
            conn = _machine(ctype, role)
            event = SAMPLES[name]
            conn._state = state
            conn._expects_input = set(State)  # make next_event consult our injected parser in every state
            conn._input_name = lambda _e, _n=name: _n
            conn._parse = lambda c=conn, e=event: c._receive(e)
            entry = TABLES[(ctype, role)].get((state, name))
            if entry is not None and entry[1] in ("receive", "both"):
                assert conn.next_event() == event
                assert conn.state is entry[0]
            else:
                with pytest.raises(RemoteProtocolError):
                    conn.next_event()
                assert conn.state is State.CLOSED
                with pytest.raises(RemoteProtocolError):
                    conn.next_event()
