"""What `ledex fix` prints: readable text with progress bars on stderr, or one JSON document."""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap

from tqdm import tqdm

from ledex.engine.failures import Discovery, Failure
from ledex.engine.fixer import FixResult
from ledex.engine.models import ModelIdentity


FOUND_BY = {"traceback": "deepest workspace frame of the traceback",
            "called by the test": "the function the test calls"}


def failure_dict(result: FixResult) -> dict:
    failure = result.failure
    suspect = failure.suspect
    return {
        "test": failure.test, "file": failure.file, "line": failure.line, "message": failure.message,
        "suspect": suspect and {"path": suspect.path, "function": suspect.qualname,
                                "line": suspect.start_line, "found_by": suspect.reason},
        "candidates": [c.to_dict() for c in result.ranked],
        "unusable": [{"round": c.round, "reason": c.reason} for c in result.candidates if c.patch is None],
        "timings": result.timings,
    }


class Reporter:
    def __init__(self, as_json: bool = False, out=sys.stdout, err=sys.stderr):
        self.as_json, self.out, self.err = as_json, out, err
        self._notes: list[str] = []

    @contextlib.contextmanager
    def status(self, text: str):
        print(f"ledex: {text}…", file=self.err, flush=True)
        yield

    @contextlib.contextmanager
    def progress(self, failure: Failure):
        bar = tqdm(total=1, desc=failure.test[-48:], unit="answer", file=self.err, leave=False,
                   disable=None)  # None: no bar when stderr is not a terminal (CI logs stay clean)

        def update(stage: str, done: int, total: int) -> None:
            bar.total = total
            bar.set_postfix_str(stage, refresh=False)
            bar.n = done
            bar.refresh()

        try:
            yield update
        finally:
            bar.close()

    def note(self, text: str) -> None:
        self._notes.append(text)
        if not self.as_json:
            print(f"note: {text}", file=self.err)

    def notes(self, notes: list[str]) -> None:
        for text in notes:
            if not self.as_json:
                print(f"note: {text}", file=self.err)

    def done_without_failures(self, discovery: Discovery) -> None:
        count = len(discovery.verdict.outcomes) if discovery.verdict else 0
        if self.as_json:
            print(json.dumps({"model": None, "failures": [], "tests": count, "notes": discovery.notes}), file=self.out)
        else:
            print(f"ledex: no failing tests ({count} ran)", file=self.out)

    def result(self, result: FixResult, applied: str | None) -> None:
        if self.as_json:
            return
        failure, out = result.failure, self.out
        where = f" ({failure.file}:{failure.line})" if failure.file and failure.line else ""
        print(f"\nFAILED {failure.test}{where}\n  {failure.message}", file=out)
        if failure.suspect is None:
            print("  no function to fix was found in the workspace", file=out)
            return
        found = FOUND_BY.get(failure.suspect.reason, failure.suspect.reason)
        print(f"  suspect: {failure.suspect.path}::{failure.suspect.qualname} ({found})", file=out)
        for number, candidate in enumerate(result.ranked, 1):
            mark = "verified" if candidate.verified else f"not verified: {candidate.reason}"
            print(f"\n  candidate {number} (round {candidate.round}) [{mark}]", file=out)
            if candidate.explanation:
                print(textwrap.indent(textwrap.fill(candidate.explanation, 92), "    "), file=out)
            print(textwrap.indent(candidate.diff.rstrip(), "    "), file=out)
        unusable = [c for c in result.candidates if c.patch is None]
        if unusable:
            reasons = sorted({c.reason for c in unusable})
            print(f"\n  {len(unusable)} answer(s) unusable: {'; '.join(reasons)}", file=out)
        if applied:
            print(f"\n  applied the best verified fix to {applied}", file=out)

    def finish(self, identity: ModelIdentity, results: list[FixResult], notes: list[str]) -> None:
        if self.as_json:
            document = {"model": identity.to_dict(), "failures": [failure_dict(r) for r in results],
                        "notes": notes + self._notes}
            print(json.dumps(document, indent=2), file=self.out)
            return
        fixed = sum(1 for r in results if r.best)
        print(f"\nledex: {fixed} of {len(results)} failure(s) have a verified fix (model {identity.id})", file=self.out)
