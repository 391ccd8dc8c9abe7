"""Synthetic NanoAOD-like events for the demo, the tests and the benchmarks.

CMS NanoAOD's layout (one ``Events`` TTree, jagged ``Muon_*``/``Electron_*``/``Jet_*`` collections with their
``nMuon``... counters, flat ``MET_*`` and event ids), written by uproot as a real TTree. A share of the events
are Drell-Yan Z/gamma* -> mu mu decays (the dimuon boosted in pT and rapidity), the rest carry soft, uncorrelated
muons, so a dimuon spectrum shows the Z peak on a falling background, as real data does. The Drell-Yan masses
are drawn inside a generator window as real samples are (no clipping: nothing piles up at its edges).
Deterministic for a given seed: two runs write the same events.
"""

from __future__ import annotations

import os
from pathlib import Path

import awkward as ak
import numpy as np

Z_MASS, Z_WIDTH = 91.1876, 2.4952  # GeV (PDG)
MASS_WINDOW = (20.0, 500.0)  # GeV: where the Breit-Wigner is drawn (its density at the edges is ~1e-4 of the peak)
CONTINUUM = 0.1  # share of the Drell-Yan events from the photon continuum (a smooth turn-on, then falling)
MUON_MASS = 0.105658
BASKET = 25_000  # events per basket (cluster): real NanoAOD files have a few thousand to tens of thousands


def _isotropic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    cos_theta = rng.uniform(-1, 1, n)
    return np.sqrt(1 - cos_theta**2), cos_theta


def dimuon_masses(rng: np.random.Generator, n: int) -> np.ndarray:
    """Z/gamma* masses: the Z's Breit-Wigner (Cauchy) drawn inside ``MASS_WINDOW`` by inverting its CDF there, and
    a ``CONTINUUM`` share from a smooth falling shape (1 GeV + a gamma distribution, mean 21 GeV). Tails are drawn,
    never clipped, so no edge of any window shows as a peak."""
    low, high = MASS_WINDOW
    half = Z_WIDTH / 2
    f_low, f_high = np.arctan((low - Z_MASS) / half), np.arctan((high - Z_MASS) / half)
    peak = Z_MASS + half * np.tan(rng.uniform(f_low, f_high, n))
    continuum = 1.0 + rng.gamma(2.0, 10.0, n)  # above the two muons' masses, density zero at its start
    return np.where(rng.uniform(size=n) < CONTINUUM, continuum, peak)


def _z_decays(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Two opposite-charge muons per decay, as (pt, eta, phi) arrays of shape (n, 2)."""
    mass = dimuon_masses(rng, n)
    p_star = np.sqrt(mass**2 / 4 - MUON_MASS**2)
    sin_t, cos_t = _isotropic(rng, n)
    phi_star = rng.uniform(-np.pi, np.pi, n)
    px, py, pz = p_star * sin_t * np.cos(phi_star), p_star * sin_t * np.sin(phi_star), p_star * cos_t
    energy = mass / 2
    # the Z in the lab: pT from an exponential, rapidity from a Gaussian
    z_pt, z_phi, z_y = rng.exponential(8.0, n), rng.uniform(-np.pi, np.pi, n), rng.normal(0, 1.4, n)
    mt = np.sqrt(mass**2 + z_pt**2)
    z_e, z_px, z_py, z_pz = mt * np.cosh(z_y), z_pt * np.cos(z_phi), z_pt * np.sin(z_phi), mt * np.sinh(z_y)
    bx, by, bz = z_px / z_e, z_py / z_e, z_pz / z_e
    b2 = bx**2 + by**2 + bz**2
    gamma = 1 / np.sqrt(1 - b2)
    out = {}
    for sign, key in ((1, 0), (-1, 1)):
        qx, qy, qz = sign * px, sign * py, sign * pz
        bp = bx * qx + by * qy + bz * qz
        factor = (gamma - 1) * bp / np.where(b2 > 0, b2, 1) + gamma * energy
        lx, ly, lz = qx + factor * bx, qy + factor * by, qz + factor * bz
        pt = np.hypot(lx, ly)
        out[key] = (pt, np.arcsinh(lz / pt), np.arctan2(ly, lx))
    charge = np.where(rng.uniform(size=n) < 0.5, 1, -1)
    return {
        "pt": np.stack([out[0][0], out[1][0]], axis=1),
        "eta": np.stack([out[0][1], out[1][1]], axis=1),
        "phi": np.stack([out[0][2], out[1][2]], axis=1),
        "charge": np.stack([charge, -charge], axis=1),
    }


def _jagged(counts: np.ndarray, **columns: np.ndarray) -> ak.Array:
    return ak.zip({k: ak.unflatten(v, counts) for k, v in columns.items()})


def events(n: int, seed: int = 0, z_fraction: float = 0.3, first_event: int = 0) -> dict[str, ak.Array | np.ndarray]:
    """``n`` NanoAOD-like events as the columns of uproot's ``extend`` (collections as records)."""
    rng = np.random.default_rng(seed)
    is_z = rng.uniform(size=n) < z_fraction
    n_z = int(is_z.sum())
    # soft muons in every event (most events have none)
    soft = rng.poisson(0.6, n)
    m = int(soft.sum())
    soft_mu = {
        "pt": 3 + rng.exponential(9.0, m),
        "eta": rng.uniform(-2.4, 2.4, m),
        "phi": rng.uniform(-np.pi, np.pi, m),
        "charge": np.where(rng.uniform(size=m) < 0.5, 1, -1),
    }
    z = _z_decays(rng, n_z)
    counts = soft + 2 * is_z
    # interleave: each event's Z muons (if any) followed by its soft muons
    z_counts = np.where(is_z, 2, 0)
    columns = {}
    for key in ("pt", "eta", "phi", "charge"):
        z_part = ak.unflatten(z[key].reshape(-1), z_counts)
        soft_part = ak.unflatten(soft_mu[key], soft)
        columns[key] = ak.concatenate([z_part, soft_part], axis=1)
    order = ak.argsort(columns["pt"], axis=1, ascending=False)  # NanoAOD sorts collections by pT
    total = int(counts.sum())
    muon = ak.zip(
        {
            "pt": ak.values_astype(columns["pt"][order], np.float32),
            "eta": ak.values_astype(columns["eta"][order], np.float32),
            "phi": ak.values_astype(columns["phi"][order], np.float32),
            "mass": ak.unflatten(np.full(total, MUON_MASS, np.float32), counts),
            "charge": ak.values_astype(columns["charge"][order], np.int32),
            "pfRelIso04_all": ak.unflatten(rng.exponential(0.1, total).astype(np.float32), counts),
            "dxy": ak.unflatten(rng.normal(0, 0.01, total).astype(np.float32), counts),
            "dz": ak.unflatten(rng.normal(0, 0.03, total).astype(np.float32), counts),
            "tightId": ak.unflatten(rng.uniform(size=total) < 0.9, counts),
        }
    )
    n_el = rng.poisson(0.4, n)
    e = int(n_el.sum())
    electron = _jagged(
        n_el,
        pt=(5 + rng.exponential(12.0, e)).astype(np.float32),
        eta=rng.uniform(-2.5, 2.5, e).astype(np.float32),
        phi=rng.uniform(-np.pi, np.pi, e).astype(np.float32),
        mass=np.full(e, 0.000511, np.float32),
        charge=np.where(rng.uniform(size=e) < 0.5, 1, -1).astype(np.int32),
        cutBased=rng.integers(0, 5, e).astype(np.int32),
    )
    n_jet = rng.poisson(3.0, n)
    j = int(n_jet.sum())
    jet_pt = (15 + rng.exponential(30.0, j)).astype(np.float32)
    jet = _jagged(
        n_jet,
        pt=jet_pt,
        eta=rng.normal(0, 2.0, j).astype(np.float32),
        phi=rng.uniform(-np.pi, np.pi, j).astype(np.float32),
        mass=(jet_pt * rng.uniform(0.05, 0.2, j)).astype(np.float32),
        btagDeepB=rng.uniform(0, 1, j).astype(np.float32),
        jetId=rng.integers(0, 7, j).astype(np.int32),
    )
    ids = np.arange(first_event, first_event + n, dtype=np.uint64)
    return {
        "run": np.full(n, 1, np.uint32),
        "luminosityBlock": (ids // 1000 + 1).astype(np.uint32),
        "event": ids + 1,
        "Muon": muon,
        "Electron": electron,
        "Jet": jet,
        "MET_pt": rng.exponential(25.0, n).astype(np.float32),
        "MET_phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
    }


def write(path: str | os.PathLike, n: int, seed: int = 0, basket: int = BASKET, compression: str = "zstd") -> Path:
    """Write ``n`` events to ``path`` as a TTree ``Events`` (uproot >= 5.7 writes an RNTuple for ``f[k] = ...``,
    hence ``mktree`` + ``extend``), one basket per ``basket`` events."""
    import uproot

    codec = {"zstd": uproot.ZSTD(5), "lz4": uproot.LZ4(4), "zlib": uproot.ZLIB(4), "lzma": uproot.LZMA(8)}[compression]
    path = Path(path)
    part = path.with_name(path.name + ".part")
    with uproot.recreate(part, compression=codec) as out:
        tree = None
        for start in range(0, n, basket):
            chunk = events(min(basket, n - start), seed=seed * 1_000_003 + start, first_event=start)
            if tree is None:
                types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in chunk.items()}
                tree = out.mktree("Events", types)
            tree.extend(chunk)
    part.rename(path)
    return path


def write_files(
    directory: str | os.PathLike,
    files: int,
    events_per_file: int,
    seed: int = 0,
    compression: str = "zstd",
    prefix: str = "nano",
) -> list[Path]:
    """``files`` files ``<prefix>_000.root``... of ``events_per_file`` events each (file *i* uses seed
    ``seed + i``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write(directory / f"{prefix}_{i:03d}.root", events_per_file, seed=seed + i, compression=compression)
        for i in range(files)
    ]
