"""The central compares the received password in constant time (spec §6.6, §17.2: HMAC + compare_digest).

Checked by inspection (the AST of every server-side function that looks at the password) and by behaviour
(a handshake with a wrong and a right password goes through hmac.compare_digest), never by timing.
"""

from __future__ import annotations

import ast
import hmac
import inspect
import textwrap

from fuzz.keys import rsa_key
from vmproto.wire import events as ev
from vmproto.wire.handshake import HandshakeServer
from vmproto.wire.query import QueryClient, QueryServer
from vmproto.wire.service import ServiceServer


def _password_compares(fn) -> list[str]:
    """Source of every ==/!= comparison in `fn` that involves the password."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            text = ast.unparse(node)
            if "password" in text:
                found.append(text)
    return found


def _calls(fn) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}


def test_check_password_uses_compare_digest():
    fn = HandshakeServer._check_password
    assert not _password_compares(fn), _password_compares(fn)
    assert _calls(fn) & {"hmac.compare_digest", "compare_digest", "secrets.compare_digest"}


def test_no_server_machine_compares_the_password_directly_elsewhere():
    """Only `_check_password` may look at the password: the service machine must go through it too."""
    for cls in (HandshakeServer, ServiceServer):
        for name, member in vars(cls).items():
            if callable(member) and name != "_check_password":
                assert not _password_compares(member), (cls.__name__, name)
    assert "self._check_password" in _calls(ServiceServer._check_credentials)


def _handshake(password: str) -> None:
    client = QueryClient()
    server = QueryServer(rsa_key=rsa_key(1024), password="correct horse")
    server.receive_data(client.send(ev.OpenConnection("query")), 0)
    server.next_event(0)
    client.receive_data(server.send(ev.RsaKey(server.public_pem)), 0)
    client.next_event(0)
    server.receive_data(client.send(ev.Credentials(password, "0" * 32, "1" * 16)), 0)
    try:
        server.next_event(0)
    except Exception:  # noqa: BLE001 - the outcome is not what this test looks at
        pass


def test_handshake_goes_through_compare_digest(monkeypatch):
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    _handshake("wrong")
    _handshake("correct horse")
    assert len(seen) >= 2
