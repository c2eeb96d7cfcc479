"""Trial ids never change: `--resume` of a folder written by an earlier version must find every
finished trial under the same id (else it would re-run and duplicate them). The golden file was
written by `tests/make_golden_ids.py` before the code was reorganised; regenerate it only when
an id change is intended and announced."""

from __future__ import annotations

import json

import pytest

from make_golden_ids import CASES, OUT, case_key, plan_ids

GOLDEN = json.loads(OUT.read_text())


def test_every_case_has_golden_ids():
    assert sorted(GOLDEN) == sorted(case_key(s, o) for s, o in CASES)


@pytest.mark.parametrize("study,overrides", CASES, ids=[case_key(s, o) for s, o in CASES])
def test_plan_ids_are_unchanged(study, overrides):
    ids = plan_ids(study, overrides)
    assert len(ids) == len(set(ids)), "two planned trials share an id"
    assert ids == GOLDEN[case_key(study, overrides)]


def test_the_default_studys_second_seed_adds_trials_and_keeps_the_first_seeds_ids():
    one_seed, two_seeds = plan_ids("default", ["repeats=1"]), plan_ids("default", [])
    assert len(two_seeds) == 2 * len(one_seed) and set(one_seed) <= set(two_seeds)
