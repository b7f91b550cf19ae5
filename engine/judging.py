"""A verification's verdict read against the failure it was to fix: verified or not and why
(`judge`, the sandbox's word that engine/ranking.py ranks first), what an unverified candidate
is still worth (`partial_credit`: the editor's quick-fix rule), which related failing tests it
repairs too (`related_passing`), and the feedback the next refinement round is given.

Used by engine/fixer.py (every candidate) and training/plant.py (collected answers).
"""

from __future__ import annotations

from ledex.engine import rerun
from ledex.engine.failures import Failure
from ledex.engine.outcomes import outcome_message
from ledex.engine.format import clip_middle
from ledex.sandbox import Verdict


def judge(verdict: Verdict, failure: Failure) -> tuple[bool, str]:
    """Verified only if the failing test (and every test of its group, `failure.also`) passes
    and nothing that passed before now fails."""
    if verdict.error:
        return False, verdict.error
    if verdict.killed_reason:
        return False, f"the tests were stopped ({verdict.killed_reason})"
    outcomes = {o.nodeid: o for o in verdict.outcomes}
    fewer = rerun.fewer_cases(failure.reruns, outcomes)
    if fewer:
        return False, f"the fix changes the cases of {fewer}"
    for test in (failure.test, *failure.also):
        cases = rerun.cases_of(test, outcomes)  # a case whose id changed: every case of its function
        if not cases:
            return False, f"{test} did not run"
        target = next((o for o in cases if o.outcome != "passed"), None)
        if target is not None:
            return False, f"{target.nodeid} still {target.outcome}: {outcome_message(target)}"
    for nodeid in failure.passing_siblings:
        cases = rerun.cases_of(nodeid, outcomes)
        broken = next((o.nodeid for o in cases if o.outcome != "passed"), None if cases else nodeid)
        if broken:
            return False, f"the fix breaks {broken}"
    return True, ""


def _passes(test: str, outcomes: dict) -> bool:
    """The test (or, its id changed, every case of its function) ran and passed."""
    cases = rerun.cases_of(test, outcomes)
    return bool(cases) and all(o.outcome == "passed" for o in cases)


def partial_credit(verdict: Verdict, failure: Failure) -> tuple[tuple[int, int], int]:
    """((passed, of) the failure's own failing tests, passing tests it broke) in the verdict."""
    outcomes = {o.nodeid: o for o in verdict.outcomes}
    group = (failure.test, *failure.also)
    broke = sum(1 for test in failure.passing_siblings if rerun.cases_of(test, outcomes) and not _passes(test, outcomes))
    return (sum(_passes(test, outcomes) for test in group), len(group)), broke


def related_passing(verdict: Verdict, failure: Failure) -> tuple[str, ...]:
    """The failure's related failing tests (Failure.related) that passed in the verdict: a test
    passes when it (or, its id changed, every case of its function) ran and passed."""
    outcomes = {o.nodeid: o for o in verdict.outcomes}
    return tuple(test for test in failure.related if _passes(test, outcomes))


def feedback_for(verdict: Verdict, failure: Failure, reason: str) -> str:
    group = (failure.test, *failure.also)
    outcome = next((o for o in verdict.outcomes if o.nodeid in group and o.outcome != "passed"),
                   next((o for o in verdict.outcomes if o.nodeid == failure.test), None))
    details = outcome.details if outcome is not None and outcome.details else reason
    return clip_middle(f"Test {outcome.nodeid if outcome else failure.test} failed.\n{details.strip()}")
