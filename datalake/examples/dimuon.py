"""The dimuon invariant-mass spectrum: every opposite-sign muon pair of each event, as a ``hist`` histogram.

Run it near the data with::

    datalake process collider:nanoaod --fn datalake.examples.dimuon:mass_spectrum \\
        --branches Muon_pt,Muon_eta,Muon_phi,Muon_mass,Muon_charge --out dimuon

The Z boson shows as a peak at 91 GeV.
"""

from __future__ import annotations

import awkward as ak
import hist
import numpy as np

BRANCHES = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"]


def pair_masses(events: ak.Array) -> np.ndarray:
    """Invariant masses (GeV) of all opposite-sign muon pairs, flattened over events."""
    muons = ak.zip({name.removeprefix("Muon_"): events[name] for name in BRANCHES})
    first, second = ak.unzip(ak.combinations(muons, 2))
    pairs = first.charge * second.charge < 0

    def four_vector(mu: ak.Array) -> tuple[ak.Array, ...]:
        px, py, pz = mu.pt * np.cos(mu.phi), mu.pt * np.sin(mu.phi), mu.pt * np.sinh(mu.eta)
        return px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + mu.mass**2)

    (ax, ay, az, ae), (bx, by, bz, be) = four_vector(first), four_vector(second)
    mass2 = (ae + be) ** 2 - (ax + bx) ** 2 - (ay + by) ** 2 - (az + bz) ** 2
    return ak.to_numpy(ak.flatten(np.sqrt(np.maximum(mass2, 0))[pairs]))


def mass_spectrum(events: ak.Array) -> hist.Hist:
    """Fill the spectrum for one chunk; chunks add up with ``+``."""
    spectrum = hist.Hist.new.Reg(120, 0, 150, name="mass", label=r"$m_{\mu\mu}$ [GeV]").Int64()
    spectrum.fill(mass=pair_masses(events))
    return spectrum
