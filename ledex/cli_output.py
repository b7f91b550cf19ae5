"""What `ledex fix` prints: readable text with progress bars on stderr, or one JSON document."""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
from dataclasses import dataclass

from tqdm import tqdm

from ledex.engine.failures import Discovery, Failure
from ledex.engine.fixer import FixResult
from ledex.engine.models import ModelIdentity


FOUND_BY = {"traceback": "a workspace frame of the traceback",
            "called by the test": "the function the test calls",
            "doctest": "the function whose docstring holds the failing example",
            "coverage": "executed by the failing test"}


@dataclass
class Handled:
    """What became of one failure: its fix result, and what the run did about it."""

    result: FixResult
    applied: str | None = None  # the file the best verified fix was written to (--apply)
    fixed_by: str | None = None  # the test whose written fix made this one pass (re-run after --apply)
    error: str | None = None  # why no fix was looked for (e.g. the suspect does not fit the model's context)

    @property
    def fixed(self) -> bool:
        return self.result.best is not None or self.fixed_by is not None


def failure_dict(handled: Handled) -> dict:
    result = handled.result
    failure = result.failure
    suspect = failure.suspect
    return {
        "test": failure.test, "file": failure.file, "line": failure.line, "message": failure.message,
        "also": list(failure.also),  # failing tests with the same top suspect, fixed as one problem
        "reruns": list(failure.reruns),  # what one verification runs (siblings that failed or hung are left out)
        "suspect": suspect and {"path": suspect.path, "function": suspect.qualname,
                                "line": suspect.start_line, "found_by": suspect.reason},
        "candidates": [c.to_dict() for c in result.ranked],
        "unusable": [{"round": c.round, "reason": c.reason} for c in result.candidates if c.patch is None],
        "timings": result.timings,
        "applied": handled.applied, "fixed_by": handled.fixed_by, "error": handled.error,
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

    def result(self, handled: Handled) -> None:
        if self.as_json:
            return
        result, applied = handled.result, handled.applied
        failure, out = result.failure, self.out
        where = f" ({failure.file}:{failure.line})" if failure.file and failure.line else ""
        print(f"\nFAILED {failure.test}{where}\n  {failure.message}", file=out)
        if failure.also:
            print(f"  same suspect, one fix for: {', '.join(failure.also)}", file=out)
        if handled.fixed_by:
            print(f"  passes now: fixed by the fix written for {handled.fixed_by}", file=out)
            return
        if handled.error:
            print(f"  not attempted: {handled.error}", file=out)
            return
        if failure.suspect is None:
            print("  no function to fix was found in the workspace", file=out)
            return
        found = FOUND_BY.get(failure.suspect.reason, failure.suspect.reason)
        print(f"  suspect: {failure.suspect.path}::{failure.suspect.qualname} ({found})", file=out)
        for number, candidate in enumerate(result.ranked, 1):
            mark = "verified" if candidate.verified else f"not verified: {candidate.reason}"
            top = f"{failure.suspect.path}::{failure.suspect.qualname}"
            other = f", rewrites {candidate.suspect}" if candidate.suspect and candidate.suspect != top else ""
            print(f"\n  candidate {number} ({candidate.source_label}, round {candidate.round}{other}) [{mark}]", file=out)
            if candidate.explanation:
                print(textwrap.indent(textwrap.fill(candidate.explanation, 92), "    "), file=out)
            print(textwrap.indent(candidate.diff.rstrip(), "    "), file=out)
        unusable = [c for c in result.candidates if c.patch is None]
        if unusable:
            reasons = sorted({c.reason for c in unusable})
            print(f"\n  {len(unusable)} answer(s) unusable: {'; '.join(reasons)}", file=out)
        if applied:
            print(f"\n  applied the best verified fix to {applied}", file=out)

    def finish(self, identity: ModelIdentity, handled: list[Handled], notes: list[str]) -> None:
        if self.as_json:
            document = {"model": identity.to_dict(), "failures": [failure_dict(h) for h in handled],
                        "notes": notes + self._notes}
            print(json.dumps(document, indent=2), file=self.out)
            return
        size = [1 + len(h.result.failure.also) for h in handled]  # a group counts each of its failures
        fixed = sum(n for n, h in zip(size, handled) if h.fixed)
        print(f"\nledex: {fixed} of {sum(size)} failure(s) have a verified fix (model {identity.id})", file=self.out)
