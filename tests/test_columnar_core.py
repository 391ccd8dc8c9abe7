"""Columnar processing without the testbed: chunking, placement, merging, selections, derived-data policy, user
functions, results, and cluster.run / run_chunk on a real in-process Dask cluster and real NanoAOD-like files."""

from __future__ import annotations

import itertools
import pickle
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import awkward as ak
import cloudpickle
import hist
import numpy as np
import pytest
import uproot
from hypothesis import given, settings
from hypothesis import strategies as st

from datalake.dids import DID
from datalake.errors import ConfigError, ProcessingError, UserCodeError
from datalake.examples import dimuon
from datalake.policy import Tier, evaluate, load
from datalake.policy.derived import bounded, readers_problem
from datalake.policy.metadata import validate
from datalake.processing import cluster, planning, results, userfn
from datalake.processing.chunks import Chunk, split
from datalake.processing.columnar import ReadFailed
from datalake.processing.merge import merge
from datalake.processing.placement import Placed, Source, beside_share, place
from datalake.processing.process import Partial, merge_partials, run_chunk
from datalake.processing.selection import parse
from datalake.testbed import nanoaod
from datalake.tracebacks import Frame

# -- chunks.split -----------------------------------------------------------------------------------------------


def assert_covers(chunks: list[Chunk], entries: int) -> None:
    assert [c.start for c in chunks[:1]] == ([0] if entries else [])
    assert all(c.entries > 0 for c in chunks)
    assert all(a.stop == b.start for a, b in itertools.pairwise(chunks))
    assert (chunks[-1].stop if chunks else 0) == entries


@settings(max_examples=300, deadline=None)
@given(entries=st.integers(0, 5000), step=st.integers(1, 2000))
def test_split_without_boundaries_is_equal_and_gapless(entries, step):
    """Without boundaries, chunks tile [0, entries) exactly, each at most step, sizes differing by at most one."""
    chunks = split("s:f", entries, step)
    assert_covers(chunks, entries)
    sizes = [c.entries for c in chunks]
    assert all(s <= step for s in sizes)
    assert not sizes or max(sizes) - min(sizes) <= 1
    assert len(chunks) == -(-entries // step)


@settings(max_examples=300, deadline=None)
@given(
    entries=st.integers(1, 5000),
    step=st.integers(1, 2000),
    boundaries=st.lists(st.integers(-10, 6000), max_size=30),
)
def test_split_with_boundaries_cuts_only_there_nearest_to_step(entries, step, boundaries):
    """With boundaries, chunks tile [0, entries), end only at a boundary (or the end), the one nearest step."""
    chunks = split("s:f", entries, step, boundaries)
    assert_covers(chunks, entries)
    inner = {b for b in boundaries if 0 < b < entries}
    if not inner:  # no usable boundary: the equal split
        assert chunks == split("s:f", entries, step)
        return
    cuts = sorted(inner | {entries})
    for c in chunks:
        assert c.stop in cuts
        after = [x for x in cuts if x > c.start]
        best = min(abs(x - c.start - step) for x in after)
        assert abs(c.stop - c.start - step) == best


def test_split_examples():
    """A cluster larger than step is one chunk; step < 1 is refused; no entries gives no chunks."""
    assert [(c.start, c.stop) for c in split("s:f", 100, 10, [0, 50, 60, 100])] == [(0, 50), (50, 60), (60, 100)]
    assert [(c.start, c.stop) for c in split("s:f", 30_000, 10_000, [0, 10_000, 20_000, 30_000])] == [
        (0, 10_000),
        (10_000, 20_000),
        (20_000, 30_000),
    ]
    assert split("s:f", 0, 10) == [] and split("s:f", 0, 10, [0, 5]) == []
    with pytest.raises(ValueError, match="at least one entry"):
        split("s:f", 10, 0)
    assert str(Chunk("s:f", 3, 7)) == "s:f[3:7]" and Chunk("s:f", 3, 7).entries == 4


# -- placement ----------------------------------------------------------------------------------------------------

A1, B1, C1 = Source("RSE-A", "A", "root://a//f"), Source("RSE-B", "B", "root://b//f"), Source("RSE-C", "C", "c")


def test_place_balances_equal_chunks_across_two_replica_sites():
    """Ten equal chunks with replicas at A and B go five to each site, the chosen replica first."""
    chunks = [(Chunk("s:f", i * 10, (i + 1) * 10), (A1, B1)) for i in range(10)]
    placed = place(chunks, {"A", "B"})
    assert sorted(p.site for p in placed).count("A") == 5 and [p.site for p in placed].count("B") == 5
    assert all(p.sources[0].site == p.site and set(p.sources) == {A1, B1} for p in placed)
    assert beside_share(placed) == 1.0


def test_place_balances_events_not_chunk_counts():
    """Load is counted in events: after a 100-event chunk at A, two 50-event chunks both go to B."""
    chunks = [(Chunk("s:f", 0, 100), (A1, B1)), (Chunk("s:f", 100, 150), (A1, B1)), (Chunk("s:f", 150, 200), (A1, B1))]
    assert [p.site for p in place(chunks, {"A", "B"})] == ["A", "B", "B"]


def test_place_only_at_sites_with_workers_else_anywhere():
    """A chunk goes to a replica's site that has workers; with none, it runs anywhere (site None)."""
    placed = place([(Chunk("s:f", 0, 5), (C1, B1)), (Chunk("s:g", 0, 5), (C1,))], {"A", "B"})
    assert placed[0].site == "B" and placed[0].sources == (B1, C1)
    assert placed[1].site is None and placed[1].sources == (C1,)
    assert beside_share(placed) == 0.5 and beside_share([]) == 1.0
    with pytest.raises(ValueError, match="no replica"):
        place([(Chunk("s:h", 0, 5), ())], {"A"})


def test_placed_next_skips_failed_rses_and_ends_with_none():
    """Placed.next moves to the best source not failed, prefers worker sites, and is None when none is left."""
    p = Placed(Chunk("s:f", 0, 5), (A1, C1, B1), "A")
    moved = p.next({"RSE-A"}, {"A", "B"})
    assert moved.sources == (B1, C1) and moved.site == "B" and moved.chunk == p.chunk
    remote = p.next({"RSE-A", "RSE-B"}, {"A", "B"})
    assert remote.sources == (C1,) and remote.site is None
    assert p.next({"RSE-A", "RSE-B", "RSE-C"}, {"A", "B"}) is None


# -- merge --------------------------------------------------------------------------------------------------------


def small_hist(*values: float) -> hist.Hist:
    h = hist.Hist.new.Reg(4, 0, 4, name="x").Int64()
    h.fill(x=list(values))
    return h


def test_merge_adds_hists_arrays_and_nested_dicts():
    """Hists and arrays add; dicts merge key by key recursively, keeping one-sided keys; None is the identity."""
    assert merge(small_hist(0.5, 1.5), small_hist(1.5, 3.5)).values().tolist() == [1, 2, 0, 1]
    assert merge(np.array([1, 2]), np.array([10, 20])).tolist() == [11, 22]
    a = {"h": small_hist(0.5), "n": {"mu": 1, "e": 2}, "only_a": 7}
    b = {"h": small_hist(0.5), "n": {"mu": 10, "jet": 5}, "only_b": np.array([1])}
    out = merge(a, b)
    assert out["h"].values().tolist() == [2, 0, 0, 0]
    assert out["n"] == {"mu": 11, "e": 2, "jet": 5}
    assert out["only_a"] == 7 and out["only_b"].tolist() == [1]
    assert a["n"] == {"mu": 1, "e": 2} and a["h"].values().tolist() == [1, 0, 0, 0]  # inputs untouched
    assert merge(None, 3) == 3 and merge(3, None) == 3 and merge(None, None) is None


@pytest.mark.parametrize(("a", "b", "names"), [("s", 1, "str + int"), ({"a": 1}, 1, "dict + int")])
def test_merge_incompatible_results_raise_typeerror_naming_types(a, b, names):
    """Results that do not add raise TypeError naming both types."""
    with pytest.raises(TypeError, match=re.escape(f"results do not add up: {names} (")):
        merge(a, b)


# -- selection ----------------------------------------------------------------------------------------------------

EVENTS = ak.Array(
    {
        "nMuon": [0, 1, 2, 3],
        "Muon_pt": [[], [30.0], [10.0, 5.0], [50.0, 22.0, 4.0]],
        "Muon_tightId": [[], [True], [True, False], [False, True, True]],
        "MET_pt": [5.0, 40.0, 25.0, 70.0],
    }
)


@pytest.mark.parametrize(
    ("text", "branches", "expected"),
    [
        ("nMuon >= 2 and max(Muon_pt) > 25", ("nMuon", "Muon_pt"), [False, False, False, True]),
        ("nMuon == 0 or MET_pt > 60", ("nMuon", "MET_pt"), [True, False, False, True]),
        ("not (nMuon > 1)", ("nMuon",), [True, True, False, False]),
        ("1 < nMuon < 3", ("nMuon",), [False, False, True, False]),
        ("20 < MET_pt <= 40 and nMuon > 0", ("MET_pt", "nMuon"), [False, True, True, False]),
        ("num(Muon_pt) == nMuon", ("Muon_pt", "nMuon"), [True, True, True, True]),
        ("any((Muon_pt > 20) & Muon_tightId)", ("Muon_pt", "Muon_tightId"), [False, True, False, True]),
        ("~(MET_pt > 30) | (nMuon == 3)", ("MET_pt", "nMuon"), [True, False, True, True]),
        ("min(Muon_pt) < 6", ("Muon_pt",), [False, False, True, True]),
        (
            "sum(Muon_pt) / 2 > 30 or all(Muon_tightId) and nMuon == 1",
            ("Muon_pt", "Muon_tightId", "nMuon"),
            [False, True, False, True],
        ),
    ],
)
def test_selection_branches_and_mask(text, branches, expected):
    """parse() finds the branches; mask() gives one boolean per event, as Python would read the expression."""
    sel = parse(text)
    assert sorted(sel.branches) == sorted(branches) and len(sel.branches) == len(branches)
    assert sel.mask(EVENTS).tolist() == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Muon.pt > 2", "Attribute is not allowed"),
        ("Muon_pt[0] > 2", "Subscript is not allowed"),
        ("__import__('os')", "only these functions are allowed"),
        ("open(nMuon)", "only these functions are allowed"),
        ("(lambda: 1)()", "only these functions are allowed"),
        ("lambda x: x", "Lambda is not allowed"),
        ("nMuon == 'two'", "only numbers and True/False"),
        ("max(Muon_pt, axis=0) > 1", "only these functions are allowed"),
        ("max(Muon_pt, MET_pt) > 1", "takes one argument"),
        ("nMuon in (1, 2)", "is not allowed"),
        ("nMuon >", "is not an expression"),
    ],
)
def test_selection_refuses_disallowed_syntax_in_one_line(text, fragment):
    """Disallowed syntax raises ConfigError at parse time, in one line naming what is wrong."""
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_selection_with_a_jagged_result_is_refused():
    """A per-object (jagged) result is a ConfigError telling to reduce the lists."""
    with pytest.raises(ConfigError, match="one true/false per event") as err:
        parse("Muon_pt > 20").mask(EVENTS)
    assert "\n" not in str(err.value)


def test_selection_constant_expression_is_a_mask_or_config_error():
    """A constant selection selects every event or none (never a TypeError from awkward)."""
    assert parse("1 < 2").mask(EVENTS).tolist() == [True] * len(EVENTS)
    assert parse("False").mask(EVENTS).tolist() == [False] * len(EVENTS)


def test_selection_function_name_as_a_value_is_caught_at_parse():
    """A function name used without a call is refused by parse(), before any work is sent."""
    with pytest.raises(ConfigError, match="max is a function"):
        parse("max > 3")


# -- derived-data policy ------------------------------------------------------------------------------------------

POLICIES = Path(__file__).resolve().parent.parent / "policies"
DATACITE = {
    "creators": ["CMS Collaboration"],
    "title": "t",
    "publisher": "CERN",
    "publication_year": 2024,
    "resource_type": "Dataset",
}
LHC_META = {
    **DATACITE,
    "experiment": "CMS",
    "run_period": "Run2012B",
    "run_end": "2012-12-31",
    "collision_energy_tev": 8,
    "event_count": 1000,
}
FERMI_META = {
    **DATACITE,
    "experiment": "Fermi-LAT",
    "mission_week": 900,
    "observation_start": "2026-11-12T00:00:00",
    "observation_end": "2026-11-19T00:00:00",
}
RESULTS_META = {**DATACITE, "experiment": "CMS", "analysis": "HIG-19-001"}
BEFORE_RELEASE = datetime(2016, 1, 1)  # lhc-collaboration data of 2012 is collaboration-only until 2017


def state(policy_name: str, did: str, meta: dict, now: datetime = BEFORE_RELEASE):
    policy = load(POLICIES / f"{policy_name}.yaml")
    meta = validate(policy, meta)
    return evaluate(policy, did, meta, now), policy, meta


def test_skim_under_the_same_policy_has_no_readers_problem():
    """A skim of collaboration data under the same policy is readable by the same people: no problem."""
    source, _, _ = state("lhc-collaboration", "collider:run2012b", LHC_META)
    skim, _, _ = state("lhc-collaboration", "collider:run2012b_skim", LHC_META)
    assert source.tier is Tier.COLLABORATION and skim.tier is Tier.COLLABORATION
    assert readers_problem(skim, [source]) is None


def test_public_derived_of_collaboration_data_is_a_problem():
    """A public (fermi-observatory) dataset derived from collaboration-only data is refused, naming the input."""
    source, _, _ = state("lhc-collaboration", "collider:run2012b", LHC_META)
    derived, _, _ = state("fermi-observatory", "gammaray:mix", FERMI_META, datetime(2026, 12, 1))
    assert derived.tier is Tier.PUBLIC
    problem = readers_problem(derived, [source])
    assert problem and "gammaray:mix would be public" in problem and "collider:run2012b" in problem


def test_wider_readers_than_an_input_is_a_problem_naming_them():
    """derived-results (collider + darkmatter) over lhc data (collider only) names group:darkmatter as too wide."""
    source, _, _ = state("lhc-collaboration", "collider:run2012b", LHC_META)
    derived, _, _ = state("derived-results", "collider:results", RESULTS_META)
    problem = readers_problem(derived, [source])
    assert problem and "group:darkmatter" in problem and "derived-results" in problem
    assert "group:collider" not in problem.split("read collider:results")[0]  # only the wider readers are named
    public_input, _, _ = state("fermi-observatory", "gammaray:w900", FERMI_META, datetime(2026, 12, 1))
    assert readers_problem(derived, [public_input]) is None  # a public input limits nothing


def test_bounded_holds_a_released_derived_dataset_while_an_input_is_closed():
    """bounded() keeps a released derived dataset unreleased while an input is not public, else leaves it alone."""
    now = datetime(2026, 3, 1)
    meta = {**RESULTS_META, "paper_published": "2026-03-01"}
    derived, policy, vmeta = state("derived-results", "collider:results", meta, now)
    assert derived.tier is Tier.PUBLIC
    closed_input, _, _ = state("lhc-collaboration", "collider:run2012b", LHC_META, BEFORE_RELEASE)
    held = bounded(derived, [closed_input], policy, vmeta)
    assert held.tier is not Tier.PUBLIC and held.tier is Tier.COLLABORATION
    assert held.release.held and not held.release.released and "collider:run2012b" in held.release.why
    assert held.readers and held.opendata.state != "public"
    open_input, _, _ = state("lhc-collaboration", "collider:run2012b", LHC_META, datetime(2030, 1, 1))
    assert open_input.tier is Tier.PUBLIC
    assert bounded(derived, [open_input], policy, vmeta) is derived
    unreleased, _, _ = state("derived-results", "collider:results", RESULTS_META, now)
    assert bounded(unreleased, [closed_input], policy, vmeta) is unreleased


def test_bounded_withdraws_a_public_tier_derived_dataset_with_a_closed_input():
    """A derived dataset under a public-tier policy is suspended (not public) while an input is closed."""
    derived, policy, vmeta = state("fermi-observatory", "gammaray:mix", FERMI_META, datetime(2026, 12, 1))
    closed_input, _, _ = state("lhc-collaboration", "collider:run2012b", LHC_META)
    assert bounded(derived, [closed_input], policy, vmeta).tier is Tier.SUSPENDED


# -- userfn -------------------------------------------------------------------------------------------------------

USER_CODE = 'BRANCHES = ["Muon_pt"]\n\n\ndef triple(x):\n    return 3 * x\n'


@pytest.fixture
def user_file(tmp_path):
    """A throw-away analysis file; its module is unregistered and forgotten afterwards."""
    path = tmp_path / f"ana_{uuid.uuid4().hex[:8]}.py"
    path.write_text(USER_CODE)
    yield path
    module_name = f"datalake_user_{path.stem}"
    if module_name in cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES:
        cloudpickle.unregister_pickle_by_value(sys.modules[module_name])
    sys.modules.pop(module_name, None)


def test_userfn_from_a_file_is_shipped_by_value(user_file, tmp_path):
    """A function loaded from a .py file works and pickles by value: it loads where its file does not exist."""
    fn = userfn.load(f"{user_file}:triple")
    assert fn(2) == 6 and userfn.default_branches(fn) == ["Muon_pt"]
    assert fn.__module__ in cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES
    data = cloudpickle.dumps(fn)
    assert pickle.loads(data)(5) == 15
    blob = tmp_path / "fn.pkl"
    blob.write_bytes(data)
    user_file.unlink()  # another process, without the file or the module, still runs it
    code = f"import pickle; print(pickle.loads(open({str(blob)!r}, 'rb').read())(7))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "21"


def test_userfn_installed_example_goes_by_reference():
    """Our own example loads by module:function, is not pickled by value, and declares its branches."""
    fn = userfn.load("datalake.examples.dimuon:mass_spectrum")
    assert fn is dimuon.mass_spectrum
    assert "datalake.examples.dimuon" not in cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES
    assert userfn.default_branches(dimuon.mass_spectrum) == dimuon.BRANCHES
    assert userfn.default_branches(len) is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("nocolon", "write module:function"),
        ("mod:", "write module:function"),
        (":f", "write module:function"),
        ("mod:not-an-identifier", "write module:function"),
        ("missing_module_xyz:f", "cannot import missing_module_xyz: ModuleNotFoundError"),
        ("path/nofile.py:f", "no such file path/nofile.py"),
        ("datalake.examples.dimuon:nope", "has no function 'nope'"),
        ("datalake.examples.dimuon:BRANCHES", "has no function 'BRANCHES'"),
    ],
)
def test_userfn_bad_specs_are_one_line_config_errors(spec, fragment):
    """Every malformed or unresolvable --fn spec is one ConfigError line saying what is wrong."""
    with pytest.raises(ConfigError) as err:
        userfn.load(spec)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_userfn_file_with_a_syntax_error_is_a_config_error(tmp_path):
    """A user file that does not compile gives a one-line ConfigError, not a traceback."""
    path = tmp_path / f"broken_{uuid.uuid4().hex[:8]}.py"
    path.write_text("def f(:\n    pass\n")
    try:
        with pytest.raises(ConfigError, match="cannot import") as err:
            userfn.load(f"{path}:f")
        assert "\n" not in str(err.value)
    finally:
        sys.modules.pop(f"datalake_user_{path.stem}", None)


# -- results ------------------------------------------------------------------------------------------------------


def spectrum() -> hist.Hist:
    h = hist.Hist.new.Reg(120, 0, 150, name="mass", label="m").Int64()
    rng = np.random.default_rng(1)
    h.fill(mass=np.concatenate([rng.normal(91.2, 2.5, 5000), rng.uniform(0, 150, 2000)]).clip(0, 149.9))
    return h


def test_save_hist_writes_pickle_and_png(tmp_path):
    """A 1-D hist is saved as OUT.pkl (round-trips equal) and OUT.png (a real PNG), with no partial file left."""
    h = spectrum()
    written = results.save(h, tmp_path / "out" / "dimuon.pkl")  # a given suffix is not doubled
    pkl, png = tmp_path / "out" / "dimuon.pkl", tmp_path / "out" / "dimuon.png"
    assert written == [pkl, png]
    assert pickle.loads(pkl.read_bytes()) == h
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dimuon.pkl", "dimuon.png"]


def test_save_non_hist_writes_only_pickle(tmp_path):
    """A dict result (or a 2-D hist) is saved as OUT.pkl only."""
    result = {"n": 3, "h": small_hist(1.5)}
    assert results.save(result, tmp_path / "r") == [tmp_path / "r.pkl"]
    loaded = pickle.loads((tmp_path / "r.pkl").read_bytes())
    assert loaded["n"] == 3 and loaded["h"] == result["h"]
    h2 = hist.Hist.new.Reg(2, 0, 2).Reg(2, 0, 2).Int64()
    assert results.save(h2, tmp_path / "two") == [tmp_path / "two.pkl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pkl", "two.pkl"]


@pytest.mark.parametrize(("bins", "expected_rows"), [(120, 24), (25, 13), (7, 7), (24, 24)])
def test_rows_sum_to_the_total_in_at_most_24_contiguous_rows(bins, expected_rows):
    """rows() groups adjacent bins: at most 24 rows, contiguous edges spanning the axis, counts summing to the total."""
    h = hist.Hist.new.Reg(bins, 0, 150, name="mass").Int64()
    h.fill(mass=np.random.default_rng(bins).uniform(0, 150, 3000))
    table = results.rows(h)
    assert len(table) == expected_rows <= 24
    assert table[0][0] == 0 and table[-1][1] == 150
    assert all(a[1] == b[0] for a, b in itertools.pairwise(table))
    assert sum(r[2] for r in table) == h.values().sum() == 3000


def test_peak_is_the_centre_of_the_fullest_bin():
    """peak() returns the centre of the bin with most entries."""
    assert results.peak(small_hist(2.2, 2.7, 0.1)) == 2.5
    assert 88 <= results.peak(spectrum()) <= 94


def test_the_plot_says_how_many_entries_lie_outside_its_axis_and_never_folds_them(tmp_path):
    h = hist.Hist.new.Reg(10, 0, 150, name="mass").Int64()
    h.fill(mass=[-1.0, 10.0, 149.0, 151.0, 300.0, 1e6])
    assert results._outside(h) == "1 below 0, 3 above 150 (not drawn)"
    assert h.values()[-1] == 1  # the last bin holds its own entry only
    assert results._outside(hist.Hist.new.Reg(10, 0, 150, name="m").Int64().fill([5.0])) == ""
    assert results.plot(h, tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_generated_dimuon_masses_have_tails_and_no_pile_up_at_any_window_edge():
    """No clipping: the tails go on past 50 and 150 GeV, and no bin near a window edge stands out."""
    masses = nanoaod.dimuon_masses(np.random.default_rng(5), 2_000_000)
    assert masses.min() > 2 * nanoaod.MUON_MASS and (masses > 150).sum() > 1000 and (masses < 50).sum() > 1000
    for edge in (*nanoaod.MASS_WINDOW, 50.0, 150.0):
        counts, _ = np.histogram(masses, bins=np.linspace(edge - 5, edge + 5, 11))
        inside = counts[counts > 0]
        assert inside.max() < 1.5 * np.median(inside) + 10, (edge, counts)  # smooth: no spike, no peak


# -- cluster.run on a real in-process Dask cluster -----------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    """A scheduler and two single-thread workers, one at site A and one at site B."""
    from distributed import Client, Scheduler, SpecCluster, Worker

    def worker(site):
        return {"cls": Worker, "options": {"nthreads": 1, "resources": {cluster.site_resource(site): 1}}}

    spec = SpecCluster(
        scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
        workers={"a": worker("A"), "b": worker("B")},
    )
    with spec, Client(spec) as dask_client:
        dask_client.wait_for_workers(2, timeout=30)
        yield dask_client


def where_task(placed: Placed) -> tuple[str, str, str]:
    """On a worker: (its address, the RSE read, the chunk); a source on an RSE named BAD* cannot be read."""
    from distributed import get_worker

    source = placed.sources[0]
    if source.rse.startswith("BAD"):
        raise ReadFailed(source.url, "unreachable")
    return get_worker().address, source.rse, str(placed.chunk)


def count_task(placed: Placed) -> dict:
    return {"events": placed.chunk.entries, "chunks": 1}


def function_failed_task(placed: Placed) -> None:
    raise cluster.FunctionFailed(str(placed.chunk), "ZeroDivisionError: boom", (Frame("ana.py", 3, "fn", "1 / 0"),))


def key_error_task(placed: Placed) -> None:
    raise KeyError(f"{placed.chunk.did}: tree 'Events' has no branch Nope")


def plain_error_task(placed: Placed) -> None:
    raise ZeroDivisionError("division by zero")


def partial_task(placed: Placed) -> Partial:
    return Partial(1 if placed.chunk.start == 0 else "one", [])


def site_of(client, address: str) -> set[str]:
    resources = cluster.workers(client)[address]["resources"]
    return {r.removeprefix(cluster.RESOURCE_PREFIX) for r in resources}


def chunks_at(n: int, sources: tuple[Source, ...], did: str = "s:f", size: int = 10) -> list[tuple]:
    return [(Chunk(did, i * size, (i + 1) * size), sources) for i in range(n)]


def test_a_version_mismatch_is_one_line_naming_each_package_as_dask_compares_them():
    """From Client.get_versions(): lz4 missing at the workers is a mismatch; numpy only at the scheduler is not
    (Dask ignores the scheduler for packages it does not use); equal versions are not listed."""
    versions = {
        "client": {"packages": {"dask": "2026.8.0", "lz4": "4.4.4", "numpy": "2.3.0", "pandas": "2.3.1"}},
        "scheduler": {"packages": {"dask": "2026.8.0", "lz4": "4.4.4", "numpy": "1.0", "pandas": "2.3.1"}},
        "workers": {
            "tcp://a": {"packages": {"dask": "2026.8.0", "lz4": None, "numpy": "2.3.0", "pandas": "2.3.1"}},
            "tcp://b": {"packages": {"dask": "2026.8.0", "lz4": None, "numpy": "2.3.0", "pandas": "2.2.0"}},
        },
    }
    line = cluster.mismatch(versions)
    lz4 = "lz4 (here 4.4.4, scheduler 4.4.4, workers missing)"
    pandas = "pandas (here 2.3.1, scheduler 2.3.1, workers 2.2.0, 2.3.1)"
    assert line == f"the Dask cluster runs other versions than this client: {lz4}; {pandas}"
    assert "\n" not in line


def test_connecting_to_a_cluster_of_the_same_environment_warns_nothing(client, recwarn):
    with cluster.connect(client.scheduler.address):
        pass
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_worker_sites(client):
    """worker_sites() reads each worker's site-* resource."""
    assert cluster.worker_sites(client) == {"A": 1, "B": 1}


def test_chunks_run_at_their_site(client):
    """Every chunk runs on a worker holding its site's resource, and reads its chosen replica."""
    placed = place(chunks_at(10, (A1, B1)), cluster.worker_sites(client))
    outcome = cluster.run(client, placed, where_task)
    assert outcome.retried == 0 and outcome.moved == 0 and outcome.failed == []
    by_chunk = {chunk: (address, rse) for address, rse, chunk in outcome.result}
    assert len(by_chunk) == 10
    for p in placed:
        address, rse = by_chunk[str(p.chunk)]
        assert site_of(client, address) == {p.site} and rse == p.sources[0].rse


def test_a_failed_read_moves_the_chunk_to_its_next_replica(client):
    """A chunk whose first replica cannot be read is retried on the next one (at that site); all results arrive."""
    bad_a = Source("BAD-A", "A", "root://bad-a//f")
    good = chunks_at(4, (A1, B1), did="s:good")
    failing = chunks_at(3, (bad_a, B1), did="s:failing")
    placed = [Placed(c, s, "A") for c, s in failing] + place(good, {"A", "B"})
    outcome = cluster.run(client, placed, where_task)
    assert outcome.retried == 3 and outcome.moved == 0 and outcome.failed == []
    assert sorted(chunk for _, _, chunk in outcome.result) == sorted(str(p.chunk) for p in placed)
    for address, rse, chunk in outcome.result:
        if chunk.startswith("s:failing"):
            assert rse == "RSE-B" and site_of(client, address) == {"B"}


def test_a_chunk_without_a_readable_replica_ends_in_failed(client):
    """A chunk whose every replica fails is reported in outcome.failed (with the last reason); others complete."""
    only_bad = Placed(
        Chunk("s:lost", 0, 10), (Source("BAD-A", "A", "root://bad-a//f"), Source("BAD-B", "B", "root://bad-b//f")), "A"
    )
    fine = place(chunks_at(3, (A1, B1)), {"A", "B"})
    outcome = cluster.run(client, [only_bad, *fine], where_task)
    assert len(outcome.failed) == 1
    item, reason = outcome.failed[0]
    assert item.chunk == only_bad.chunk and "root://bad-b//f: unreachable" in reason
    assert outcome.retried == 1  # BAD-A -> BAD-B, then nothing left
    assert sorted(chunk for _, _, chunk in outcome.result) == sorted(str(p.chunk) for p in fine)


KILLED_ONCE: set[str] = set()  # chunks whose first run "lost its worker" (in-process workers share this)


def killed_once_task(placed: Placed) -> tuple[str, str, str]:
    """As where_task, but the first run of an even chunk ends as Dask ends a task whose worker died too often."""
    from distributed.scheduler import KilledWorker

    if placed.chunk.start % 20 == 0 and str(placed.chunk) not in KILLED_ONCE:
        KILLED_ONCE.add(str(placed.chunk))
        raise KilledWorker(str(placed.chunk), SimpleNamespace(address="tcp://gone:1"), 3)
    return where_task(placed)


def test_a_chunk_lost_with_its_worker_runs_again(client):
    """Dask giving up on a chunk because its worker died (KilledWorker) is not the chunk's fault: it runs again,
    and every chunk's result arrives exactly once."""
    KILLED_ONCE.clear()
    placed = place(chunks_at(6, (A1, B1)), {"A", "B"})
    outcome = cluster.run(client, placed, killed_once_task)
    assert outcome.failed == [] and outcome.moved == 3 and outcome.retried == 3
    assert sorted(chunk for _, _, chunk in outcome.result) == sorted(str(p.chunk) for p in placed)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (function_failed_task, "s:f[0:10]: ZeroDivisionError: boom"),
        (key_error_task, "s:f: tree 'Events' has no branch Nope"),
        (plain_error_task, "s:f[0:10]: ZeroDivisionError: division by zero"),
    ],
)
def test_task_errors_become_processing_errors(client, monkeypatch, task, expected):
    """A task raising FunctionFailed, KeyError or anything else (not ReadFailed) fails the run with one clear line;
    the user's function failing is a UserCodeError that carries their frames, also as the exception's note."""
    monkeypatch.delenv("DATALAKE_DEBUG", raising=False)
    placed = place(chunks_at(1, (A1, B1)), {"A", "B"})
    with pytest.raises(cluster.ProcessingError) as err:
        cluster.run(client, placed, task)
    assert str(err.value) == expected
    if task is function_failed_task:
        assert isinstance(err.value, UserCodeError) and err.value.frames == (Frame("ana.py", 3, "fn", "1 / 0"),)
        note = 'Traceback of your function (most recent call last):\n  File "ana.py", line 3, in fn\n    1 / 0'
        assert err.value.__notes__ == [note]
    else:
        assert not isinstance(err.value, UserCodeError)


def test_a_failing_merge_is_a_processing_error_naming_the_merge(client):
    """Partial results that do not add up fail the run as 'merging results: ...'."""
    placed = place(chunks_at(2, (A1, B1)), {"A", "B"})
    with pytest.raises(cluster.ProcessingError, match=r"^merging results: results do not add up"):
        cluster.run(client, placed, partial_task, reduce=merge_partials)


class RecordingProgress(cluster.Progress):
    def __init__(self) -> None:
        self.started, self.chunks, self.events, self.stopped = None, 0, 0, False

    def start(self, chunks: int, events: int) -> None:
        self.started = (chunks, events)

    def advance(self, chunks: int, events: int) -> None:
        self.chunks += chunks
        self.events += events

    def stop(self) -> None:
        self.stopped = True


def test_tree_reduction_sums_every_chunk_once(client):
    """reduce=merge over 20 chunks of different sizes gives the exact totals, and progress counts every chunk."""
    pieces = [(Chunk("s:f", i * 100, i * 100 + 1 + i), (A1, B1)) for i in range(20)]
    placed = place(pieces, {"A", "B"})
    progress = RecordingProgress()
    outcome = cluster.run(client, placed, count_task, reduce=merge, progress=progress)
    total = sum(1 + i for i in range(20))
    assert outcome.result == {"events": total, "chunks": 20}
    assert progress.started == (20, total) and (progress.chunks, progress.events) == (20, total) and progress.stopped


def slow_task(placed: Placed) -> int:
    time.sleep(0.6)
    return placed.chunk.entries


def test_a_chunk_slower_than_the_poll_interval_completes(client, monkeypatch):
    """A chunk that takes longer than POLL seconds still completes (the poll only looks for stranded chunks)."""
    monkeypatch.setattr(cluster, "POLL", 0.2)
    outcome = cluster.run(client, place(chunks_at(1, (A1, B1)), {"A", "B"}), slow_task)
    assert outcome.result == [10]


def test_chunks_at_a_site_without_workers_are_moved(client, monkeypatch):
    """Chunks waiting for a site with no worker move: to a replica at a worker site, or to run anywhere."""
    monkeypatch.setattr(cluster, "POLL", 0.2)
    to_b = Placed(Chunk("s:c", 0, 10), (C1, B1), "C")
    anywhere = Placed(Chunk("s:c", 10, 20), (C1,), "C")
    fine = place(chunks_at(2, (A1, B1)), {"A", "B"})
    outcome = cluster.run(client, [to_b, anywhere, *fine], where_task)
    assert outcome.moved == 2 and outcome.retried == 2 and outcome.failed == []
    got = {chunk: (address, rse) for address, rse, chunk in outcome.result}
    assert len(got) == 4
    assert got["s:c[0:10]"][1] == "RSE-B" and site_of(client, got["s:c[0:10]"][0]) == {"B"}
    assert got["s:c[10:20]"][1] == "RSE-C"


# -- process.run_chunk end to end on a NanoAOD-like file -----------------------------------------------------------

ENTRIES = 30_000
SPECTRUM = cloudpickle.dumps(dimuon.mass_spectrum)  # run_chunk takes the function cloudpickled, as process() sends it


@pytest.fixture(scope="module")
def nano(tmp_path_factory) -> tuple[Path, list[int]]:
    """A 30k-event NanoAOD-like file in 10k-event clusters, and its cluster starts."""
    path = nanoaod.write(tmp_path_factory.mktemp("nano") / "nano.root", ENTRIES, seed=7, basket=10_000)
    with uproot.open(path) as f:
        offsets = [int(o) for o in f["Events"].common_entry_offsets(filter_name=dimuon.BRANCHES)]
    return path, offsets


def whole_file_spectrum(path: Path) -> hist.Hist:
    with uproot.open(path) as f:
        return dimuon.mass_spectrum(f["Events"].arrays(dimuon.BRANCHES))


def test_run_chunk_and_merge_equal_the_whole_file(nano):
    """Chunks cut at clusters, run one by one and merged, give exactly the whole-file dimuon spectrum."""
    path, offsets = nano
    assert offsets == [0, 10_000, 20_000, 30_000]
    chunks = split("collider:nano.root", ENTRIES, 12_000, offsets)
    assert len(chunks) == 3 and all(c.start in offsets and c.stop in offsets for c in chunks)
    source = Source("LOCAL", "A", str(path))
    partials = [run_chunk(Placed(c, (source,), "A"), SPECTRUM, "Events", dimuon.BRANCHES, 30) for c in chunks]
    merged = partials[0]
    for p in partials[1:]:
        merged = merge_partials(merged, p)
    expected = whole_file_spectrum(path)
    assert np.array_equal(merged.result.values(), expected.values()) and merged.result.sum() > 1000
    assert [r.chunk for r in merged.records] == [str(c) for c in chunks]
    assert sum(r.events for r in merged.records) == ENTRIES
    assert all(r.bytes > 0 and r.requests > 0 and r.rse == "LOCAL" and r.worker == "local" for r in merged.records)
    assert 88 <= results.peak(merged.result) <= 94


def test_run_chunk_errors(nano, tmp_path):
    """A failing function is FunctionFailed naming the chunk; a missing file ReadFailed; a missing branch KeyError."""
    path, _ = nano
    chunk = Chunk("collider:nano.root", 0, 100)

    def broken(events):
        return 1 / 0

    here, gone = Source("LOCAL", "A", str(path)), Source("GONE", "A", str(tmp_path / "gone.root"))
    with pytest.raises(cluster.FunctionFailed) as err:
        run_chunk(Placed(chunk, (here,), "A"), cloudpickle.dumps(broken), "Events", ["nMuon"], 30)
    assert err.value.where == str(chunk) and err.value.message == "ZeroDivisionError: division by zero"
    assert [f.function for f in err.value.frames] == ["test_run_chunk_errors.<locals>.broken"]  # no datalake frame
    with pytest.raises(ReadFailed):
        run_chunk(Placed(chunk, (gone,), "A"), cloudpickle.dumps(len), "Events", ["nMuon"], 30)
    with pytest.raises(KeyError, match="no branch Nope"):
        run_chunk(Placed(chunk, (here,), "A"), cloudpickle.dumps(len), "Events", ["Nope"], 30)
    with pytest.raises(cluster.FunctionFailed, match="results do not add up"):
        merge_partials(Partial(1, []), Partial("x", []))


def test_dimuon_over_the_cluster_equals_the_whole_file(client, nano):
    """The real pipeline on the cluster (run_chunk + merge_partials, tree reduction) gives the whole-file spectrum."""
    path, offsets = nano
    pieces = [
        (c, (Source("LOCAL-A", "A", str(path)), Source("LOCAL-B", "B", str(path))))
        for c in split("collider:nano.root", ENTRIES, 5_000, offsets)
    ]
    placed = place(pieces, cluster.worker_sites(client))
    outcome = cluster.run(client, placed, run_chunk, (SPECTRUM, "Events", dimuon.BRANCHES, 30), reduce=merge_partials)
    partial = outcome.result
    assert np.array_equal(partial.result.values(), whole_file_spectrum(path).values())
    assert sorted(r.chunk for r in partial.records) == sorted(str(p.chunk) for p in placed)
    assert sum(r.events for r in partial.records) == ENTRIES
    for r in partial.records:
        assert site_of(client, r.worker) == {r.data_site} and r.key.startswith("chunk-")


# -- planning: files inspected on the workers, each file's chunks run as soon as it is known ------------------


class GrowingProgress(RecordingProgress):
    def __init__(self) -> None:
        super().__init__()
        self.grown = [0, 0]

    def grow(self, chunks: int, events: int) -> None:
        self.grown = [self.grown[0] + chunks, self.grown[1] + events]


def test_files_inspected_on_the_workers_feed_the_run(client, nano):
    """Three files inspected at their replica's site: their chunks run (beside the data) as each inspection
    arrives, the plan grows the progress by every chunk, and the merged result is three whole-file spectra."""
    path, offsets = nano
    files = [DID("collider", f"nano{i}.root") for i in range(3)]
    sources = {str(f): (Source("LOCAL-A", "A", str(path)), Source("LOCAL-B", "B", str(path))) for f in files}
    planner = planning.Planner("Events", dimuon.BRANCHES, 5_000, cluster.site_workers(client))
    progress = GrowingProgress()
    feed = planner.feed(client, files, sources, 30, None)
    outcome = cluster.run(
        client,
        [],
        run_chunk,
        (SPECTRUM, "Events", dimuon.BRANCHES, 30),
        reduce=merge_partials,
        progress=progress,
        feed=feed,
    )
    assert np.array_equal(outcome.result.result.values(), 3 * whole_file_spectrum(path).values())
    assert [f.inspection.offsets for f in planner.files] == [offsets] * 3
    assert progress.started == (0, 0) and progress.grown == [len(planner.placed), 3 * ENTRIES]
    assert (progress.chunks, progress.events) == (len(planner.placed), 3 * ENTRIES)
    assert {p.site for p in planner.placed} == {"A", "B"}  # the files' chunks spread over both sites
    assert all(site_of(client, r.worker) == {r.data_site} for r in outcome.result.records)


def test_planning_errors_are_one_line(client, nano, tmp_path):
    """A file no replica serves, a missing tree, a missing branch: each ends the run with one clear line."""
    path, _ = nano
    gone = (Source("GONE-A", "A", str(tmp_path / "gone.root")),)
    here = (Source("LOCAL-A", "A", str(path)),)
    cases = [(gone, "Events", dimuon.BRANCHES, "cannot read"), (here, "Nope", ["nMuon"], f"{path}: no tree 'Nope'")]
    cases.append((here, "Events", ["nMuon", "Nope"], "tree 'Events' has no branch Nope"))
    for sources, tree, branches, message in cases:
        planner = planning.Planner(tree, branches, 5_000, cluster.site_workers(client))
        did = DID("collider", "f.root")
        feed = planner.feed(client, [did], {str(did): sources}, 30, None)
        with pytest.raises(ProcessingError, match=f"^{re.escape(message)}"):
            cluster.run(client, [], run_chunk, (SPECTRUM, tree, branches, 30), reduce=merge_partials, feed=feed)
