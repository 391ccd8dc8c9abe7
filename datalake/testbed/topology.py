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
# Rucio's own protocols: root sends the client's token (a JWT) with ztn, gfal2 (davs) as a bearer token, so the
# stock client needs nothing of ours (Rucio's webdav protocol speaks https://, not davs://)
IMPL = {"root": "rucio.rse.protocols.xrootd.Default", "davs": "rucio.rse.protocols.gfal.Default"}
TOKEN_BASE_PATH = "/" + XROOTD_PREFIX.strip("/")  # WLCG token scopes name paths below it
EXPERIMENT_SCOPES = ("collider", "darkmatter", "gammaray")  # one scope per demo experiment
QUOTA_BYTES = 10**12


@dataclass(frozen=True)
class RseSpec:
    name: str
    port: int  # the token door: every operation
    attributes: dict[str, str | int | bool]
    anon_port: int | None = None  # a public RSE's anonymous read-only door to the same files
    host: str = HOST  # where its doors are reached (the site's host in the site lake)

    def protocols(self) -> list[dict]:
        """Rucio protocol entries (priority 1 is preferred; None: not offered, since Rucio 41 takes 0 as a
        priority). Reads, writes and deletes go over root:// through the token door (a public RSE's reads through
        its anonymous door first); third-party copies over davs:// on the same door, since Rucio's FTS3
        transfertool sends per-file tokens only when every endpoint of a transfer is davs."""
        public = self.anon_port is not None
        doors: list[tuple[str, int, dict[str, int | None], int | None]] = [
            ("root", self.port, {"read": 2 if public else 1, "write": 1, "delete": 1}, 2),
            ("davs", self.port, {"read": 3 if public else 2, "write": 2, "delete": 2}, 1),
        ]
        if self.anon_port is not None:
            doors.append(("root", self.anon_port, {"read": 1, "write": None, "delete": None}, 3))
        return [
            {
                "scheme": scheme,
                "hostname": self.host,
                "port": port,
                "prefix": XROOTD_PREFIX if scheme == "root" else TOKEN_BASE_PATH + "/",
                "impl": IMPL[scheme],
                "domains": {
                    "lan": ops,
                    "wan": {
                        **ops,
                        "third_party_copy_read": tpc,
                        "third_party_copy_write": tpc if ops["write"] is not None else None,
                    },
                },
            }
            for scheme, port, ops, tpc in doors
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
    issuer: str = ""  # the token issuer whose tokens are the accounts' identities

    def token_identity(self, account: str) -> str:
        """The identity Rucio derives from a token of this account (``sub`` = the account at the testbed's
        issuer): ``rucio-admin identity add --type OIDC --id`` takes it."""
        return f"SUB={account}, ISS={self.issuer}"


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
            # token scopes name paths below this (storage.read:/collider is /rucio/collider), as the storage's
            # SciTokens base_path does: Rucio's transfertool and datalake share build scopes from it
            "oidc_base_path": TOKEN_BASE_PATH,
            "oidc_support": True,  # ... and transfers between davs doors carry them, per file
        }
        anon = settings.xrootd_anon_port(i) if access == "public" else None
        spec = RseSpec(f"XRD{i}", settings.xrootd_port(i), attributes, anon, settings.host(f"xrd{i}"))
        rses.append(spec)
    distances = {(a.name, b.name): distance(a.attributes, b.attributes) for a in rses for b in rses if a.name != b.name}
    accounts = [
        AccountSpec("datamanager", (*EXPERIMENT_SCOPES, "user.datamanager"), "dm@testbed.local", DATA_MANAGER),
        # a collider analyst: member of that collaboration (group), nothing else
        AccountSpec("analyst", ("user.analyst",), "analyst@testbed.local", {"group.collider": "True"}),
        # an analyst of another collaboration (dark matter): refused where the collider analyst is let in
        AccountSpec("dmanalyst", ("user.dmanalyst",), "dmanalyst@testbed.local", {"group.darkmatter": "True"}),
    ]
    return Topology(rses=rses, distances=distances, accounts=accounts, issuer=settings.issuer_url)


def distance(a: dict, b: dict) -> int:
    """Rucio ranks sources by distance (lower is nearer): same country 1, then by tier gap."""
    if a["country"] == b["country"]:
        return 1
    return 2 + abs(int(a["tier"]) - int(b["tier"]))
