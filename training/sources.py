"""Where editor-shaped training problems come from: small pytest projects on disk.

Every source becomes one or more *projects* (a folder with code modules and `tests/test_*.py`),
each with its licence, split and the functions whose bugs training may plant:

- `mbpp:<file>`: MBPP's train and prompt splits (task ids 601-974 and 1-10, see
  ../shared/data/README.md); each task is a project `<entry point>.py` + `tests/test_<entry>.py`
  with one test function per assert (CC-BY-4.0). Validation (the promotion gate) and test
  (evaluation) are refused.
- `pypi:<name>[==<version>]`: a pure-Python package whose sdist carries its own tests, fetched
  with `pip download --no-deps --no-binary :all:` into the fetch cache at collect time (never at
  serving time); the manifest keeps its name, version, sha256 and licence (from PKG-INFO; only
  permissive licences are taken).
- `dir:<folder>[#<licence>]`: a local project laid out the same way (tests, fixtures).

Evaluation sets are refused by name wherever they appear (EVALUATION_ONLY; issue 16): MBPP test,
HumanEval, HumanEvalFix / HumanEvalPack, more-itertools, toolz, cachetools.

    python -m ledex.training.sources pypi:inflection /tmp/ledex-fetch     # fetch, list the functions
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ledex.engine.localize import iter_functions, read_source

EVALUATION_ONLY = ("humaneval", "humanevalfix", "humanevalpack", "more-itertools", "toolz", "cachetools")
TRAINING_SPLITS = ("train", "prompt")  # MBPP: validation is the promotion gate's, test is evaluation's
PERMISSIVE = ("MIT", "BSD", "Apache", "ISC", "PSF", "Python Software Foundation", "Unlicense", "Zlib", "0BSD")
MAX_FUNCTION_LINES = 60  # longer functions rarely fit the served context with their answer
_TEST_DIRS = ("tests", "test", "testing")


class SourceError(ValueError):
    """A source collect cannot or must not use (evaluation set, bad licence, no tests...)."""


@dataclass(frozen=True)
class Project:
    """A pytest project on disk: code files to plant bugs in (`targets`: path -> qualnames)."""

    id: str  # "mbpp/601", "boltons-26.2.0"
    root: Path  # the pristine folder (never changed; collect works on copies)
    source: str  # "mbpp", "pypi:boltons", "dir:<name>"
    licence: str
    split: str
    targets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    package: dict = field(default_factory=dict)  # name, version, sha256, sdist (pypi sources)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def refuse_evaluation(name: str) -> None:
    """Raise SourceError when `name` (a source, package or file name) is an evaluation set."""
    stem = _norm(Path(name.split(":", 1)[-1].split("==")[0].split("#")[0]).name.removesuffix(".jsonl"))
    for banned in EVALUATION_ONLY:
        if stem == banned or stem.startswith(banned + "-") or (banned.startswith("humaneval") and "humaneval" in stem):
            raise SourceError(f"{name}: {banned} is for evaluation only, never training (issue 16)")


# --- MBPP -------------------------------------------------------------------------------------


def mbpp_projects(path: str | Path, root: Path, splits: tuple[str, ...] = TRAINING_SPLITS) -> list[Project]:
    """MBPP tasks of `splits` as projects under root/mbpp (written once, reused on resume)."""
    from ledex.engine.problems import load_mbpp

    for split in splits:
        if split not in TRAINING_SPLITS:
            raise SourceError(f"MBPP {split} is not training data (validation: promotion gate; test: evaluation)")
    out = []
    for split in splits:
        for problem in load_mbpp(path, split):
            project = _mbpp_project(problem, Path(root) / "mbpp", split)
            if project is not None:
                out.append(project)
    return out


def _module_name(entry: str | None) -> str:
    name = entry or "solution"
    return "solution" if name in sys.stdlib_module_names or name in ("pytest", "conftest", "test") else name


def mbpp_files(problem, code: str | None = None) -> dict[str, str] | None:
    """An MBPP task as project files (relative path -> text): `<entry>.py` holding `code` (default:
    the reference solution in `ast.unparse` form) and `tests/test_<entry>.py` with one test function
    per single-line assert. The one rendering of MBPP tasks, for training (collect) and evaluation
    (training/fixcases.py). None when the code does not parse."""
    try:
        code = code if code is not None else ast.unparse(ast.parse(problem.solution.replace("\r\n", "\n"))) + "\n"
        ast.parse(code)  # MBPP mixes tabs/spaces; sampled code may not parse at all
    except (SyntaxError, ValueError):
        return None
    module = _module_name(problem.entry_point)
    tests = "\n\n".join(f"def test_{module}_{i}():\n    {t.strip()}" for i, t in enumerate(problem.tests)
                        if "\n" not in t.strip())
    setup = problem.setup.replace("\r\n", "\n").strip()
    test_text = f"from {module} import *  # noqa: F403\n{setup + chr(10) if setup else ''}\n\n{tests}\n"
    return {f"{module}.py": code, f"tests/test_{module}.py": test_text}


def _mbpp_project(problem, root: Path, split: str) -> Project | None:
    files = mbpp_files(problem)
    if files is None:
        return None
    folder = root / problem.id.replace("/", "-")
    for rel, text in files.items():
        _write_once(folder / rel, text)
    module = next(iter(files))
    names = tuple(q for q, node in iter_functions(ast.parse(files[module])) if "<locals>" not in q)
    return Project(problem.id, folder, "mbpp", "CC-BY-4.0", split, {module: names})


def _write_once(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


# --- packages -----------------------------------------------------------------------------------


def fetch_sdist(spec: str, cache: Path) -> Path:
    """The sdist of `spec` ("name" or "name==version") in cache/sdists, downloaded with
    `pip download --no-deps --no-binary :all:` unless already there. Raises SourceError."""
    refuse_evaluation(spec)
    name, _, version = spec.partition("==")
    folder = Path(cache) / "sdists"
    folder.mkdir(parents=True, exist_ok=True)
    found = _cached_sdist(folder, name, version)
    if found is not None:
        return found
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(folder), spec]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = _cached_sdist(folder, name, version)
    if done.returncode != 0 or found is None:
        raise SourceError(f"pip download {spec} failed: {done.stderr.strip()[-400:]}")
    return found


def _cached_sdist(folder: Path, name: str, version: str) -> Path | None:
    stems = {name.lower(), name.lower().replace("-", "_")}
    hits = [p for p in sorted(folder.iterdir()) if p.name.endswith((".tar.gz", ".zip"))
            and p.name.lower().rsplit("-", 1)[0] in stems and (not version or _version_of(p) == version)]
    return hits[-1] if hits else None


def _version_of(sdist: Path) -> str:
    return sdist.name.removesuffix(".tar.gz").removesuffix(".zip").rsplit("-", 1)[-1]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _extract(sdist: Path, into: Path) -> Path:
    if not into.is_dir():
        tmp = into.with_name(into.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as archive:
                archive.extractall(tmp)
        else:
            with tarfile.open(sdist) as archive:
                archive.extractall(tmp, filter="data")
        tmp.rename(into)
    tops = [p for p in into.iterdir() if p.is_dir()]
    return tops[0] if len(tops) == 1 else into


def licence_of(tree: Path) -> str:
    """The licence an sdist declares in PKG-INFO (License-Expression, License, classifiers)."""
    info = tree / "PKG-INFO"
    text = info.read_text(encoding="utf-8", errors="replace") if info.is_file() else ""
    for key in ("License-Expression", "License"):
        match = re.search(rf"^{key}: *(\S.*)$", text, re.MULTILINE)
        if match and len(match.group(1)) < 80 and match.group(1).strip() not in ("UNKNOWN", ""):
            return match.group(1).strip()
    classifiers = re.findall(r"^Classifier: License :: (?:OSI Approved :: )?(.+)$", text, re.MULTILINE)
    return classifiers[0].strip() if classifiers else "unknown"


def is_permissive(licence: str) -> bool:
    return any(word.lower() in licence.lower() for word in PERMISSIVE) and "GPL" not in licence.upper()


def package_project(spec: str, cache: Path, root: Path) -> Project:
    """The package's code and its own tests as a project under root (pristine copy)."""
    sdist = fetch_sdist(spec, cache)
    tree = _extract(sdist, Path(cache) / "src" / sdist.name.removesuffix(".tar.gz").removesuffix(".zip"))
    licence = licence_of(tree)
    if not is_permissive(licence):
        raise SourceError(f"{spec}: licence {licence!r} is not a permissive one ({', '.join(PERMISSIVE[:5])}...)")
    name, version = sdist.name.rsplit("-", 1)[0], _version_of(sdist)
    folder = Path(root) / f"{_norm(name)}-{version}"
    if not (folder / ".complete").is_file():
        _lay_out(tree, folder)
    package = {"name": _norm(name), "version": version, "sha256": sha256(sdist), "sdist": sdist.name, "licence": licence}
    return Project(f"{_norm(name)}-{version}", folder, f"pypi:{_norm(name)}", licence, "train", targets_of(folder), package)


def _lay_out(tree: Path, folder: Path) -> None:
    """Code packages (top level or src/) and the test folder (or root test_*.py) into folder,
    with an empty pytest.ini so the sdist's own pytest options (coverage plugins...) stay out."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base = tree / "src" if (tree / "src").is_dir() else tree
    for child in base.iterdir():
        if child.is_dir() and (child / "__init__.py").is_file() and child.name not in _TEST_DIRS:
            shutil.copytree(child, folder / child.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif child.suffix == ".py" and child.name not in ("setup.py", "conftest.py") and not child.name.startswith("test"):
            shutil.copy2(child, folder / child.name)
    tests = next((tree / d for d in _TEST_DIRS if (tree / d).is_dir()), None)
    if tests is not None:
        shutil.copytree(tests, folder / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for loose in list(tree.glob("test_*.py")) + list(tree.glob("*_test.py")) + list(tree.glob("conftest.py")):
        (folder / "tests").mkdir(exist_ok=True)
        shutil.copy2(loose, folder / "tests" / loose.name)
    if not (folder / "tests").is_dir():
        raise SourceError(f"{tree.name}: the sdist carries no tests")
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (folder / ".complete").write_text("", encoding="utf-8")


def dir_project(spec: str, root: Path) -> Project:
    """`<folder>[#<licence>]`: a local project, copied under root."""
    path, _, licence = spec.partition("#")
    refuse_evaluation(path)
    source = Path(path)
    if not (source / "tests").is_dir():
        raise SourceError(f"{path}: expected a project folder with tests/")
    folder = Path(root) / f"dir-{source.resolve().name}"
    if not folder.is_dir():
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ledex"))
    return Project(f"dir-{source.resolve().name}", folder, f"dir:{source.resolve().name}", licence or "unknown",
                   "train", targets_of(folder))


def targets_of(folder: Path) -> dict[str, tuple[str, ...]]:
    """Every code file (not test code) and its functions/methods up to MAX_FUNCTION_LINES long."""
    from ledex.engine.localize import is_overload, is_test_file

    out = {}
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).as_posix()
        text = read_source(path)
        if is_test_file(rel) or text is None or "__pycache__" in rel:
            continue
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        # each name once, overload stubs left out: pydash's `union_with` (two @t.overload stubs and the
        # code) was three units sharing one cache file, and its records were counted three times
        names = tuple(dict.fromkeys(q for q, node in iter_functions(tree) if "<locals>" not in q and not is_overload(node)
                                    and node.end_lineno - node.lineno < MAX_FUNCTION_LINES))
        if names:
            out[rel] = names
    return out


def load_projects(specs: list[str], root: Path, cache: Path) -> list[Project]:
    """Every project of the given sources (see the module docstring); raises SourceError."""
    projects = []
    for spec in specs:
        kind, _, rest = spec.partition(":")
        refuse_evaluation(rest or spec)
        if kind == "mbpp":
            path, _, splits = rest.partition("#")
            projects += mbpp_projects(path, root, tuple(splits.split(",")) if splits else TRAINING_SPLITS)
        elif kind == "pypi":
            projects.append(package_project(rest, cache, root / "packages"))
        elif kind == "dir":
            projects.append(dir_project(rest, root / "local"))
        else:
            raise SourceError(f"unknown source {spec!r}: use mbpp:<file>, pypi:<name>[==<version>] or dir:<folder>")
    return projects


if __name__ == "__main__":
    found = load_projects([sys.argv[1]], Path(sys.argv[2]) / "projects", Path(sys.argv[2]))
    for project in found[:5]:
        print(json.dumps({"id": project.id, "licence": project.licence, "package": project.package,
                          "functions": sum(map(len, project.targets.values()))}))
