"""No secret in any log line at any verbosity (spec §17.4): server_password, the AES key strings, the manager
key. Checked at run time (every wire machine's valid dialogue with the root logger at debug, `-v 2`, secrets
searched raw, hex and base64 encoded) and statically (no logging call in vmproto/server or vmproto/sensor passes
an expression that names a secret)."""

from __future__ import annotations

import ast
import base64
import io
import logging
import re
from pathlib import Path

import pytest

from fuzz import machine_harnesses as mh
from vmproto import logs

ROOT = Path(__file__).resolve().parents[2]
SECRET_PASSWORD = "S3cret-Pa55word-for-logs"
SECRET_CKEY = "Zq8Wx3Lm0Pv7Rt2Yk9Hd4Bn6Jc1Gf5Ue"
SECRET_IVEC = "Ks7Nd2Qw9Lx4Tb6M"
_LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}
_SECRET_NAME = re.compile(r"password|aes_ckey|aes_ivec|ckey|ivec|manager_key|private_key|credentials|\.key\b")


def _encodings(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(), secret[:16]]


@pytest.fixture
def captured(monkeypatch):
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logs.setup(verbosity=2, stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_wire_dialogues_at_debug_leak_nothing(captured, monkeypatch):
    monkeypatch.setattr(mh, "PASSWORD", SECRET_PASSWORD)
    monkeypatch.setattr(mh, "CKEY", SECRET_CKEY)
    monkeypatch.setattr(mh, "IVEC", SECRET_IVEC)
    logging.getLogger("vmproto").debug("capture check")  # the capture works at debug level
    for ctype in mh._TYPES:
        for role in ("server", "client"):
            rig = mh.Rig(ctype, role)
            rig.start(attached=True)
            assert not rig.peer_failed, (ctype, role)
    text = captured.getvalue()
    assert "capture check" in text
    for secret in (SECRET_PASSWORD, SECRET_CKEY, SECRET_IVEC):
        for form in _encodings(secret):
            assert form not in text


def _logging_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "log_event":
            yield node
        elif isinstance(func, ast.Attribute) and func.attr in _LOG_METHODS and \
                re.search(r"log", ast.unparse(func.value), re.IGNORECASE):
            yield node


def test_no_logging_call_names_a_secret():
    offenders = []
    for package in ("server", "sensor"):
        for path in sorted((ROOT / "vmproto" / package).rglob("*.py")):
            tree = ast.parse(path.read_text("utf-8"))
            for call in _logging_calls(tree):
                values = [*call.args, *(k.value for k in call.keywords)]
                for value in values:
                    if isinstance(value, ast.Constant):
                        continue
                    text = ast.unparse(value)
                    if _SECRET_NAME.search(text):
                        offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}: {text}")
    assert not offenders, "\n".join(offenders)


def test_static_check_catches_a_leaking_call():
    tree = ast.parse("log_event(log, 20, 'auth', pw=creds.password)\nlog.debug('k %s', self._aes_ckey)")
    found = [ast.unparse(v) for c in _logging_calls(tree) for v in [*c.args, *(k.value for k in c.keywords)]
             if not isinstance(v, ast.Constant) and _SECRET_NAME.search(ast.unparse(v))]
    assert found == ["creds.password", "self._aes_ckey"]
