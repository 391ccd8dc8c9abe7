"""The sharing-policy schema, loader and evaluation: pure, no servers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from datalake.errors import PolicyError
from datalake.policy import Tier, check, evaluate, load, parse
from datalake.policy.actions import Action, CurrentRule, CurrentState, plan_actions
from datalake.policy.metadata import parse_pairs, validate
from datalake.policy.model import Duration
from datalake.policy.release import stage_position

POLICIES = Path(__file__).resolve().parent.parent / "policies"
DATACITE = {
    "creators": ["CMS Collaboration"],
    "title": "DoubleMuon primary dataset",
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
EVERYWHERE = {
    "access=collaboration": {"XRD1": "collaboration", "XRD2": "collaboration"},
    "access=collaboration&tier=1": {"XRD2": "collaboration"},
    "access=public": {"XRD3": "public"},
}


def lhc():
    return load(POLICIES / "lhc-collaboration.yaml")


def test_every_example_policy_validates():
    policies, problems = check([POLICIES])
    assert problems == []
    assert set(policies) == {"lhc-collaboration", "fermi-observatory", "darkmatter-closed", "derived-results"}
    tiers = {p.name: (p.access.tier, p.release.mode) for p in policies.values()}
    assert tiers["fermi-observatory"] == (Tier.PUBLIC, "immediate")
    assert tiers["darkmatter-closed"] == (Tier.RESTRICTED, "never")


def problems_of(text: str) -> list[str]:
    policy, problems = parse(text, "p.yaml")
    assert policy is None
    return [str(p) for p in problems]


BASE = (POLICIES / "darkmatter-closed.yaml").read_text()


def test_unknown_field_and_wrong_type_report_file_line_and_field():
    text = BASE.replace(
        "  - id: raw-custodial\n    copies: 2", "  - id: raw-custodial\n    copies: two\n    colour: red"
    )
    found = problems_of(text)
    lines = text.splitlines()
    copies_line = next(i for i, line in enumerate(lines, 1) if "copies: two" in line)
    assert (
        f"p.yaml:{copies_line}: rules[0].copies: Input should be a valid integer, unable to parse string as an integer"
        in found
    )
    assert f"p.yaml:{copies_line + 1}: rules[0].colour: unknown field" in found


def test_embargo_date_that_is_not_a_date():
    text = BASE.replace("release:\n  mode: never", "release:\n  mode: embargo\n  until: next spring")
    (found,) = problems_of(text)
    assert found.startswith("p.yaml:") and "release.until: Input should be a valid date" in found


def test_every_problem_is_listed_not_just_the_first():
    text = BASE.replace("data_level: 4", "data_level: 9").replace("tier: restricted", "tier: secret")
    found = problems_of(text)
    assert any("data_level" in p for p in found) and any("access.tier" in p for p in found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("", "empty file"),
        ("- a\n- b\n", "a policy is a mapping"),
        ("name: x\nname: y\n", "duplicate key"),
    ],
)
def test_malformed_files(text, expected):
    assert any(expected in p for p in problems_of(text))


def test_cross_field_rules():
    no_key = BASE.replace("release:\n  mode: never", "release:\n  mode: after\n  key: unblinding")
    assert any("release key 'unblinding' must be declared" in p for p in problems_of(no_key))
    no_readers = BASE.replace("  accounts: [datamanager]\n", "")
    assert any("restricted tier names its accounts" in p for p in problems_of(no_readers))
    reserved = BASE.replace("    detector_config: str", "    detector_config: str\n    title: str")
    assert any("already defined by datalake" in p for p in problems_of(reserved))


def test_missing_file_and_duplicate_names(tmp_path):
    (tmp_path / "a.yaml").write_text(BASE)
    (tmp_path / "b.yaml").write_text(BASE)
    _, problems = check([tmp_path, tmp_path / "missing.yaml"])
    text = [str(p) for p in problems]
    assert any("also defined in" in p for p in text) and any("cannot read" in p for p in text)
    with pytest.raises(PolicyError, match="cannot read"):
        load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "parts"),
    [("5y", (5, 0, 0, 0)), ("1y6mo", (1, 6, 0, 0)), ("2w", (0, 0, 14, 0)), ("12h", (0, 0, 0, 12)), (30, (0, 0, 30, 0))],
)
def test_durations(text, parts):
    d = Duration.model_validate(text)
    assert (d.years, d.months, d.days, d.hours) == parts


@pytest.mark.parametrize("text", ["5 years", "y", "", "-3d", "3x"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        Duration.model_validate(text)


def test_metadata_is_validated_and_normalised():
    meta = validate(lhc(), LHC_META)
    assert meta["run_end"] == "2012-12-31" and meta["collision_energy_tev"] == 8.0 and meta["data_level"] == 3
    with pytest.raises(PolicyError) as err:
        validate(lhc(), {**LHC_META, "run_end": "soon", "colour": "red", "resource_type": "Thing"} | {"title": ""})
    text = str(err.value)
    assert "run_end" in text and "colour: not a key of this policy" in text and "title" in text
    with pytest.raises(PolicyError, match="resource_type"):
        validate(lhc(), {**LHC_META, "resource_type": "Thing"})
    with pytest.raises(PolicyError, match="data_level: 2 but policy"):
        validate(lhc(), {**LHC_META, "data_level": 2})
    missing = {k: v for k, v in LHC_META.items() if k != "creators"}
    with pytest.raises(PolicyError, match="creators"):
        validate(lhc(), missing)


def test_meta_flags():
    pairs = parse_pairs(["creators=Doe, J.; Roe, R.", "title=a=b"], lhc())
    assert pairs == {"creators": ["Doe, J.", "Roe, R."], "title": "a=b"}
    with pytest.raises(PolicyError, match="KEY=VALUE"):
        parse_pairs(["title"], lhc())


def test_lhc_staged_release_follows_the_run_end():
    policy, meta = lhc(), validate(lhc(), LHC_META)
    dids = [f"collider:ds{i}" for i in range(200)]
    early = [d for d in dids if stage_position(d) < 0.5]
    assert 60 < len(early) < 140  # about half, chosen stably by DID
    for did in dids:
        before = evaluate(policy, did, meta, datetime(2017, 12, 30))
        assert before.tier is Tier.COLLABORATION and before.opendata.state == "draft"
        assert {r.id for r in before.rules} == {"custodial", "analysis-cache"}
        mid = evaluate(policy, did, meta, datetime(2018, 1, 1))
        assert (mid.tier is Tier.PUBLIC) == (did in early)
        late = evaluate(policy, did, meta, datetime(2023, 1, 1))
        assert late.tier is Tier.PUBLIC and late.opendata.state == "public" and late.closed
        assert {r.id for r in late.rules} == {"custodial", "open-data"}
        assert late.opendata.doi == f"10.5072/{did.replace(':', '/')}"


def test_hold_overrides_the_clock():
    policy = lhc()
    data = policy.model_dump()
    data["release"]["hold"] = {"reason": "analyses active"}
    held = type(policy).model_validate(data)
    state = evaluate(held, "collider:x", validate(policy, LHC_META), datetime(2040, 1, 1))
    assert state.tier is Tier.COLLABORATION and "held: analyses active" in state.release.why


def test_paper_release_waits_for_the_paper():
    policy = load(POLICIES / "derived-results.yaml")
    meta = validate(policy, {**DATACITE, "experiment": "CMS", "analysis": "HIG-19-001"})
    assert evaluate(policy, "collider:r", meta, datetime(2030, 1, 1)).tier is Tier.COLLABORATION
    meta = validate(policy, {**meta, "paper_published": "2026-03-01", "doi": "10.17182/hepdata.1"})
    state = evaluate(policy, "collider:r", meta, datetime(2026, 3, 1))
    assert state.tier is Tier.PUBLIC and state.opendata.doi == "10.17182/hepdata.1"
    assert state.opendata.meta["licence"] == "CC-BY-4.0"


def test_closed_data_is_never_published_and_never_on_public_storage():
    policy = load(POLICIES / "darkmatter-closed.yaml")
    meta = validate(
        policy,
        {
            **DATACITE,
            "experiment": "XENONnT",
            "science_run": "SR0",
            "run_end": "2022-01-01",
            "detector_config": "tpc",
            "data_level": 4,
        },
    )
    state = evaluate(policy, "darkmatter:sr0", meta, datetime(2100, 1, 1))
    assert state.tier is Tier.RESTRICTED and state.opendata is None and state.readers == ("datamanager",)
    with pytest.raises(PolicyError, match="not allowed for a restricted dataset"):
        leaky = {"access=collaboration": {"XRD1": "collaboration", "XRD3": "public"}}
        plan_actions(state, CurrentState("darkmatter:sr0", True, {}), leaky)


def current_from(state, *, meta=None, opendata=None, doi=None, od_meta=None, is_open=True) -> CurrentState:
    rules = tuple(
        CurrentRule(
            f"r{i}",
            "datamanager",
            r.rse_expression,
            r.copies,
            r.grouping,
            r.activity,
            r.locked,
            datetime(2030, 1, 1) if r.lifetime else None,
            r.comment,
            "OK",
        )
        for i, r in enumerate(state.rules)
    )
    base = {"datalake_policy": state.policy, "datalake_tier": str(state.tier), "datalake_readers": list(state.readers)}
    return CurrentState(state.did, is_open, meta or base, rules, opendata, doi, od_meta)


def test_plan_from_nothing_then_nothing_left_to_do():
    policy, meta = lhc(), validate(lhc(), LHC_META)
    state = evaluate(policy, "collider:ds", meta, datetime(2016, 1, 1))
    actions = plan_actions(state, CurrentState("collider:ds", True, {}), EVERYWHERE)
    assert [a.kind for a in actions] == ["set-meta", "add-rule", "add-rule", "add-opendata", "update-opendata"]
    done = current_from(state, opendata="draft", doi=state.opendata.doi, od_meta=state.opendata.meta)
    assert plan_actions(state, done, EVERYWHERE) == []


def test_release_adds_public_replica_before_dropping_the_cache():
    policy, meta = lhc(), validate(lhc(), LHC_META)
    before = evaluate(policy, "collider:ds", meta, datetime(2016, 1, 1))
    after = evaluate(policy, "collider:ds", meta, datetime(2023, 1, 1))
    have = current_from(before, opendata="draft", doi=before.opendata.doi, od_meta=before.opendata.meta)
    kinds = [a.kind for a in plan_actions(after, have, EVERYWHERE)]
    assert kinds == ["set-meta", "close", "add-rule", "opendata-state", "remove-rule"]
    removed = plan_actions(after, have, EVERYWHERE)[-1]
    assert removed.args == {"rule_id": "r1", "unlock": False}


def test_withdrawal_after_publication_suspends_instead_of_draft():
    policy, meta = lhc(), validate(lhc(), LHC_META)
    public = evaluate(policy, "collider:ds", meta, datetime(2023, 1, 1))
    suspended_policy = type(policy).model_validate(policy.model_dump() | {"access": {"tier": "suspended"}})
    state = evaluate(suspended_policy, "collider:ds", meta, datetime(2023, 1, 1))
    have = current_from(public, opendata="public", doi=public.opendata.doi, od_meta=public.opendata.meta, is_open=False)
    actions = plan_actions(state, have, EVERYWHERE)
    assert ("opendata-state", {"state": "suspended"}) in [(a.kind, a.args) for a in actions]
    assert [a.args for a in actions if a.kind == "remove-rule"] == [{"rule_id": "r1", "unlock": True}]


def test_changed_rule_is_replaced_and_foreign_rules_are_left_alone():
    policy, meta = lhc(), validate(lhc(), LHC_META)
    state = evaluate(policy, "collider:ds", meta, datetime(2016, 1, 1))
    have = current_from(state, opendata="draft", doi=state.opendata.doi, od_meta=state.opendata.meta)
    foreign = CurrentRule("x", "analyst", "XRD1", 1, "NONE", "User Subscriptions", False, None, "mine", "OK")
    changed = have.rules[0].__class__(**{**have.rules[0].__dict__, "grouping": "ALL", "locked": False})
    have = CurrentState(
        have.did, True, have.meta, (changed, have.rules[1], foreign), "draft", have.opendata_doi, have.opendata_meta
    )
    actions = plan_actions(state, have, EVERYWHERE)
    assert [a.kind for a in actions] == ["remove-rule", "add-rule"]  # same expression and copies: remove first
    assert all(a.args.get("rule_id") != "x" for a in actions)


# -- property-based: the loader never crashes, whatever the file says ------------------------------------------

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12) | st.dates(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_policy_or_problems(text):
    policy, problems = parse(text, "fuzz.yaml")
    assert (policy is None) == bool(problems)
    assert all(str(p).startswith("fuzz.yaml:") for p in problems)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["name", "access", "release", "rules", "open_data", "metadata", "checksum", "data_level", "extra"]
        ),
        yaml_values,
        max_size=8,
    )
)
def test_any_mapping_gives_a_policy_or_located_problems(data):
    text = yaml.safe_dump(data)
    policy, problems = parse(text, "fuzz.yaml")
    assert policy is None and problems
    assert all(p.line >= 1 for p in problems)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(["copies", "rse_expression", "lifetime", "grouping", "locked", "when"]), value=yaml_values)
def test_mutating_one_rule_field_is_either_valid_or_located(key, value):
    data = yaml.safe_load(BASE)
    data["rules"][0][key] = value
    policy, problems = parse(yaml.safe_dump(data), "fuzz.yaml")
    if policy is None:
        assert any(p.field.startswith(f"rules[0].{key}") for p in problems), problems
    else:
        assert policy.rules[0].id == "raw-custodial"


def test_hold_on_public_data_withdraws_it():
    policy = load(POLICIES / "fermi-observatory.yaml")
    data = policy.model_dump()
    data["release"]["hold"] = {"reason": "calibration problem found"}
    held = type(policy).model_validate(data)
    observed = {"observation_start": "2026-11-12T00:00:00", "observation_end": "2026-11-19T00:00:00"}
    meta = validate(held, {**DATACITE, "experiment": "Fermi-LAT", "mission_week": 900, **observed})
    state = evaluate(held, "gammaray:w900", meta, datetime(2026, 12, 1))
    assert state.tier is Tier.SUSPENDED and state.opendata.state == "suspended"
    assert all(r.id != "public-mirror" for r in state.rules)


def test_staged_release_takes_the_earliest_stage_that_includes_the_dataset():
    text = BASE.replace(
        "release:\n  mode: never",
        "release:\n  mode: staged\n  key: run_end\n  stages:\n"
        "    - {fraction: 0.5, delay: 8y}\n    - {fraction: 1.0, delay: 2y}",
    )
    text = text.replace("tier: restricted", "tier: collaboration").replace("open_data:\n  publish: false\n", "")
    policy, problems = parse(text)
    assert problems == []
    meta = validate(
        policy,
        {
            **DATACITE,
            "experiment": "X",
            "science_run": "SR1",
            "run_end": "2020-01-01",
            "detector_config": "c",
            "data_level": 4,
        },
    )
    for i in range(20):
        assert evaluate(policy, f"darkmatter:d{i}", meta, datetime(2022, 1, 2)).tier is Tier.PUBLIC


def test_impossible_dates_and_bad_dois_are_problems_not_crashes():
    found = problems_of(BASE.replace("release:\n  mode: never", "release:\n  mode: embargo\n  until: 2027-02-30"))
    assert any("not valid YAML" in p or "until" in p for p in found)
    with pytest.raises(PolicyError, match="is not a DOI"):
        validate(lhc(), {**LHC_META, "doi": "doi:10.1/x"})


def test_a_rule_left_twice_by_a_killed_run_is_reduced_to_one():
    policy, meta = lhc(), validate(lhc(), LHC_META)
    state = evaluate(policy, "collider:ds", meta, datetime(2016, 1, 1))
    have = current_from(state, opendata="draft", doi=state.opendata.doi, od_meta=state.opendata.meta)
    twin = have.rules[0].__class__(**{**have.rules[0].__dict__, "id": "twin"})
    have = CurrentState(have.did, True, have.meta, (*have.rules, twin), "draft", have.opendata_doi, have.opendata_meta)
    actions = plan_actions(state, have, EVERYWHERE)
    assert [(a.kind, a.args["rule_id"]) for a in actions] == [("remove-rule", "twin")]


def test_more_copies_on_the_same_expression_are_added_before_the_old_rule_goes():
    policy, meta = lhc(), validate(lhc(), LHC_META)
    state = evaluate(policy, "collider:ds", meta, datetime(2016, 1, 1))
    have = current_from(state, opendata="draft", doi=state.opendata.doi, od_meta=state.opendata.meta)
    fewer = have.rules[0].__class__(**{**have.rules[0].__dict__, "copies": 1})
    have = CurrentState(
        have.did, True, have.meta, (fewer, have.rules[1]), "draft", have.opendata_doi, have.opendata_meta
    )
    assert [a.kind for a in plan_actions(state, have, EVERYWHERE)] == ["add-rule", "remove-rule"]


def test_rules_of_a_large_dataset_are_asynchronous():
    """From ``asynchronous_from`` files on, new rules ask Rucio to inject them later (the request returns at once);
    below it, and for rules already there, nothing changes."""
    policy, meta = lhc(), validate(lhc(), LHC_META)
    state = evaluate(policy, "collider:ds", meta, datetime(2016, 1, 1))

    def adds(files: int) -> list[Action]:
        current = CurrentState("collider:ds", True, {}, files=files)
        return [a for a in plan_actions(state, current, EVERYWHERE, asynchronous_from=1000) if a.kind == "add-rule"]

    assert len(adds(999)) == 2 and not any("asynchronous" in a.args for a in adds(999))
    assert all(a.args["asynchronous"] is True and a.summary.endswith(", asynchronous") for a in adds(1000))
    sync = plan_actions(state, CurrentState("collider:ds", True, {}, files=10_000), EVERYWHERE)
    assert not any("asynchronous" in a.args for a in sync)  # no threshold given: inside the request
