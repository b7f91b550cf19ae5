"""The unbiased pass@k estimator (Chen et al., 2021, "Evaluating Large Language Models
Trained on Code"), as LEDEX reports it.

For one task with n samples of which c are correct, pass@k = 1 - C(n-c, k) / C(n, k):
the chance that at least one of k samples drawn without replacement is correct. The
benchmark score is the mean over tasks. Computed as a running product so large n stays
exact enough in floating point (no huge binomials).

Try it:  python -m ledex.training.passk 10 3 1     # n=10, c=3, k=1 -> 0.3
"""

from __future__ import annotations

from typing import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task.

    >>> round(pass_at_k(10, 3, 1), 6)
    0.3
    >>> pass_at_k(5, 0, 1), pass_at_k(5, 5, 3)
    (0.0, 1.0)
    >>> round(pass_at_k(4, 1, 2), 6)   # 1 - C(3,2)/C(4,2) = 1 - 3/6
    0.5
    """
    if n <= 0 or k <= 0:
        raise ValueError(f"pass@k needs n > 0 and k > 0 (got n={n}, k={k})")
    if not 0 <= c <= n:
        raise ValueError(f"correct count {c} outside 0..{n}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task (got {n})")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):  # prod_{i=n-c+1}^{n} (1 - k/i) == C(n-c,k)/C(n,k)
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float | None:
    """Mean pass@k over tasks given (n, c) per task; None when no task has n >= k."""
    values = [pass_at_k(n, c, k) for n, c in counts if n >= k]
    return sum(values) / len(values) if values else None


def reportable_ks(n: int, wanted: Sequence[int] = (1, 10)) -> list[int]:
    """The ks that n samples per task support (pass@10 needs n >= 10)."""
    return [k for k in wanted if k <= n]


if __name__ == "__main__":
    import sys

    n_, c_, k_ = (int(a) for a in sys.argv[1:4])
    print(pass_at_k(n_, c_, k_))
