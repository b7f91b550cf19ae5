"""Memoised functions of the code under test, found and emptied between runs in one process.

Copied into every sandbox run as ``ledex_sbx_memo`` (beside the runner plugin, on sys.path) for
the code that runs several variants or tests in one process and must not let one answer for
another: the search's screen (engine/screen_driver.py) switches a function's code between
variants, and the coverage run (covplugin.py) attributes lines to each test. A
``functools.lru_cache`` / ``functools.cache`` over a function of the workspace keeps results
computed before: fresh-user run X7, wcwidth 0.2.13, whose ``@lru_cache wcwidth()`` calls the
buggy ``_bisearch``: every variant of ``_bisearch`` after the first failed its screen, and the
tests after the first that met a character never ran ``_bisearch`` under coverage, so it was no
suspect of theirs. Standard library only.
"""
from __future__ import annotations

import functools
import gc
import os

_KIND = type(functools.lru_cache()(len))  # the C wrapper type of lru_cache and cache


def workspace_caches(root: str) -> list:
    """The lru_cache/cache wrappers of functions defined under the folder `root`, found through
    gc: call once the code is imported (decorators run at import), not per test."""
    prefix = os.path.join(os.path.abspath(root), "")
    found = []
    for obj in gc.get_objects():
        code = getattr(getattr(obj, "__wrapped__", None), "__code__", None) if isinstance(obj, _KIND) else None
        if code is not None and os.path.abspath(code.co_filename).startswith(prefix):
            found.append(obj)
    return found


def clear(caches: list) -> None:
    """Empty each cache (one whose cache_clear fails is left as it is)."""
    for cache in caches:
        try:
            cache.cache_clear()
        except Exception:  # noqa: BLE001 - a wrapper replaced by the code under test
            pass
