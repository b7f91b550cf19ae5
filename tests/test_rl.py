"""Two RL (GRPO) steps and two KTO steps on the tiny default model (SmolLM2-135M from the shipped GGUF).

Kept short for 2 CPU cores: 2 answers of at most 24 tokens per prompt. So short an answer never
holds a finished code block, so every LEDEX reward is the minimum and GRPO's group advantage would
be 0; the RL test therefore adds one test-only reward (answer length) that varies within a group,
which is what lets us see the update path move the weights. The LEDEX components are still
computed and logged (that is asserted). Reward values on real answers are covered in test_rewards.py.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from ledex.engine.episodes import EpisodeLog  # noqa: E402
from ledex.training import records  # noqa: E402
from ledex.training.records import Trajectory  # noqa: E402

TESTS = ("assert total(3) == 6", "assert total(0) == 0")
WRONG = "def total(n):\n    return sum(range(n))"
EDITOR_TASK = "tests/test_math.py::test_total fails"


def trajectory(explanation: str, code: str, correct: bool, **extra) -> Trajectory:
    # Short texts: every prompt token costs forward passes on two shared CPU cores.
    values = dict(source="toy/1", task="total(n): 0+1+...+n", wrong_code=WRONG, feedback="total(3) gave 3, not 6",
                  explanation=explanation, code=code,
                  correct=correct, pass_rate=1.0 if correct else 0.5, tests=TESTS, entry_point="total")
    return Trajectory(**(values | extra))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rl-data")
    rows = [trajectory("range(n) stops before n.", "def total(n):\n    return sum(range(n + 1))", True),
            trajectory("Off by one.", "def total(n):\n    return sum(range(n))", False),
            trajectory("Wrong start.", "def total(n):\n    return sum(range(1, n))", False,
                       wrong_code="def total(n):\n    return n * (n - 1) // 2"),
            # Editor feedback: no runnable tests (RL skips it), a user's thumbs (KTO learns from it).
            trajectory("Adds n.", "def total(n):\n    return n * (n + 1) // 2", True, origin="accepted", tests=(),
                       task=EDITOR_TASK, wrong_code="def total(n):\n    return n * n"),
            trajectory("Returns n.", "def total(n):\n    return n", False, origin="rejected", tests=(),
                       task=EDITOR_TASK, wrong_code="def total(n):\n    return n * n")]
    path = folder / "toy.jsonl"
    records.write(path, rows)
    return path


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory):
    """Stands in for `ledex-train sft` output: a LoRA adapter with non-zero weights on the base."""
    from peft import get_peft_model

    from ledex.training.core import load_policy

    base, config = load_policy("default", None, cache=True)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 1e-3)
    folder = tmp_path_factory.mktemp("sft") / "adapter"
    model.save_pretrained(folder)
    return folder


def test_rl_rows_keep_success_and_failure_trajectories(data):
    from ledex.training.rl import build_rows

    rows, stats = build_rows(list(records.read(data)), lambda messages: messages[-1]["content"])
    assert stats["prompts"] == 2 and stats["skipped_without_tests"] == 1
    first = rows[0]
    assert first["reference_codes"] == ["def total(n):\n    return sum(range(n + 1))"]
    assert first["reference_explanations"] == ["range(n) stops before n."]
    # The second wrong solution has no correct refinement of its own: the task's are used.
    assert rows[1]["reference_codes"] == first["reference_codes"]


def length_reward(completions, **kwargs) -> list[float]:
    return [len(c) / 100 for c in completions]


class FlatEmbedder:
    """Every text embeds to the same unit vector (the packaged embedder is exercised in test_rewards.py)."""

    def encode(self, texts):
        import numpy as np

        return np.ones((len(texts), 4)) / 2.0


@pytest.mark.long  # ~20 s + the SFT adapter; KTO (what ledex-train all runs) stays in make test
def test_two_rl_steps_from_the_sft_adapter_resumed(data, sft_adapter, tmp_path):
    """Step 1, checkpoint, then a second run resumes from checkpoint-1 and makes step 2."""
    from ledex.training.rl import RLArgs, train

    args = RLArgs(data=[str(data)], adapter=str(sft_adapter), output_dir=str(tmp_path / "rl"), max_steps=1,
                  num_generations=2, batch_size=2, grad_accum=1, max_completion_length=16, learning_rate=1e-3,
                  save_steps=1, progress=False, threads=2, max_prompts=1,
                  temperature=2.0)  # distinct answers in the group (identical ones give zero advantage)
    build = {"extra_rewards": [length_reward], "embedder": FlatEmbedder(), "cache_base": True}
    first = train(args, **build)
    assert first.pop("trainer").state.global_step == 1 and first["trainable_tensors_changed"] > 0
    args.max_steps = 2
    metrics = train(args, **build)
    trainer = metrics.pop("trainer")
    assert metrics["resumed_from"].endswith("checkpoint-1") and metrics["steps"] == 2
    assert metrics["trainable_tensors_changed"] > 0
    assert "ref" in trainer.model.peft_config  # the KL reference is a frozen copy of the SFT adapter
    logged = metrics["rewards"]
    assert [row["step"] for row in logged] == [1, 2]
    for name in ("explanation_reward", "refinement_reward", "format_reward"):
        assert all(f"rewards/{name}/mean" in row for row in logged), logged
    assert all("kl" in row for row in logged)
    saved = json.loads((tmp_path / "rl" / "ledex-rl.json").read_text())
    assert saved["steps"] == 2 and (tmp_path / "rl" / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "rl" / "adapter" / "ref").exists()  # only the policy is saved


def test_kto_examples_from_records_and_episode_log(data, tmp_path):
    from ledex.training.kto import KTOArgs, load_examples

    log = EpisodeLog(tmp_path / "episodes.sqlite3")
    episode = log.start(workspace="w", test="t", test_file=None, suspect_path=None, suspect_function=None,
                        task="Write total(n).", wrong_code=WRONG, feedback="boom", model="m")
    log.add_candidate(episode, 0, explanation="Adds n.", code="def total(n):\n    return n * (n + 1) // 2",
                      diff="", verified=True, pass_rate=1.0, reason="", round=1)
    log.set_outcome(episode, "accepted", 0)
    examples, stats = load_examples(KTOArgs(data=[str(data)], episodes=[str(tmp_path / "episodes.sqlite3")]))
    labels = sorted(e.label for e in examples)
    assert labels == [False, True, True], stats
    assert stats == {"desirable": 2, "undesirable": 1, "from_records": 2, "from_episodes": 1}


def test_two_kto_steps_without_sft(data, tmp_path):
    from ledex.training.kto import KTOArgs, train

    args = KTOArgs(data=[str(data)], output_dir=str(tmp_path / "kto"), max_steps=2, batch_size=2, max_length=256,
                   learning_rate=1e-3, progress=False, threads=2)
    metrics = train(args, cache_base=True)
    metrics.pop("trainer")
    assert metrics["steps"] == 2
    assert metrics["trainable_tensors_changed"] > 0
    assert (tmp_path / "kto" / "adapter" / "adapter_config.json").is_file()
