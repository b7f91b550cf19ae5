"""Localisation over real pytest tracebacks (pytest runs for real on small workspaces)."""

import subprocess
import sys
from pathlib import Path

from helpers import write_tree

from ledex.engine.failures import read_junit
from ledex.engine.localize import frames, is_test_file, localize

FILES = {
    "shop/__init__.py": "",
    "shop/cart.py": (
        "from shop.money import cents\n\n\n"
        "class Cart:\n"
        "    def __init__(self):\n        self.items = []\n\n"
        "    def add(self, price):\n        self.items.append(cents(price))\n\n"
        "    def total(self):\n        return sum(self.items)\n"
    ),
    "shop/money.py": "def cents(price):\n    return int(price * 100) // 0\n",
    "shop/names.py": "def title(name):\n    return name.upper()\n",
    "tests/helpers.py": "def check(value, expected):\n    assert value == expected\n",
    "tests/test_shop.py": (
        "from shop.cart import Cart\nfrom shop.names import title\nfrom tests.helpers import check\n\n\n"
        "def test_cart_total():\n    cart = Cart()\n    cart.add(1.5)\n    assert cart.total() == 150\n\n\n"
        "def test_title():\n    check(title('ann lee'), 'Ann Lee')\n"
    ),
    "tests/__init__.py": "",
}


def run_pytest(workspace: Path):
    write_tree(workspace, FILES)
    report = workspace / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "--tb=native", "-p", "no:cacheprovider",
                    "-o", "junit_family=xunit1", f"--junitxml={report}"], cwd=workspace, capture_output=True)
    return {o.nodeid: o for o in read_junit(report, workspace)}


def test_deepest_workspace_frame_outside_tests_wins(tmp_path):
    outcome = run_pytest(tmp_path)["tests/test_shop.py::test_cart_total"]
    assert outcome.outcome == "failed" and "ZeroDivisionError" in outcome.details
    assert [f[2] for f in frames(outcome.details)][-3:] == ["test_cart_total", "add", "cents"]
    suspect = localize(tmp_path, outcome.details, "tests/test_shop.py", "test_cart_total")
    assert (suspect.path, suspect.qualname, suspect.reason) == ("shop/money.py", "cents", "traceback")
    assert suspect.source == FILES["shop/money.py"].rstrip()
    assert (suspect.start_line, suspect.end_line) == (1, 2)


def test_assertion_in_test_code_falls_back_to_the_called_function(tmp_path):
    outcome = run_pytest(tmp_path)["tests/test_shop.py::test_title"]
    assert outcome.outcome == "failed"
    # every frame is test code (the test and tests/helpers.py): nothing to fix there
    in_workspace = [Path(f[0]) for f in frames(outcome.details) if Path(f[0]).is_relative_to(tmp_path)]
    assert in_workspace and all(is_test_file(p.relative_to(tmp_path)) for p in in_workspace)
    suspect = localize(tmp_path, outcome.details, "tests/test_shop.py", "test_title")
    assert (suspect.path, suspect.qualname, suspect.reason) == ("shop/names.py", "title", "called by the test")


def test_methods_are_found_with_their_class(tmp_path):
    run_pytest(tmp_path)
    details = f'  File "{tmp_path}/shop/cart.py", line 12, in total\n    return sum(self.items)\n'
    suspect = localize(tmp_path, details, None, None)
    assert suspect.qualname == "Cart.total" and suspect.start_line == 11


def test_frames_outside_the_workspace_are_ignored(tmp_path):
    run_pytest(tmp_path)
    details = '  File "/usr/lib/python3/site-packages/x.py", line 3, in f\n'
    assert localize(tmp_path, details, None, None) is None


def test_non_utf8_source_is_never_a_suspect(tmp_path):
    run_pytest(tmp_path)
    (tmp_path / "shop" / "money.py").write_bytes(b"# caf\xe9\ndef cents(price):\n    return 1 // 0\n")
    details = f'  File "{tmp_path}/shop/money.py", line 3, in cents\n'
    assert localize(tmp_path, details, None, None) is None
