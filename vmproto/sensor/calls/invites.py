"""The INVITE legs of one call, and the caller/called SIP addresses the reference derives from them.

A call seen at several points of a SIP path (a proxy, a WebSocket gateway, a B2BUA mirror) carries one INVITE
per hop with the same Call-ID. The reference records each distinct (source, destination) INVITE leg, marks a
leg confirmed when a 2xx to the dialog's INVITE comes back along it, and when the CDR is stored:

* if INVITEs were captured out of time order, the caller is the source of the earliest leg, and the called
  side comes from the leg chain below (confirmed legs first, then all legs);
* otherwise, if some leg is unconfirmed, the called side comes from the chain over the confirmed legs;
* otherwise (every leg confirmed, or no chain result) the live called side stands: the first INVITE's
  destination, moved on by each later INVITE that leaves a hop already seen (same chain rule, applied as
  the INVITEs arrive against the first INVITE's source).

The chain walks legs in time order, starting at the first leg's destination, and moves the called side to a
later leg's destination unless that destination is the first leg's source, the current called side, or a
hop already passed (a proxy). A source that forks to several destinations with different To users and Via
branches keeps its first destination (`sdp_check_direction_ext`, on by default; `call_branches` off).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["InviteLeg", "InviteLegs"]

Addr = tuple[bytes, int]


@dataclass(slots=True)
class InviteLeg:
    """One distinct INVITE path: addresses, the To user and top Via branch of its first INVITE."""

    saddr: bytes
    sport: int
    daddr: bytes
    dport: int
    called: str
    branch: str
    confirmed: bool = False


@dataclass(slots=True)
class InviteLegs:
    """The legs of a call in order of appearance, and every INVITE packet's (leg, time) in capture order."""

    legs: list[InviteLeg] = field(default_factory=list)
    index: dict[tuple[bytes, int, bytes, int], int] = field(default_factory=dict)
    order: list[tuple[int, int]] = field(default_factory=list)
    bad_order: bool = False
    last_ts: int = 0
    called_mod: Addr | None = None  # the called side as moved by later INVITE legs
    proxies: list[Addr] = field(default_factory=list)
    last_branch: str = ""

    def note_invite(self, src: bytes, sport: int, dst: bytes, dport: int, ts_us: int, in_dialog: bool,
                    called: str, branch: str, caller_addr: Addr, called_addr: Addr) -> None:
        """Record one INVITE packet and apply the live called-side rule.

        `in_dialog`: it is not the call's first INVITE transaction and its To has a tag (a re-INVITE), so one
        coming back from the called side adds no leg. `caller_addr`/`called_addr`: the call's first INVITE
        source and destination.
        """
        key = (src, sport, dst, dport)
        idx = self.index.get(key)
        if idx is None:
            back_other_port = False
            for leg in self.legs:
                if dst == leg.saddr and src == leg.daddr:
                    if dport == leg.sport and sport == leg.dport:
                        return  # the exact reverse of a known leg: an INVITE from the called side
                    back_other_port = True
            if back_other_port and in_dialog:
                return
            idx = len(self.legs)
            self.legs.append(InviteLeg(src, sport, dst, dport, called, branch))
            self.index[key] = idx
        self.order.append((idx, ts_us))
        if self.last_ts and ts_us < self.last_ts:
            self.bad_order = True
        self.last_ts = ts_us
        # Live rule: an INVITE leaving a hop already seen moves the called side on to its destination.
        s, d = (src, sport), (dst, dport)
        current = self.called_mod or called_addr
        diff_src = s != caller_addr
        if diff_src and s not in self.proxies:
            self.proxies.append(s)
        if (diff_src or branch == self.last_branch) and d != caller_addr and d != current \
                and d not in self.proxies and not (s == caller_addr and self._forks(src, sport)):
            self.proxies.append(current)
            self.called_mod = d
        self.last_branch = branch

    def confirm(self, src: bytes, sport: int, dst: bytes, dport: int) -> None:
        """A 2xx to the dialog's INVITE went from src to dst: confirm the leg it answers."""
        idx = self.index.get((dst, dport, src, sport))
        if idx is not None:
            self.legs[idx].confirmed = True

    def all_confirmed(self) -> bool:
        return all(leg.confirmed for leg in self.legs)

    def _in_time_order(self) -> list[InviteLeg]:
        order = self.order
        if self.bad_order:
            order = sorted(order, key=lambda o: o[1])  # stable, like the reference's bubble sort
        return [self.legs[i] for i, _ in order]

    def _forks(self, saddr: bytes, sport: int) -> bool:
        """True when every pair of legs from saddr:sport differs in To user and Via branch (a forking
        source); needs at least two legs in the call."""
        if len(self.legs) < 2:
            return False
        mine = [leg for leg in self.legs if leg.saddr == saddr and leg.sport == sport]
        for i, a in enumerate(mine):
            for b in mine[i + 1:]:
                if a.called == b.called or a.branch == b.branch:
                    return False
        return bool(mine)

    def _called_chain(self, only_confirmed: bool) -> Addr | None:
        first_src: Addr | None = None
        called: Addr | None = None
        proxies: list[Addr] = []
        last_branch = ""
        for leg in self._in_time_order():
            if only_confirmed and not leg.confirmed:
                continue
            src, dst = (leg.saddr, leg.sport), (leg.daddr, leg.dport)
            if first_src is None or called is None:
                first_src, called = src, dst
            diff_src = src != first_src
            if diff_src and src not in proxies:
                proxies.append(src)
            if (only_confirmed or diff_src or leg.branch == last_branch) and dst != first_src and dst != called \
                    and dst not in proxies and not (src == first_src and self._forks(*src)):
                proxies.append(called)
                called = dst
            last_branch = leg.branch
        return called

    def caller(self, default: Addr) -> Addr:
        """The caller's SIP address for the CDR (`default`: the first INVITE's source)."""
        if self.bad_order:
            legs = self._in_time_order()
            if legs:
                return legs[0].saddr, legs[0].sport
        return default

    def called(self, default: Addr) -> Addr:
        """The called side's SIP address for the CDR (`default`: the first INVITE's destination)."""
        default = self.called_mod or default
        if self.bad_order:
            for only_confirmed in (True, False):
                found = self._called_chain(only_confirmed)
                if found is not None:
                    return found
        elif not self.all_confirmed():
            found = self._called_chain(True)
            if found is not None:
                return found
        return default
