"""ledex.sandbox: the one place where untrusted (model-written) code runs.

Bottom layer of ledex: imports nothing else from ledex; standard library only (pytest
runs inside the sandbox as the test runner). See ``api`` for the entry points.
"""
from .api import default_workers, run_tests, verify, verify_many
from .isolation import detect_mode, isolation_report
from .models import Limits, TestOutcome, Verdict
from .workspace import PatchRejected, copy_workspace, is_build_output, is_protected, read_source_text, source_bytes

__all__ = ["Limits", "TestOutcome", "Verdict", "run_tests", "verify", "verify_many",
           "isolation_report", "detect_mode", "default_workers", "PatchRejected", "is_protected", "copy_workspace",
           "is_build_output", "read_source_text", "source_bytes"]
