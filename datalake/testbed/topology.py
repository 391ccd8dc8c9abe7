"""What the testbed's lake looks like: RSEs, their attributes and distances, accounts, scopes and quotas.

Pure data derived from the settings, so it is unit-tested without servers and applied by ``bootstrap``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datalake.testbed.settings import HOST, TestbedSettings

# (site, country, tier): real-looking grid sites, so RSE expressions read like a real lake's.
SITES = [
    ("CERN", "CH", 0),
    ("DESY", "DE", 1),
    ("INFN-CNAF", "IT", 1),
    ("IN2P3-CC", "FR", 1),
    ("PIC", "ES", 1),
    ("NIKHEF", "NL", 2),
]
XROOTD_PREFIX = "//rucio"
EXPERIMENT_SCOPES = ("collider", "darkmatter", "gammaray")  # one scope per demo experiment
QUOTA_BYTES = 10**12


@dataclass(frozen=True)
class RseSpec:
    name: str
    port: int  # the authenticated (sss) door: every operation
    attributes: dict[str, str | int | bool]
    anon_port: int | None = None  # a public RSE's anonymous read-only door to the same files

    def protocols(self) -> list[dict]:
        """Rucio protocol entries (priority 1 is preferred; None: not offered, since Rucio 41 takes 0 as a
        priority): reads of a public RSE go through its anonymous door, everything else through the sss door."""
        doors: list[tuple[int, dict[str, int | None]]] = [
            (self.port, {"read": 1 if self.anon_port is None else 2, "write": 1, "delete": 1})
        ]
        if self.anon_port is not None:
            doors.append((self.anon_port, {"read": 1, "write": None, "delete": None}))
        return [
            {
                "scheme": "root",
                "hostname": HOST,
                "port": port,
                "prefix": XROOTD_PREFIX,
                # Rucio's xrootd.Default, minus its forced GSI: the account's sss key (XrdSecSSSKT) is used
                "impl": "datalake_policy.xrootd.Default",
                "domains": {
                    "lan": ops,
                    "wan": {**ops, "third_party_copy_read": ops["read"], "third_party_copy_write": ops["write"]},
                },
            }
            for port, ops in doors
        ]


@dataclass(frozen=True)
class AccountSpec:
    name: str
    scopes: tuple[str, ...]
    email: str
    attributes: dict[str, str] = field(default_factory=dict)  # e.g. data-manager, read by datalake_policy


@dataclass(frozen=True)
class Topology:
    rses: list[RseSpec]
    distances: dict[tuple[str, str], int]
    accounts: list[AccountSpec]


# the data manager may register (``data-manager``, read by datalake_policy) and belongs to every collaboration
DATA_MANAGER = {"data-manager": "True", **{f"group.{scope}": "True" for scope in EXPERIMENT_SCOPES}}


def site_of(index: int) -> tuple[str, str, int]:
    return SITES[index - 1] if index <= len(SITES) else (f"SITE{index}", "XX", 2)


def is_public(index: int, rses: int) -> bool:
    """The last RSE is the public (open-data) one, when there are several."""
    return index == rses and rses > 1


def build(settings: TestbedSettings) -> Topology:
    """RSEs XRD1..XRDn; the last one is the public (open-data) RSE, the others collaboration-only."""
    rses = []
    for i in range(1, settings.rses + 1):
        site, country, tier = site_of(i)
        access = "public" if is_public(i, settings.rses) else "collaboration"
        attributes = {
            "site": site,
            "country": country,
            "tier": tier,
            "access": access,
            "xrootd": True,
            "fts": settings.transfer_url,  # Rucio's conveyor hands this RSE's transfers to our service
        }
        anon = settings.xrootd_anon_port(i) if access == "public" else None
        rses.append(RseSpec(name=f"XRD{i}", port=settings.xrootd_port(i), attributes=attributes, anon_port=anon))
    distances = {(a.name, b.name): distance(a.attributes, b.attributes) for a in rses for b in rses if a.name != b.name}
    accounts = [
        AccountSpec("datamanager", (*EXPERIMENT_SCOPES, "user.datamanager"), "dm@testbed.local", DATA_MANAGER),
        # a collider analyst: member of that collaboration (group), nothing else
        AccountSpec("analyst", ("user.analyst",), "analyst@testbed.local", {"group.collider": "True"}),
        # an analyst of another collaboration (dark matter): refused where the collider analyst is let in
        AccountSpec("dmanalyst", ("user.dmanalyst",), "dmanalyst@testbed.local", {"group.darkmatter": "True"}),
    ]
    return Topology(rses=rses, distances=distances, accounts=accounts)


def distance(a: dict, b: dict) -> int:
    """Rucio ranks sources by distance (lower is nearer): same country 1, then by tier gap."""
    if a["country"] == b["country"]:
        return 1
    return 2 + abs(int(a["tier"]) - int(b["tier"]))
