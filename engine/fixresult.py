"""What fixing one failure produced: each candidate (its explanation, code, patch and how its
verification went) and the failure's result (every candidate, ranked by engine/ranking.py, the
model id, timings, search stats). Built by fixer.FixEngine; read by the CLI, the language server
and training's evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ledex.engine import ranking
from ledex.engine.failures import Failure
from ledex.engine.patching import Patch
from ledex.engine.search import SearchStats


@dataclass
class CandidateResult:
    """One candidate fix: the model's (or search's) explanation and code, its patch, and how
    verification went (verified, reason, pass_rate, feedback, seconds)."""
    explanation: str
    code: str
    round: int
    patch: Patch | None = None
    verified: bool = False
    reason: str = ""  # why it is not usable or not verified ("" when verified)
    pass_rate: float = 0.0
    feedback: str = ""  # what the tests said about it (input to the next round)
    generation_s: float = 0.0
    verification_s: float = 0.0
    raw: str = ""
    suspect: str = ""  # "path::qualname" of the function the candidate rewrites
    source: str = "model"  # "model" (written by the model) | "search" (found by search, engine/search.py)
    operator: str = ""  # search only: the edit operator (engine/operators.OPERATORS)
    edit_after: str = ""  # search only: the text the edit put in
    loglik: float | None = None  # the model's log-likelihood of the patched function (nats), when scored
    edit_size: int = 0  # changed tokens against the original function (ranking.edit_size)
    alternatives: int = 0  # search only: other verified search fixes of the same line(s) (ranking.mark_alternatives)
    # (passed, of) the problem's related failing tests (Failure.related) in its verification; (0, 0) without
    also_fixes: tuple[int, int] = (0, 0)
    related_passed: tuple[str, ...] = ()  # those of them that passed (the editor skips problems it repairs)
    # (passed, of) the problem's own failing tests (failure.test and .also) in its verification, and how
    # many tests that passed before it broke: what an unverified candidate is worth (the editor's titles)
    failing_passed: tuple[int, int] = (0, 0)
    broke: int = 0
    broke_run: bool = False  # no test could run with it (a collection or start-up error): not offered in the editor

    @property
    def complete(self) -> bool:
        """Verified, and every related failing test passed with it too (see Failure.related)."""
        return self.verified and self.also_fixes[0] == self.also_fixes[1]

    @property
    def diff(self) -> str:
        """Unified diff of the candidate's patch, "" without one."""
        return self.patch.diff if self.patch else ""

    def to_dict(self) -> dict:
        """The fields reports show (explanation, diff, verified, round, reason, pass_rate, code,
        suspect, source, overfit_risk: a verified search edit that may fit the tests rather than the
        bug, ranking.overfit_risk, for which the model is asked too; also_fixes: [passed, of] the
        related failing tests of other problems, Failure.related) as a dict."""
        return {"explanation": self.explanation, "diff": self.diff, "verified": self.verified, "round": self.round,
                "reason": self.reason, "pass_rate": self.pass_rate, "code": self.code, "suspect": self.suspect,
                "source": self.source, "overfit_risk": self.verified and ranking.overfit_risk(self),
                "also_fixes": list(self.also_fixes), "alternatives": self.alternatives}

    @property
    def source_label(self) -> str:
        """How the editor and the CLI name where the fix came from."""
        return SOURCE_LABELS.get(self.source, self.source)


SOURCE_LABELS = {"model": "written by the model", "search": "found by search"}


@dataclass
class FixResult:
    """The outcome of fixing one failure: every candidate, the model id, timings in seconds
    (generation, verification) and search stats."""
    failure: Failure
    candidates: list[CandidateResult] = field(default_factory=list)
    model: str = ""
    timings: dict[str, float] = field(default_factory=lambda: {"generation": 0.0, "verification": 0.0})
    search: SearchStats | None = None
    # why no candidate was tried: the failure did not fail when re-run alone with the unchanged code
    # (FixEngine.reproduces), so re-running it cannot tell a fix from any other edit; "" when it did
    not_reproduced: str = ""

    @property
    def ranked(self) -> list[CandidateResult]:
        """Usable candidates, best first (engine/ranking.py)."""
        return ranking.rank([c for c in self.candidates if c.patch is not None])

    @property
    def best(self) -> CandidateResult | None:
        """The best verified candidate by ranking, None if none is verified."""
        return next((c for c in self.ranked if c.verified), None)
