"""A site's uplink in the site lake (docker/compose.yaml): tc's token bucket filter on the site host's interface,
so everything leaving a site (a remote read of its files, a copy from it) travels at the link's rate, while a
site's worker reads its own RSE over the host's loopback. Bandwidth only: tc's netem (added latency, loss) is not
in every kernel, these machines' included."""

from __future__ import annotations

import re
import subprocess

from datalake.errors import ConfigError, TestbedError

_RATE = re.compile(r"(\d+)(kbit|mbit|gbit)")
_UNIT = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
DEVICE = "eth0"  # a container's interface on its network


def bits_per_second(rate: str) -> int:
    """``50mbit`` -> 50,000,000; anything else is one line."""
    found = _RATE.fullmatch(rate.strip().lower())
    if not found or int(found.group(1)) == 0:
        raise ConfigError(f"link rate {rate!r}: write e.g. 50mbit, 100mbit or 1gbit")
    return int(found.group(1)) * _UNIT[found.group(2)]


def shape_argv(rate: str, device: str = DEVICE) -> list[str]:
    """tc's command: a bucket of 10 ms of traffic (at least 16 kB), packets queued for at most 100 ms."""
    bits = bits_per_second(rate)
    burst = max(bits // 8 // 100, 16_000)
    shaper = ["tbf", "rate", str(bits), "burst", str(burst), "latency", "100ms"]
    return ["tc", "qdisc", "replace", "dev", device, "root", *shaper]


def shape(rate: str, device: str = DEVICE) -> None:
    """Shape this host's uplink (needs NET_ADMIN: the site containers have it)."""
    result = subprocess.run(shape_argv(rate, device), capture_output=True, text=True)
    if result.returncode != 0:
        raise TestbedError(f"shaping {device} to {rate} failed: {(result.stderr or '').strip()[:200]}")
