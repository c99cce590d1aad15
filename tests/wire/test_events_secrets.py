"""Events that carry the password or AES key strings never show them in repr/str (spec §17.4)."""

from __future__ import annotations

import logging

import pytest

from vmproto.wire import events as ev

PASSWORD = "S3cret-Pa55word"
CKEY = "Zq8Wx3Lm0Pv7Rt2Yk9Hd4Bn6Jc1Gf5Ue"
IVEC = "Ks7Nd2Qw9Lx4Tb6M"

EVENTS = [
    ev.Credentials(PASSWORD, CKEY, IVEC),
    ev.PacketbufferCredentials(PASSWORD, CKEY, IVEC, "2026-11-26 04:19:32", 3, "probe"),
    ev.ServiceCredentials(sensor_id=3, password=PASSWORD, aes_ckey=CKEY, aes_ivec=IVEC, sensor_version=2026004000,
                          sensor_string="probe"),
    ev.ResponseKeys(CKEY, IVEC),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_secrets_are_masked(event, caplog):
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("vmproto.test").debug("event %s / %r", event, event)
    for text in (repr(event), str(event), f"{event}", caplog.text, repr([event])):
        for secret in (PASSWORD, CKEY, IVEC, CKEY[:16]):
            assert secret not in text
    assert repr(event).startswith(type(event).__name__ + "(") and "'***'" in repr(event)


def test_other_fields_stay_visible_and_values_still_compare():
    text = repr(EVENTS[1])
    assert "time='2026-11-26 04:19:32'" in text and "sensor_id=3" in text and "sensor_name='probe'" in text
    assert ev.Credentials(PASSWORD, CKEY, IVEC) == EVENTS[0] != ev.Credentials("other", CKEY, IVEC)
    assert EVENTS[0].password == PASSWORD  # masked in repr only
