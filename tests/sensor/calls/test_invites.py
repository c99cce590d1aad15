"""INVITE legs and the caller/called addresses derived from them (vmproto.sensor.calls.invites)."""

from __future__ import annotations

from vmproto.sensor.calls.invites import InviteLegs

A = (b"\x0a\x00\x00\x01", 5060)   # caller
P = (b"\x0a\x00\x00\x02", 5060)   # proxy
P2 = (b"\x0a\x00\x00\x02", 5070)  # proxy, outbound side
B = (b"\x0a\x00\x00\x03", 5060)   # callee behind the proxy
C = (b"\x0a\x00\x00\x04", 5060)   # second fork target


def _invite(legs: InviteLegs, src: tuple[bytes, int], dst: tuple[bytes, int], ts: int, *, branch: str = "z9-1",
            called: str = "bob", in_dialog: bool = False) -> None:
    legs.note_invite(src[0], src[1], dst[0], dst[1], ts, in_dialog, called, branch, A, P)


def test_proxy_hop_moves_the_called_side() -> None:
    legs = InviteLegs()
    _invite(legs, A, P, 1)
    _invite(legs, P2, B, 2, branch="z9-2")
    assert legs.called(P) == B
    assert legs.caller(A) == A


def test_retransmission_and_reverse_reinvite_leave_it() -> None:
    legs = InviteLegs()
    _invite(legs, A, P, 1)
    _invite(legs, A, P, 2)  # retransmission: same leg, same branch, destination is the called side already
    _invite(legs, P, A, 3, branch="z9-9", in_dialog=True)  # re-INVITE from the called side
    assert len(legs.legs) == 1
    assert legs.called(P) == P


def test_unconfirmed_leg_chain_uses_confirmed_legs_only() -> None:
    legs = InviteLegs()
    _invite(legs, A, P, 1)
    _invite(legs, P2, B, 2, branch="z9-2")
    legs.confirm(P[0], P[1], A[0], A[1])  # 200 OK back along the first leg only
    assert not legs.all_confirmed()
    # Only the first leg is confirmed: the chain over confirmed legs ends at its destination.
    assert legs.called(P) == P
    legs.confirm(B[0], B[1], P2[0], P2[1])
    assert legs.all_confirmed()
    assert legs.called(P) == B


def test_forking_source_keeps_its_first_destination() -> None:
    legs = InviteLegs()
    _invite(legs, A, P, 1, branch="z9-a", called="bob")
    _invite(legs, A, C, 2, branch="z9-b", called="carol")
    assert legs.called(P) == P
    # The same To user and branch again is not a fork: the second destination wins.
    legs2 = InviteLegs()
    _invite(legs2, A, P, 1, branch="z9-a", called="bob")
    _invite(legs2, A, C, 2, branch="z9-a", called="bob")
    assert legs2.called(P) == C


def test_out_of_order_invites_take_caller_from_the_earliest() -> None:
    legs = InviteLegs()
    _invite(legs, P2, B, 5, branch="z9-2")
    _invite(legs, A, P, 3)
    assert legs.bad_order
    assert legs.caller(P2) == A
    assert legs.called(P) == B
