"""The throw-away copy of a workspace, and the integrity rules for what a patch may touch.

Small files are copied; large files are hard-linked only when the sandbox cannot write
through the link (bubblewrap mounts each one read-only, or the sandbox runs as another
uid and the file is not writable by it). A patched file is always a fresh inode, so a
candidate can never alter the user's original through a link. ``remove_tree`` deletes a run
directory whatever the run left in it (depth, permissions) and never raises.
"""
from __future__ import annotations

import configparser
import fnmatch
import hashlib
import os
import shutil
import tokenize
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping

SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", "__pycache__", ".ledex", ".pytest_cache", ".mypy_cache",
    ".ruff_cache", ".tox", ".nox", "node_modules", ".eggs", ".venv",
    ".idea", ".vscode",
})
# Build tools' output folders, left out unless one is a package of the project (is_build_output).
BUILD_DIRS = frozenset({"build", "dist"})
TEST_DIRS = frozenset({"tests", "test", "testing"})
CONFIG_FILES = frozenset({"pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml"})
# Top-level module names that would shadow the test runner (cwd is first on sys.path).
RUNNER_MODULES = frozenset({"pytest", "_pytest", "pluggy", "py", "ledex_sbx_plugin", "ledex_sbx_memo",
                            "ledex_sbx_cov", "sitecustomize", "usercustomize", "iniconfig"})
# Below this size a copy costs about as much as a link and is always safe.
HARDLINK_MIN_BYTES = 1 << 20


class PatchRejected(ValueError):
    """The patch touches something a candidate may not change."""


@dataclass
class CopyResult:
    """What the copy produced; the isolation layer mounts ``linked`` and ``protected`` read-only."""

    root: Path
    linked: list[Path] = field(default_factory=list)
    protected: dict[str, str] = field(default_factory=dict)  # relpath -> sha256


def is_protected(rel: str) -> bool:
    """Test files, conftest.py, pytest configuration and runner-shadowing modules."""
    parts = PurePosixPath(rel).parts
    name = parts[-1]
    if name == "conftest.py" or name in CONFIG_FILES:
        return True
    if name.endswith(".py") and (name.startswith("test_") or name.endswith(("_test.py", "_tests.py"))):
        return True
    if name == "tests.py":  # Django's test module name (pytest-django: python_files = tests.py)
        return True
    if any(p in TEST_DIRS for p in parts[:-1]):
        return True
    top = parts[0].removesuffix(".py")
    return top in RUNNER_MODULES or name.endswith(".pth")


def skip_dir(path: Path) -> bool:
    """True for directories the copy leaves out (virtualenvs, VCS data, caches, build output).
    A project's `*.egg-info` is copied: importlib.metadata reads it when the project root is on
    sys.path, as in the user's own pytest run (fresh-user run X7: wcwidth's test_package_version
    passed there and failed in the sandbox, "No package metadata was found")."""
    return path.name in SKIP_DIRS or is_build_output(path) or (path / "pyvenv.cfg").exists()


def is_build_output(path: Path) -> bool:
    """A `build` or `dist` folder that is not a Python package: build tools' output (setuptools'
    `build/lib/` copies of the sources, wheels). One that holds an `__init__.py` is the project's
    own code (pypa/build's `src/build`) and is copied, localised and patched like any other."""
    return path.name in BUILD_DIRS and not (path / "__init__.py").is_file()


def skip_file(name: str) -> bool:
    """True for files the copy leaves out: coverage.py's data files (``.coverage`` and its
    parallel ``.coverage.<host>.<pid>.<n>``), a previous run's output that a project running
    pytest-cov erases and rewrites - a large one is linked read-only and the run then fails
    with "attempt to write a readonly database" (parse 1.22.4). ``.coveragerc`` is kept."""
    return name == ".coverage" or name.startswith(".coverage.")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_workspace(src: Path, dst: Path, *, can_link: bool) -> CopyResult:
    """Copy ``src`` into ``dst`` (which must not exist), skipping virtualenvs, VCS data and caches."""
    result = CopyResult(root=dst)
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        rel_dir = here.relative_to(src)
        dirnames[:] = [d for d in dirnames if not skip_dir(here / d)]
        (dst / rel_dir).mkdir(exist_ok=True)
        for name in filenames:
            if not skip_file(name):
                _copy_one(here / name, dst / rel_dir / name, rel_dir / name, result, can_link)
    return result


def _copy_one(src: Path, dst: Path, rel: Path, result: CopyResult, can_link: bool) -> None:
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    if not src.is_file():
        return  # sockets, fifos, devices: never copied
    rel_posix = rel.as_posix()
    if is_protected(rel_posix):
        shutil.copyfile(src, dst)
        result.protected[rel_posix] = _sha256(dst)
    elif can_link and src.stat().st_size >= HARDLINK_MIN_BYTES and _link(src, dst):
        result.linked.append(dst)
    else:
        shutil.copyfile(src, dst)


def _link(src: Path, dst: Path) -> bool:
    try:
        os.link(src, dst)
        return True
    except OSError:  # cross-device, or the file system has no hard links
        return False


def normalize_rel(rel: str) -> str:
    """A patch path as a clean relative POSIX path, or PatchRejected."""
    path = PurePosixPath(rel.replace("\\", "/"))
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise PatchRejected(f"patch path {rel!r} is not inside the workspace")
    if any(p in SKIP_DIRS or p.endswith(".egg-info") for p in path.parts[:-1]):  # metadata: never a fix
        raise PatchRejected(f"patch path {rel!r} is inside an ignored directory")
    return path.as_posix()


def check_patch(workspace: Path, patch: Mapping[str, str]) -> dict[str, str]:
    """Validate ``patch`` against the integrity rules; return it with normalized paths.

    A protected file may appear only unchanged (models often echo whole files back);
    pytest configuration files may change outside their pytest section.
    """
    clean: dict[str, str] = {}
    globs = python_files_globs(workspace)
    for rel, text in patch.items():
        if not isinstance(text, str):
            raise PatchRejected(f"patch text for {rel!r} is not a string")
        rel = normalize_rel(rel)
        if any(is_build_output(workspace / folder) for folder in PurePosixPath(rel).parents):
            raise PatchRejected(f"patch path {rel!r} is inside an ignored directory")  # build output, as the copy skips
        original = _read_text(workspace / rel)
        if original == text:
            continue
        protected = is_protected(rel) or any(fnmatch.fnmatch(PurePosixPath(rel).name, g) for g in globs)
        if protected and not _config_edit_allowed(rel, original, text):
            raise PatchRejected(f"patch touches protected file {rel!r} "
                                "(tests, conftest.py and pytest configuration come from the workspace)")
        if not (workspace / rel).is_file():
            raise PatchRejected(f"patch adds a new file {rel!r}: a candidate may only change existing files")
        try:
            source_bytes(text)
        except (UnicodeEncodeError, SyntaxError) as exc:
            raise PatchRejected(f"patch text for {rel!r} cannot be written in the encoding it declares: {exc}") from None
        clean[rel] = text
    return clean


def python_files_globs(workspace: Path) -> tuple[str, ...]:
    """pytest's ``python_files`` globs from the workspace's configuration (e.g. Django's tests.py)."""
    for name in ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg"):
        text = _read_text(workspace / name)
        try:
            section = _pytest_section(name.lstrip("."), text) if text is not None else None
        except Exception:  # unparsable config: the default names still protect
            section = None
        if isinstance(section, dict):
            value = section.get("ini_options", section).get("python_files", "")
            return tuple(value.split() if isinstance(value, str) else value)
    return ()


def _read_text(path: Path) -> str | None:
    return read_source_text(path)


def source_encoding(raw: bytes) -> str:
    """The encoding of a Python file's bytes: the one its PEP 263 line declares (`# -*- coding:
    latin-1 -*-` in its first two lines), else UTF-8; "utf-8" also for UTF-8 with a BOM, which
    stays in the text as U+FEFF and is written back. Raises SyntaxError for an unknown encoding.

    >>> source_encoding(b"# -*- coding: latin-1 -*-\\n"), source_encoding(b"\\xef\\xbb\\xbfx = 1\\n")
    ('iso-8859-1', 'utf-8')
    """
    lines = iter(raw.splitlines(keepends=True)[:2])
    encoding, _ = tokenize.detect_encoding(lambda: next(lines, b""))
    return "utf-8" if encoding in ("utf-8", "utf-8-sig") else encoding


def read_source_text(path: Path) -> str | None:
    """A file's text in its source encoding (source_encoding), or None when it cannot be read or
    its bytes are not in that encoding (fresh-user run X9 F12: a latin-1 module was never a suspect)."""
    try:
        raw = path.read_bytes()
        return raw.decode(source_encoding(raw))
    except (OSError, UnicodeDecodeError, SyntaxError, LookupError):
        return None


def source_bytes(text: str) -> bytes:
    """`text` (a Python file's) as bytes in the encoding its own PEP 263 line declares (UTF-8
    when none). Raises UnicodeEncodeError when a character has no place in that encoding."""
    return text.encode(source_encoding(text.encode("utf-8")))


def _config_edit_allowed(rel: str, old: str | None, new: str) -> bool:
    name = PurePosixPath(rel).name
    if "/" in rel or old is None or name not in ("pyproject.toml", "setup.cfg", "tox.ini"):
        return False  # only root-level config files outside a test dir, and never new ones
    try:
        return _pytest_section(name, old) == _pytest_section(name, new)
    except Exception:  # unparsable config: refuse rather than guess
        return False


def _pytest_section(name: str, text: str) -> object:
    if name == "pyproject.toml":
        import tomllib  # Python 3.11+; on 3.10 the ImportError rejects the edit

        return tomllib.loads(text).get("tool", {}).get("pytest")
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    section = "tool:pytest" if name == "setup.cfg" else "pytest"
    return dict(parser.items(section)) if parser.has_section(section) else None


def apply_patch(root: Path, patch: Mapping[str, str]) -> None:
    """Write each patched file as a new inode (never through a hard link)."""
    for rel, text in patch.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        target.write_bytes(source_bytes(text))


def remove_tree(path: Path) -> bool:
    """Delete ``path`` however deep, wide or read-only the sandbox left it; never raises.

    Iterative and descriptor-relative (``dir_fd``), one directory open at a time, so a
    3000-deep chain (longer than PATH_MAX, deeper than the recursion limit) goes like any
    other tree; directories the run made unreadable are chmod-ed back. Returns False if
    something could not be removed (it stays under the run's private temp directory).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return _quietly(os.unlink, path)
    names: list[str] = []  # the path from ``path`` down to the directory ``fd`` is open on
    stuck: set[tuple[int, int]] = set()
    try:
        while True:
            child = _clear_files(fd, stuck)
            if child is not None and (sub := _open_child(fd, child)) is not None:
                os.close(fd)
                fd, _ = sub, names.append(child)
                continue
            if not names:
                break
            if child is not None:  # could not enter it: leave it, count the failure
                stuck.add(_key(fd))
            fd = _up(fd, names.pop())
    except OSError:
        pass
    finally:
        os.close(fd)
    return _quietly(os.rmdir, path)


def _clear_files(fd: int, stuck: set[tuple[int, int]]) -> str | None:
    """Unlink every non-directory in ``fd``; return one subdirectory still to enter."""
    if _key(fd) in stuck:
        return None
    for _ in range(2):
        try:
            with os.scandir(fd) as entries:
                subdir = None
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subdir = subdir or entry.name
                    else:
                        os.unlink(entry.name, dir_fd=fd)
                return subdir
        except PermissionError:
            os.fchmod(fd, 0o700)  # the run made it read-only
    stuck.add(_key(fd))
    return None


def _open_child(fd: int, name: str) -> int | None:
    for _ in range(2):
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except PermissionError:
            os.chmod(name, 0o700, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
    return None


def _up(fd: int, name: str) -> int:
    """Open the parent of ``fd``, close ``fd`` and remove it (as ``name``) if it is empty."""
    parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
    os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent)
    except OSError:
        pass  # not empty: something in it was stuck
    return parent


def _key(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _quietly(remove, path: Path) -> bool:  # noqa: ANN001 - os.unlink or os.rmdir
    """``remove(path)``; True when ``path`` is gone (or never was), False when it stays."""
    try:
        remove(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True
