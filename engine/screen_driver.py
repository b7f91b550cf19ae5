"""Mutant screening inside the sandbox: many variants of one function checked in ONE pytest
session, by switching the function's code between runs of the failing tests (the way
mutation-testing tools such as mutmut and Cosmic Ray avoid a process per mutant). Each run (the
baseline, each variant) is a fork of the process as the tests' collection left it, so state one
run leaves behind (module globals, class attributes, a registry) cannot fail the next (fresh-user
run X9 F4); a fork costs about as much again as the run (boltons, 150 variants: 4.1 s in one
process, 9.1 s forked, same run), still far below a sandboxed process per variant.

Not imported by ledex: engine/screening.py sends this file's text as ``python -c`` through the
sandbox's ``command`` template (sandbox.verify_many), so it runs in the sandbox with its
isolation and limits. Standard library, pytest and the sandbox's ``ledex_sbx_memo``.

argv[1]: base64 of zlib'd JSON {"path": relpath of the module, "qualname": "f" | "Cls.m",
"variants": [function source, ...], "tests": [node id, ...], "timeout": seconds per variant,
"options": [pytest option, ...]}.
Output, one line per result on fd 1 (written past pytest's capture):

    LEDEX-SCREEN baseline pass|fail [crash]  the tests on the unchanged code (crash: the first
                                             failure's "Type: message" line, for the caller to
                                             check the failure reproduced as it did in its run)
    LEDEX-SCREEN <index> pass|fail|error     variant <index> (error: it could not be installed)
    LEDEX-SCREEN-ERROR <reason>              nothing further can be screened
    LEDEX-SCREEN done

A screen is advice, never a verdict: a variant that passes here is verified again in its own
sandboxed run (the failing tests and the rest of their file), so nothing the code under test
prints here can make a fix count as verified. A variant that hangs past its timeout fails, even
where the code swallows the timeout (doctest runs each example under a bare ``except:``): the
alarm repeats every REPEAT_S until the test ends; one that hangs in C code ends its fork
(faulthandler) and fails. Where the code module is imported only when a test runs, or fork is
refused, the runs share this process and a hang in C code ends it: the caller screens the rest again.

The project's own pytest options (ini ``addopts``: ``--doctest-modules``, ``--doctest-glob``) and
those of its test command (spec "options": ``-o pythonpath=src``) apply, as in the sandbox's
verification; options pytest cannot take in this process (a plugin missing here, ``-n`` of
pytest-xdist) make the screen retry without them.
"""

import __future__
import ast
import base64
import faulthandler
import gc
import json
import os
import signal
import sys
import textwrap
import zlib

import ledex_sbx_memo  # sandbox/memo.py, beside the sandbox's runner plugin
import pytest

PREFIX = "LEDEX-SCREEN"
REPEAT_S = 0.05  # after a test's timeout, the alarm fires again this often until the test ends


class VariantTimeout(BaseException):
    """The variant ran past its time (BaseException: a bare ``except Exception`` cannot swallow it)."""


class Clock:
    """The per-test alarm: armed for a test's call, repeating once it fired, disarmed for teardown."""
    timed_out = False

    @classmethod
    def arm(cls, timeout):
        cls.timed_out = False
        signal.setitimer(signal.ITIMER_REAL, timeout, REPEAT_S)

    @staticmethod
    def disarm():
        signal.setitimer(signal.ITIMER_REAL, 0)


def emit(text):
    """Write "<PREFIX> text" as one line to fd 1, bypassing pytest's capture; it starts a new
    line: pytest's progress characters for subtests ("u") have no newline after them."""
    data = f"\n{PREFIX} {text}\n".encode()
    while data:
        data = data[os.write(1, data):]


def _on_alarm(signum, frame):
    Clock.timed_out = True
    raise VariantTimeout("variant timed out")


def _module_of(path):
    wanted = os.path.realpath(path)
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and os.path.realpath(file) == wanted:
            return module
    return None


def _unwrap(obj, name=None):
    """The function whose code a variant replaces: through staticmethod/classmethod, property and
    __wrapped__ chains (lru_cache, functools.wraps) down to the one whose code is named `name`
    (a functools.wraps wrapper has code of its own, named "wrapper": swapping that changed nothing
    the test reached, and every variant of validators' @validator functions failed its screen:
    fresh-user run X9)."""
    obj = getattr(obj, "__func__", None) or getattr(obj, "fget", None) or obj
    while hasattr(obj, "__wrapped__") and (not hasattr(obj, "__code__")
                                           or (name is not None and obj.__code__.co_name != name)):
        obj = obj.__wrapped__
    return obj


def _resolve(module, qualname):
    """(the function object whose code is switched, the object to clear caches on)."""
    owner, parts = module, qualname.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    raw = owner.__dict__[parts[-1]] if isinstance(owner, type) else getattr(owner, parts[-1])
    return _unwrap(raw, parts[-1]), raw


def _compile(source, function, path):
    """The code object of the variant, compiled to fit `function` (a method that uses super()
    needs the __class__ cell its original has; a module with `from __future__ import annotations`
    keeps its annotations unevaluated: they may name imports made only for type checking)."""
    flags = function.__code__.co_flags & __future__.annotations.compiler_flag
    tree = ast.parse(textwrap.dedent(source))
    node = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    node.decorator_list = []
    namespace = dict(function.__globals__)
    if "__class__" in function.__code__.co_freevars:
        holder = ast.ClassDef("LedexScreen", [], [], [node], [])
        holder.type_params = []
        tree = ast.Module([holder], [])
        exec(compile(ast.fix_missing_locations(tree), path, "exec", flags=flags, dont_inherit=True), namespace)
        new = _unwrap(namespace["LedexScreen"].__dict__[node.name])
    else:
        exec(compile(ast.Module([node], []), path, "exec", flags=flags, dont_inherit=True), namespace)
        new = namespace[node.name]
    return new


def _install(function, new):
    function.__code__ = new.__code__
    function.__defaults__ = new.__defaults__
    function.__kwdefaults__ = new.__kwdefaults__


# Failed reports logged while a test runs: a failing subtest (unittest's subTest, pytest's
# `subtests`) is a report of its own, logged through pytest_runtest_logreport even with log=False,
# that runtestprotocol does not return (the test's own reports say passed).
LOGGED_FAILURES = []
CRASHES = []  # the crash line ("Type: message") of each failed report since the last clear


def _crash(report):
    """The first line of a failed report's crash message ('AssertionError: assert 1 == 2'), or ''."""
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    return (getattr(crash, "message", "") or "").strip().split("\n")[0][:300]


def _passes(items, timeout):
    """True when every item passes, run in order as pytest's own loop runs them: each item's
    `nextitem` is the next one, so session- and module-scoped fixtures live across the tests
    (semver's doctests read a session fixture its tests fill); the last tears everything down,
    and so does a stop at a failure: the next variant starts from fresh fixtures."""
    for item, nextitem in zip(items, [*items[1:], None]):
        try:
            passed = _run_one(item, nextitem, timeout)
        except VariantTimeout:  # the alarm landed after the test, before its disarming
            passed = False
        Clock.disarm()
        if not passed:
            return _teardown_all(item)
    return True


def _run_one(item, nextitem, timeout):
    """Whether `item` passed: its reports, its subtests' reports, and no timeout swallowed on the way."""
    from _pytest.runner import runtestprotocol

    Clock.arm(timeout)
    faulthandler.dump_traceback_later(timeout + 3.0, exit=True)
    LOGGED_FAILURES.clear()
    try:
        reports = runtestprotocol(item, log=False, nextitem=nextitem)
        CRASHES.extend(_crash(r) for r in reports if r.failed)
        return all(r.passed for r in reports) and not LOGGED_FAILURES and not Clock.timed_out
    finally:
        Clock.disarm()
        faulthandler.cancel_dump_traceback_later()


def _teardown_all(item):
    """Tear down every fixture still set up (what nextitem=None does after a test); False."""
    try:
        item.session._setupstate.teardown_exact(None)
    except Exception:  # noqa: BLE001 - a fixture's own teardown error: the variant failed anyway
        pass
    return False


class Screen:
    """Pytest plugin that screens the spec's variants against the failing tests in one process."""
    def __init__(self, spec):
        self.spec, self.ran = spec, False

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item):
        """Teardown runs unalarmed: a repeating alarm would cut every fixture finalizer short."""
        Clock.disarm()

    def pytest_runtest_logreport(self, report):
        """Keep the failed reports logged during a test (its failing subtests)."""
        if report.failed:
            LOGGED_FAILURES.append(report.nodeid)
            CRASHES.append(_crash(report))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        """Replace pytest's test loop: run the baseline, then each variant; results go out via emit.
        Each run is a forked copy of this process where the code module was imported at collection
        (isolated); otherwise all run here, one after another."""
        self.ran = True
        items = self._items(session)
        if items is None:
            return True
        signal.signal(signal.SIGALRM, _on_alarm)
        module = _module_of(self.spec["path"])
        if module is not None and hasattr(os, "fork"):
            self._isolated(module, items)
        else:
            self._in_process(items)
        return True

    def _items(self, session):
        """The collected items of the spec's tests, or None (the error emitted)."""
        # node ids, or a parametrized test's function (engine/rerun.py); "id[#2]" (the sandbox's name for
        # the second item pytest collected with one id) is screened with all the items of that id
        wanted = {test.split("[#")[0] for test in self.spec["tests"]}

        def asked_as(item):
            return item.nodeid if item.nodeid in wanted else item.nodeid.split("[")[0]

        items = [i for i in session.items if asked_as(i) in wanted]
        if {asked_as(i) for i in items} != wanted:
            emit("ERROR the failing tests were not collected")
            return None
        return items

    def _target(self, module):
        """(the function whose code is switched, its original code, the caches to clear), or None
        (the error emitted)."""
        try:
            function, raw = _resolve(module, self.spec["qualname"])
            original = (function.__code__, function.__defaults__, function.__kwdefaults__)
        except (AttributeError, KeyError, TypeError) as exc:
            emit(f"ERROR {self.spec['qualname']} not found: {exc!r}")
            return None
        # results one variant computed must not answer for the next: the function's own cache and those of
        # its memoised callers (fresh-user run X7, wcwidth's @lru_cache wcwidth() over the screened _bisearch)
        caches = ledex_sbx_memo.workspace_caches(os.getcwd())
        caches += [raw] if callable(getattr(raw, "cache_clear", None)) and raw not in caches else []
        return function, original, caches

    def _timeout(self):
        return float(self.spec.get("timeout") or 2.0)

    def _baseline(self, items):
        CRASHES.clear()
        passed = _passes(items, self._timeout() * 5)
        emit("baseline pass" if passed else f"baseline fail {next(filter(None, CRASHES), '')}")

    def _variant(self, index, target, items):
        function, original, caches = target
        emit(f"{index} {_one(function, original, caches, self.spec['variants'][index], items, self._timeout(), self.spec['path'])}")

    def _isolated(self, module, items):
        """The baseline and each variant in a fresh fork of this process, as collection left it: a run
        that fails after changing module state (a registry, shortuuid's set_alphabet) failed every
        later variant in one process, the right one too (fresh-user run X9 F4)."""
        target = self._target(module)
        if target is None:
            return
        limit = self._timeout() * 5 * len(items) + 10.0  # a copy stuck past its alarms and faulthandler
        gc.freeze()  # objects of this process stay out of the copies' collections: fewer pages copied
        _forked(lambda: self._baseline(items), "baseline fail", limit)
        for index in range(len(self.spec["variants"])):
            _forked(lambda: self._variant(index, target, items), f"{index} fail", limit)
        emit("done")

    def _in_process(self, items):
        """Everything in this process, one run after another (the code module is imported only by
        the tests' run, or this system cannot fork)."""
        self._baseline(items)
        module = _module_of(self.spec["path"])
        if module is None:
            emit(f"ERROR {self.spec['path']} was not imported by the tests")
            return
        target = self._target(module)
        if target is None:
            return
        for index in range(len(self.spec["variants"])):
            self._variant(index, target, items)
        emit("done")


def _one(function, original, caches, source, items, timeout, path):
    """"pass" | "fail" | "error" (the variant could not be installed) for one variant; the
    function's own code is back in place afterwards."""
    try:
        _install(function, _compile(source, function, path))
    except Exception:  # noqa: BLE001 - a variant that cannot be installed is not screened
        return "error"
    try:
        ledex_sbx_memo.clear(caches)
        return "pass" if _passes(items, timeout) else "fail"
    finally:
        function.__code__, function.__defaults__, function.__kwdefaults__ = original


def _forked(run, failed, limit):
    """`run()` (it emits its own result line) in a forked copy of this process, so nothing it
    changes reaches the next run; `failed` is emitted when the copy ends without a word (stopped
    by faulthandler in C code, or killed here after `limit` seconds). Here when fork is refused
    (the sandbox's process limit)."""
    try:
        pid = os.fork()
    except OSError:
        run()
        return
    if pid == 0:  # the copy: never back into pytest's loop
        code = 1
        try:
            run()
            code = 0
        finally:
            os._exit(code)
    if _wait(pid, limit) != 0:
        emit(failed)


def _wait(pid, limit):
    """The forked copy's exit code, killing it after `limit` seconds (-9)."""
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        _, status = os.waitpid(pid, 0)
    except VariantTimeout:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        Clock.disarm()
    return os.waitstatus_to_exitcode(status)


def attempts(options):
    """The pytest argument sets to try in turn, until one reaches the screen's loop: the test
    command's `options` with the project's addopts, then without addopts (pytest-xdist's `-n`
    there would leave collection to workers), then without the options either."""
    tries = [list(options), [*options, "-o", "addopts="], ["-o", "addopts="]]
    return [t for i, t in enumerate(tries) if t not in tries[:i]]


def main():
    """Run pytest on the spec's tests (argv[1]: base64 zlib JSON) with the Screen plugin and the
    test command's pytest options (spec "options"), retried with fewer (attempts) when pytest
    stopped before the screen's loop."""
    spec = json.loads(zlib.decompress(base64.b64decode(sys.argv[1])))
    sys.argv[1:] = []
    fixed = ["-q", "-p", "no:ledex_sbx_plugin", "-p", "no:cacheprovider", "-p", "no:xdist", "--capture=sys",
             "--rootdir=."]
    for options in attempts(spec.get("options") or ()):
        screen = Screen(spec)
        pytest.main([*fixed, *options, *spec["tests"]], plugins=[screen])
        if screen.ran:
            return


if __name__ == "__main__":
    main()
