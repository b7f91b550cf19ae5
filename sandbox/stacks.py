"""Where a test (or a collection) that ran past its time is stuck, from stack samples.

Copied into every sandbox run as ``ledex_sbx_stacks`` (beside the runner plugin, on sys.path);
the plugin's alarm (sandbox/plugin.py) takes ``_SAMPLES`` stack samples ``_SAMPLE_S`` apart, then
counts for a moment which generators the stuck code keeps resuming (``Resumes``), and names what
it found in the timeout's message as ``; stuck in func (path:line)`` parts, most telling first
(engine/localize.py ranks the first that is not test code first):

1. a workspace generator resumed again and again (X12 F3: marshmallow's endless
   ``OrderedSet.__iter__``, drained by ``Schema._init_fields``, was never on a sampled stack:
   the consumer's loop body is where the time goes);
2. the deepest workspace frame alive in every sample (the same frame object: it never returned;
   a loop calling helpers is stopped in a random helper, the loop's owner is in every sample);
3. a generator seen in two samples or more but not all (suspended between them: X11 F3's test,
   a list comprehension draining a generator that never ends).

Standard library only.
"""
from __future__ import annotations

import inspect
import os
import sys

SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def stack(frame) -> list:  # noqa: ANN001
    """The frames from the outermost to `frame`."""
    out = []
    while frame is not None:
        out.append(frame)
        frame = frame.f_back
    return out[::-1]


class Resumes:
    """Counts generator resumptions (a profile "call" event) while started: id(frame) -> [frame, n]."""

    def __init__(self) -> None:
        self.counts: dict[int, list] = {}
        self.running = False

    def start(self) -> None:
        sys.setprofile(self._event)
        self.running = True

    def stop(self) -> None:
        """Remove the profile function, if this started it (a test that ends while it is sampled
        must not leave every later test profiled)."""
        if self.running:
            sys.setprofile(None)
            self.running = False

    def _event(self, frame, event, arg) -> None:  # noqa: ANN001 - a sys.setprofile function
        if event == "call" and frame.f_code.co_flags & SUSPENDABLE:
            self.counts.setdefault(id(frame), [frame, 0])[1] += 1


def stuck_text(samples: list[list], resumes: Resumes | None, root: str) -> str:
    """'; stuck in func (path:line)' for each frame under the folder `root` found stuck (see the
    module docstring for the order); "" when there is none."""
    if len(samples) < 2:
        return ""
    root = os.path.abspath(root) + os.sep
    def own(f) -> bool:  # noqa: ANN001
        return os.path.abspath(f.f_code.co_filename).startswith(root)
    frames = {id(f): f for sample in samples for f in sample if own(f)}
    seen = {key: sum(any(f is frame for f in sample) for sample in samples) for key, frame in frames.items()}
    alive = [f for f in samples[-1] if seen.get(id(f)) == len(samples)][-1:]
    suspended = [f for key, f in frames.items() if 2 <= seen[key] < len(samples) and f.f_code.co_flags & SUSPENDABLE]
    drained = [f for f, n in (resumes.counts if resumes else {}).values() if n >= 2 and own(f)]
    return "".join(f"; stuck in {f.f_code.co_name} ({f.f_code.co_filename}:{f.f_lineno})"
                   for f in dict.fromkeys(drained + alive + suspended[::-1]))
