"""A pair of network namespaces joined by a veth link, for cutting the network between a sensor and its central.

    with NetnsPair.create() as net:      # raises NetnsUnavailable (tests skip) without root / iproute2
        central runs in net.central_ns on net.central_ip, the sensor in net.sensor_ns
        net.cut()    # the sensor's route to the central removed: its packets have nowhere to go
        net.restore()

Only namespaces this object created are touched, and they are deleted on exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

__all__ = ["NetnsPair", "NetnsUnavailable"]


class NetnsUnavailable(Exception):
    """Network namespaces cannot be created here (not root, no iproute2, no veth support); the message says why."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")


class NetnsPair:
    """Namespaces `<tag>c` (central, 10.231.<n>.1/30) and `<tag>s` (sensor, .2/30) with one veth between them."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.central_ns, self.sensor_ns = f"vmpc{tag}", f"vmps{tag}"
        self._veth_c, self._veth_s = f"vc{tag}", f"vs{tag}"
        n = int(tag[:2], 16)
        self.net = f"10.231.{n}.0/30"
        self.central_ip, self.sensor_ip = f"10.231.{n}.1", f"10.231.{n}.2"
        self.cut_now = False

    @classmethod
    def create(cls) -> NetnsPair:
        """Create both namespaces and the link. Raises NetnsUnavailable (after cleaning up what was made)."""
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root")
        if shutil.which("ip") is None:
            raise NetnsUnavailable("iproute2 (`ip`) is not installed")
        pair = cls()
        try:
            pair._setup()
        except NetnsUnavailable:
            pair.delete()
            raise
        return pair

    def _setup(self) -> None:
        c, s = self.central_ns, self.sensor_ns
        _ip("netns", "add", c)
        _ip("netns", "add", s)
        _ip("link", "add", self._veth_c, "type", "veth", "peer", "name", self._veth_s)
        _ip("link", "set", self._veth_c, "netns", c)
        _ip("link", "set", self._veth_s, "netns", s)
        _ip("-n", c, "addr", "add", f"{self.central_ip}/30", "dev", self._veth_c)
        _ip("-n", s, "addr", "add", f"{self.sensor_ip}/30", "dev", self._veth_s)
        for ns, dev in ((c, self._veth_c), (s, self._veth_s)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")

    def cut(self) -> None:
        """Remove the sensor's route to the central's subnet (the issue's "route removed")."""
        _ip("-n", self.sensor_ns, "route", "del", self.net, "dev", self._veth_s)
        self.cut_now = True

    def restore(self) -> None:
        """Put the route back."""
        _ip("-n", self.sensor_ns, "route", "add", self.net, "dev", self._veth_s, "src", self.sensor_ip)
        self.cut_now = False

    def delete(self) -> None:
        """Delete both namespaces (the veth pair goes with them). Never raises."""
        for ns in (self.central_ns, self.sensor_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    def __enter__(self) -> NetnsPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()
