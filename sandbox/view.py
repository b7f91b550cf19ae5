"""What a sandboxed run may see: the interpreter's files and the workspace paths its finders use.

A probe runs the target interpreter once (``python -I -c ...``, cached until its
site-packages change) and reports its prefixes, ``sys.path`` and the targets of setuptools'
``__editable__`` finders. From that:

- ``binds``: host paths bubblewrap mounts read-only so the interpreter and its libraries work
  wherever they live (``/root/.pyenv`` under a 0700 ``/root``, ``/opt/x`` mode 700, a venv);
  the directories leading to them are re-created 0755, nothing else of them is visible.
- ``ws_paths``: ``sys.path`` entries and finder targets that lie *inside the workspace*
  (an editable install of the project itself, ``pip install -e .``), relative to it. The
  sandbox puts the copy's equivalents first on ``sys.path`` and, under bubblewrap, mounts the
  copy over the original workspace path, so the tests import the patched copy, never the
  user's checkout (issue 12 item 13).

Run ``python -m ledex.sandbox.view [PYTHON] [WORKSPACE]`` to print the view as JSON.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .workspace import skip_dir

# Mounted read-only by isolation for every run: the OS's programs and libraries.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/nix")
# From /etc only what programs and Python need to start, resolve names and read certificates;
# not passwords, ssh keys or the host's service configuration. Extend here (data, not code).
ETC_ENTRIES = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone",
    "passwd", "group", "nsswitch.conf", "hosts", "host.conf", "gai.conf", "protocols",
    "services", "ssl", "ca-certificates", "pki", "mime.types", "os-release", "locale.alias",
    "fonts", "matplotlibrc", "pip.conf",
)
ETC_GLOBS = ("python3*",)  # Debian's /etc/python3.X (sitecustomize of the system python)

_PROBE = r"""
import json, sys
maps = []
for name, mod in list(sys.modules.items()):
    mapping = getattr(mod, "MAPPING", None) if name.startswith("__editable__") else None
    if isinstance(mapping, dict):
        maps += [[str(k), str(v)] for k, v in mapping.items()]
print(json.dumps({"executable": sys.executable, "path": sys.path, "editable": maps,
                  "prefixes": [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]}))
"""
_cache: dict[str, tuple[tuple, dict[str, Any]]] = {}


def probe(python: str) -> dict[str, Any] | None:
    """The interpreter's own account of where it lives (see ``_PROBE``), or None if it does not run.

    Cached per interpreter path until the mtime of one of its ``sys.path`` directories
    changes (``pip install`` touches site-packages).
    """
    hit = _cache.get(python)
    if hit and hit[0] == _stamp(hit[1]["path"]):
        return hit[1]
    try:
        done = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, timeout=30,
                              cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        info = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    _cache[python] = (_stamp(info["path"]), info)
    return info


def _stamp(paths: list[str]) -> tuple:
    out = []
    for path in paths:
        try:
            out.append(os.stat(path).st_mtime_ns)
        except OSError:
            out.append(None)
    return tuple(out)


def interpreter_view(python: str, workspace: Path) -> dict[str, Any]:
    """{"python", "binds", "ws_paths", "workspace", "probed"} for running ``python`` on ``workspace``.

    ``python`` becomes the probe's ``sys.executable`` (so a pyenv shim resolves to the real
    interpreter). When the probe fails the view still binds the interpreter's prefix and the
    run reports the interpreter's own error.
    """
    ws = os.path.realpath(workspace)
    python = os.path.abspath(python) if os.sep in python else python
    info = probe(python)
    if info is None:
        candidates = [os.path.dirname(os.path.dirname(os.path.realpath(python)))]
        info = {"executable": python, "path": [], "editable": []}
    else:
        candidates = [*info["prefixes"], os.path.dirname(info["executable"]), *info["path"],
                      *(v for _k, v in info["editable"])]
    candidates.append(os.path.dirname(os.path.abspath(python)))
    return {"python": info["executable"] or python, "binds": _minimal(candidates, ws, False),
            "ws_binds": _minimal(candidates, ws, True), "ws_paths": _inside(info, ws),
            "workspace": ws, "probed": bool(info["path"])}


def _minimal(paths: list[str], ws: str, inside: bool) -> list[str]:
    """Existing absolute paths (as given and resolved) to mount, nested ones dropped, parents
    first: outside system dirs and the workspace, or (``inside``) in a part of the workspace
    the copy leaves out (a ``.venv`` in the project)."""
    found: set[str] = set()
    for path in paths:
        if not path or not os.path.isabs(path):
            continue
        for variant in {os.path.abspath(path), os.path.realpath(path)}:
            if os.path.exists(variant) and _wanted(variant, ws) == ("inside" if inside else "outside"):
                found.add(variant)
    keep: list[str] = []
    for path in sorted(found, key=lambda p: (p.count(os.sep), p)):
        if not any(_within(path, k) for k in keep):
            keep.append(path)
    return keep


def _wanted(path: str, ws: str) -> str:
    """"outside", "inside" (a left-out part of the workspace) or "no": system dirs come with
    the view, the workspace from the copy, and the root, HOME or a directory holding the
    workspace or HOME would expose other projects and the user's secrets."""
    if _within(path, ws):
        return "inside" if _left_out(path, ws) else "no"
    home = os.path.realpath(os.path.expanduser("~"))
    if path == os.sep or _within(ws, path) or _within(home, path):  # never all of HOME or /home
        return "no"
    system = any(_within(path, s) for s in SYSTEM_DIRS if os.path.isdir(s) and not os.path.islink(s))
    return "no" if system else "outside"


def _left_out(path: str, ws: str) -> str | None:
    """The first directory on the way from ``ws`` to ``path`` that the copy skips, if any."""
    current = Path(ws)
    for part in Path(os.path.relpath(path, ws)).parts:
        current = current / part
        if current.is_dir() and skip_dir(current):
            return str(current)
    return None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _inside(info: dict[str, Any], ws: str) -> list[str]:
    """Workspace-relative import roots from sys.path and top-level editable finder targets."""
    roots = [p for p in info["path"] if p and os.path.isabs(p)]
    roots += [os.path.dirname(v.rstrip(os.sep)) for k, v in info["editable"] if "." not in k]
    rels: list[str] = []
    for root in roots:
        real = os.path.realpath(root)
        if _within(real, ws) and not _left_out(real, ws):
            rel = os.path.relpath(real, ws)
            if rel not in rels:
                rels.append(rel)
    return rels


def copy_import_paths(view: dict[str, Any] | None, copy_root: Path) -> list[str]:
    """The copy's equivalents of the workspace's import roots, for the front of PYTHONPATH."""
    if not view:
        return []
    return [str(copy_root / rel) if rel != "." else str(copy_root) for rel in view.get("ws_paths", ())]


def system_binds() -> list[str]:
    """bwrap arguments for the OS part of the view: system dirs (symlinks kept) and part of /etc."""
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--perms", "0755", "--dir", "/etc"]  # bwrap would make it 0700: untraversable after a uid drop
    etc = [os.path.join("/etc", name) for name in ETC_ENTRIES]
    etc += sorted(str(p) for pattern in ETC_GLOBS for p in Path("/etc").glob(pattern))
    for path in etc:
        if os.path.lexists(path):
            args += ["--ro-bind-try", path, path]
    return args


def interpreter_binds(view: dict[str, Any], key: str = "binds",
                      made: set[str] | None = None) -> list[str]:
    """bwrap arguments mounting the interpreter's paths (``view[key]``) read-only, their
    parents traversable."""
    args: list[str] = []
    made = set() if made is None else made
    for path in view.get(key, ()):
        args += parent_dirs(path, made)
        args += ["--ro-bind-try", path, path]
    return args


def parent_dirs(path: str, made: set[str]) -> list[str]:
    """``--perms 0755 --dir`` for each missing ancestor of ``path`` (bwrap would make them 0700
    or leave a host mode the sandbox uid cannot traverse)."""
    args: list[str] = []
    parts = Path(path).parts
    for i in range(2, len(parts)):
        parent = os.path.join(*parts[:i])
        if parent not in made:
            made.add(parent)
            args += ["--perms", "0755", "--dir", parent]
    return args


def main(argv: list[str]) -> int:
    """Print interpreter_view(argv[0] or this python, argv[1] or cwd) as JSON; returns 0."""
    python = argv[0] if argv else sys.executable
    workspace = Path(argv[1] if len(argv) > 1 else os.getcwd())
    print(json.dumps(interpreter_view(python, workspace), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
