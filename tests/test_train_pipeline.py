"""ledex-train: mutations, collect, SFT, export, promotion (CPU, small, the real SmolLM2 135M).

Problems are written here (no ../shared needed). Tests that need llama.cpp skip when it is
missing or crashes on this CPU (probed in a subprocess so a crash cannot take pytest down).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ledex.training import records
from ledex.training.mutate import mutants

PROBLEMS = [
    {"id": "add", "prompt": "Write a function add(a, b) that returns the sum of a and b.",
     "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(5, 5) == 10"],
     "solution": "def add(a, b):\n    return a + b"},
    {"id": "even", "prompt": "Write a function is_even(n) that returns True when n is even.",
     "tests": ["assert is_even(2) == True", "assert is_even(3) == False", "assert is_even(0) == True"],
     "solution": "def is_even(n):\n    return n % 2 == 0"},
    {"id": "pos", "prompt": "Write a function count_pos(xs) that counts the numbers greater than 0 in xs.",
     "tests": ["assert count_pos([1, -2, 3]) == 2", "assert count_pos([0, 0]) == 0", "assert count_pos([]) == 0"],
     "solution": "def count_pos(xs):\n    n = 0\n    for x in xs:\n        if x > 0:\n            n += 1\n    return n"},
]


def _write_problems(path: Path, rows=PROBLEMS) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _llama_works() -> bool:
    probe = ("from llama_cpp import Llama\nfrom ledex.engine.models import default_model_path\n"
             "Llama(model_path=str(default_model_path()), n_ctx=128, verbose=False).create_completion('def', max_tokens=2)")
    try:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


LLAMA = _llama_works()
needs_llama = pytest.mark.skipif(not LLAMA, reason="llama.cpp missing or crashing on this CPU")


# --- mutations ----------------------------------------------------------------------------------


def test_mutants_change_one_spot_and_explain_it():
    found = mutants(PROBLEMS[2]["solution"], limit=5, seed=1)
    assert len(found) == 5 and len({m.code for m in found}) == 5
    for m in found:
        changed = [(a, b) for a, b in zip(m.original.splitlines(), m.code.splitlines()) if a != b]
        assert len(changed) == 1, m.code  # a minimal edit, same line numbers
        assert f"Line {m.line}" in m.explanation() and m.right in m.original
    assert mutants("def broken(:\n") == []


# --- collect --------------------------------------------------------------------------------------


def test_collect_records_carry_sandbox_verdicts(tmp_path):
    from ledex.engine.backends import ReplayBackend
    from ledex.training.collect import CollectConfig, run
    from ledex.training.records import initial_path

    wrong_first = "```python\ndef add(a, b):\n    return a * b\n```"
    teacher = ReplayBackend(["It subtracts instead of adding.\n```python\ndef add(a, b):\n    return a + b\n```",
                             "Hmm.\n```python\ndef add(a, b):\n    return a * b\n```"])
    config = CollectConfig(output=str(tmp_path / "d.jsonl"), problems=[str(_write_problems(tmp_path / "p.jsonl", PROBLEMS[:1]))],
                           split=None, samples=1, refinements=2, mutations=1, max_wrong=2)
    table = run(config, model=ReplayBackend([wrong_first]), teacher=teacher, progress=False)
    rows = list(records.read(tmp_path / "d.jsonl"))
    assert {r.origin for r in rows} == {"sampled", "mutation"}
    assert any(r.correct and r.teacher == "mutation-oracle" for r in rows)
    sampled = [r for r in rows if r.origin == "sampled"]
    assert {r.correct for r in sampled} == {True, False}  # success and failure trajectories both kept
    assert all("assert" in r.feedback and r.tests for r in rows)
    assert table["all"]["wrong_solutions"] == 2 and table["sampled"]["refine_rate"] == 1.0
    assert [r.origin for r in records.read(initial_path(tmp_path / "d.jsonl"))] == ["initial"]
    # resumable: a rerun reads the per-problem cache and asks no model
    again = run(config, model=ReplayBackend(["unused"]), teacher=ReplayBackend(["unused"]), progress=False)
    assert again["all"] == table["all"]


@pytest.mark.long  # ~30 s; collect's own path runs in test_collect_editor.py
@pytest.mark.slow
@needs_llama
def test_collect_with_the_real_default_model(tmp_path):
    from ledex.training.collect import CollectConfig, run

    config = CollectConfig(output=str(tmp_path / "d.jsonl"), problems=[str(_write_problems(tmp_path / "p.jsonl", PROBLEMS[1:3]))],
                           split=None, samples=1, refinements=1, mutations=1, max_wrong=1, max_tokens=96, threads=1)
    table = run(config, progress=False)
    rows = list(records.read(tmp_path / "d.jsonl"))
    assert rows and table["all"]["wrong_solutions"] >= 2
    for r in rows:
        assert r.teacher and r.wrong_code and r.feedback and isinstance(r.correct, bool) and 0.0 <= r.pass_rate <= 1.0
    assert any(r.teacher.startswith("SmolLM2") for r in rows)  # the model itself taught (self-bootstrap)


def test_collect_rejects_bad_input(tmp_path):
    from ledex.training.cli import main
    from ledex.training.collect import CollectConfig, CollectError, run

    with pytest.raises(CollectError, match="nothing to collect"):
        run(CollectConfig(output=str(tmp_path / "d.jsonl")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "tests": ["assert 1"]}\n{"prompt": \n', encoding="utf-8")
    assert main(["collect", "--problems", str(bad), "--output", str(tmp_path / "d.jsonl")]) == 2
    assert main(["collect", "--feedback-log", str(tmp_path / "none.sqlite3"), "--output", str(tmp_path / "d.jsonl")]) == 2
    assert main(["collect", "--problems", "humaneval", "--output", str(tmp_path / "d.jsonl")]) == 2
    assert not (tmp_path / "d.jsonl").exists()


def test_collect_reads_the_feedback_log(tmp_path):
    from ledex.engine.episodes import EpisodeLog
    from ledex.training.collect import episode_trajectories

    log = EpisodeLog(tmp_path / "episodes.sqlite3")
    kwargs = dict(workspace=str(tmp_path), test="t::test_add", test_file="t.py", suspect_path="m.py",
                  suspect_function="add", task="test_add fails", wrong_code="def add(a, b):\n    return a - b",
                  feedback="AssertionError", model="m")
    try:
        accepted = log.start(**kwargs)
        rejected = log.start(**kwargs)
    except TypeError:
        pytest.skip("EpisodeLog.start signature changed")
    for episode in (accepted, rejected):
        log.add_candidate(episode, 0, explanation="It subtracts.", code="def add(a, b):\n    return a + b",
                          diff="", verified=True, pass_rate=1.0, reason="", round=1)
    log.set_outcome(accepted, "accepted", 0)
    log.set_outcome(rejected, "rejected")
    rows = episode_trajectories(str(tmp_path / "episodes.sqlite3"))
    assert sorted((r.origin, r.correct) for r in rows) == [("accepted", True), ("rejected", False)]


# --- SFT, export, llama.cpp -----------------------------------------------------------------------


def _sft_data(tmp_path: Path, name: str = "sft.jsonl", seed: int = 0, per_problem: int = 2) -> Path:
    rows = []
    for p in PROBLEMS:
        for m in mutants(p["solution"], limit=per_problem, seed=seed):
            rows.append(records.Trajectory(p["id"], p["prompt"], m.code, f"{p['tests'][0]}\nAssertionError",
                                           m.explanation(), m.original, True, 1.0, origin="mutation"))
    path = tmp_path / name
    records.write(path, rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"source": "cut off mid-line\n')  # a corrupt row: skipped and reported, not fatal
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from ledex.training.sft import SFTArgs, train

    tmp = tmp_path_factory.mktemp("sft")
    # bf16 autocast over fp32 weights, as `sft` uses by default on a CPU with avx512_bf16.
    # Held-back examples: other mutants of the same problems (the loss measured at steps 0, 2 and 3).
    held_back = _sft_data(tmp, "held-back.jsonl", seed=7, per_problem=1)
    args = SFTArgs(data=[str(_sft_data(tmp))], eval_data=[str(held_back)], output_dir=str(tmp / "run"), max_steps=3,
                   batch_size=2, grad_accum=1, max_examples=2,
                   learning_rate=2e-3, logging_steps=1, max_length=320, save_steps=2, progress=False, warmup_ratio=0.0,
                   bf16=True)
    return args, train(args)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the fixture's 3 steps: ~1 min on an idle 2-core box, 6 min at load 20
def test_sft_loss_falls_and_adapter_changes(trained):
    args, metrics = trained
    written = sum(1 for line in Path(args.data[0]).read_text().splitlines() if line.strip()) - 1  # minus the corrupt one
    assert metrics["bad_lines"] == 1 and metrics["records"] == written >= 5 and metrics["examples"] == 2
    assert metrics["bf16"] is True and metrics["resumed_from"] is None
    assert metrics["losses"][-1] < metrics["losses"][0]
    assert metrics["trainable_tensors"] > 0 and metrics["trainable_tensors_changed"] == metrics["trainable_tensors"]
    assert (Path(args.output_dir) / "adapter" / "adapter_model.safetensors").is_file()
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_mb"] > 0
    assert Path(metrics["loss_plot"]).read_bytes()[:4] == b"\x89PNG"
    # --eval-data: held-back loss before training, at the checkpoint (save_steps=2) and after the last step
    held = metrics["eval_losses"]
    assert metrics["eval_examples"] == 3 and [h["step"] for h in held] == [0, 2, 3]
    assert held[-1]["loss"] < held[0]["loss"]  # learned something that carries to examples never trained on
    saved = json.loads((Path(args.output_dir) / "ledex-sft.json").read_text())
    assert saved["eval_losses"] == held


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sft_resumes_from_its_latest_checkpoint(trained):
    import dataclasses

    from ledex.training.sft import train

    args, first = trained
    # Checkpoints 4 and 5 rotate checkpoint-3 away (save_total_limit=2) while it is the one resumed from.
    more = train(dataclasses.replace(args, max_steps=5, save_steps=1))
    assert more["resumed_from"] is not None and more["resumed_from"].endswith("checkpoint-3")
    assert not Path(more["resumed_from"]).exists()
    assert more["steps"] == 5 and len(more["losses"]) == 5  # the log of the first 3 steps came back with it
    assert more["losses"][:3] == pytest.approx(first["losses"])
    assert 0 < more["tokens_seen"] < first["tokens_seen"]  # two steps of two examples, not five steps
    # held-back loss: steps 0, 2 and 3 came back with checkpoint-3's log; 4 and 5 measured now (eval_steps = save_steps)
    assert [h["step"] for h in more["eval_losses"]] == [0, 2, 3, 4, 5]
    assert more["eval_losses"][:3] == first["eval_losses"]


def test_split_holds_back_whole_functions_the_same_way_every_time(tmp_path):
    from ledex.training.cli import main
    from ledex.training.split import held_back

    rows = [records.Trajectory(f"mbpp/{n}:f{n}.py:f{n}", "t", f"w{n}-{k}", "fb", "e", "c", True, 1.0)
            for n in range(40) for k in range(2)]  # two bugs per function
    data = tmp_path / "all.jsonl"
    records.write(data, rows)
    with open(data, "a", encoding="utf-8") as handle:
        handle.write("not json\n")
    train, back = tmp_path / "t.jsonl", tmp_path / "h.jsonl"
    assert main(["split", str(data), "--train", str(train), "--held-back-file", str(back)]) == 0
    kept = {r.source for r in records.read(train)}
    held = {r.source for r in records.read(back)}
    assert not kept & held and len(kept | held) == 40 and len(list(records.read(back))) == 2 * len(held)
    assert held == {r.source for r in rows if held_back(r.source)} and 0 < len(held) < 10
    again = tmp_path / "h2.jsonl"
    records.write(data, rows[::-1])  # another order: the same functions held back
    assert main(["split", str(data), "--train", str(tmp_path / "t2.jsonl"), "--held-back-file", str(again)]) == 0
    assert {r.source for r in records.read(again)} == held
    assert main(["split", str(data), "--train", str(train), "--held-back-file", str(back), "--held-back", "0"]) == 2


def test_sft_bad_input(tmp_path):
    from ledex.training.core import TrainingError
    from ledex.training.sft import SFTArgs, SFTError, train

    with pytest.raises(SFTError, match="no training data"):
        train(SFTArgs())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(SFTError, match="no usable training examples"):
        train(SFTArgs(data=[str(empty)], model="default"))
    with pytest.raises(TrainingError, match="base model"):
        train(SFTArgs(data=[str(_sft_data(tmp_path))], model=str(tmp_path / "missing.gguf")))


def test_training_tokens_match_what_the_server_sees():
    from ledex.engine.format import Problem, build_training_messages
    from ledex.training.core import load_tokenizer, split_prompt
    from ledex.training.sft import tokenize_example

    tokenizer, fmt = load_tokenizer("default")
    messages = build_training_messages(Problem("Write add.", "def add(a, b):\n    return a - b", "AssertionError"),
                                       "It subtracts.", "def add(a, b):\n    return a + b")
    prompt, completion = split_prompt(messages, fmt)
    assert prompt.endswith("<|im_start|>assistant\n") and completion.endswith("```<|im_end|>")
    assert "return a - b" not in completion  # no loss on the wrong-code turn
    example = tokenize_example(tokenizer, fmt, messages)
    n_prompt = example["completion_mask"].index(1)
    if LLAMA:
        from ledex.engine.backends import load_backend

        served = load_backend("default", n_ctx=512).tokenize(prompt)
        assert example["input_ids"][:n_prompt] == served


def _random_adapter(tmp: Path) -> Path:
    """A PEFT adapter with random A and B (a big, easily seen delta) on q/k/v/o/down."""
    import torch
    from peft import LoraConfig, get_peft_model

    from ledex.training.core import load_model

    torch.manual_seed(0)
    model = get_peft_model(load_model("default"), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.2)
    model.save_pretrained(tmp / "random")
    return tmp / "random"


def _llama_logits(adapter, tokens):
    from llama_cpp import Llama

    from ledex.engine.models import default_model_path

    llm = Llama(model_path=str(default_model_path()), lora_path=adapter, n_ctx=256, verbose=False, logits_all=True)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)])


@pytest.mark.slow
@needs_llama
def test_export_matches_peft_in_llama_cpp(tmp_path):
    """The adapter's effect in llama.cpp equals its effect in PEFT (names, shapes, q/k permutation)."""
    import torch
    from peft import PeftModel

    from ledex.training.export import ExportArgs, export
    from ledex.training.core import load_model, load_tokenizer

    adapter_dir = _random_adapter(tmp_path)
    out = export(ExportArgs(adapter_dir=str(adapter_dir), output=str(tmp_path / "a.gguf")))
    tokens = load_tokenizer("default")[0]("def add(a, b):\n    return a + b\n", add_special_tokens=False)["input_ids"]
    base, tuned = _llama_logits(None, tokens), _llama_logits(out["output"], tokens)
    with torch.no_grad():
        hf_base = load_model("default")(torch.tensor([tokens])).logits[0].numpy()
        hf_tuned = PeftModel.from_pretrained(load_model("default"), str(adapter_dir))(torch.tensor([tokens])).logits[0].numpy()
    d_llama, d_hf = (tuned - base).ravel(), (hf_tuned - hf_base).ravel()
    assert np.abs(d_llama).mean() > 0.1  # the adapter does something
    cosine = d_llama @ d_hf / (np.linalg.norm(d_llama) * np.linalg.norm(d_hf))
    assert cosine > 0.9, cosine  # a wrong q/k permutation or name map gives ~0


@pytest.mark.slow
@needs_llama
def test_trained_adapter_loads_and_changes_output(trained, tmp_path):
    from ledex.training.export import ExportArgs, export
    from ledex.training.core import load_tokenizer

    args, _ = trained
    out = export(ExportArgs(adapter_dir=str(Path(args.output_dir) / "adapter"), output=str(tmp_path / "t.gguf")))
    tokens = load_tokenizer("default")[0]("Line 2 is off by one", add_special_tokens=False)["input_ids"]
    assert np.abs(_llama_logits(out["output"], tokens) - _llama_logits(None, tokens)).max() > 1e-3


def test_export_full_disk_leaves_nothing(tmp_path, monkeypatch):
    import gguf

    from ledex.training.export import ExportError, write_adapter

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full)
    tensors = {"blk.0.attn_q.weight.lora_a": np.ones((4, 8), np.float32), "blk.0.attn_q.weight.lora_b": np.ones((8, 4), np.float32)}
    with pytest.raises(ExportError, match="No space left"):
        write_adapter(tensors, 8.0, "llama", tmp_path / "out.gguf")
    assert list(tmp_path.iterdir()) == []


# --- promotion --------------------------------------------------------------------------------------


def _fake_adapter(path: Path, seed: int, rows: int = 256) -> Path:
    from ledex.training.export import write_adapter

    rng = np.random.default_rng(seed)
    tensors = {}
    for block in range(8):  # a few MB: copying it takes long enough to be killed mid-way
        tensors[f"blk.{block}.attn_q.weight.lora_a"] = rng.standard_normal((rows, 576), dtype=np.float32)
        tensors[f"blk.{block}.attn_q.weight.lora_b"] = rng.standard_normal((576, rows), dtype=np.float32)
    return write_adapter(tensors, 8.0, "llama", path)


def test_promote_gate_and_rollback(tmp_path, monkeypatch):
    from ledex.engine import registry
    from ledex.training import promote as p

    home = tmp_path / "home"
    a, b, c = (_fake_adapter(tmp_path / f"{n}.gguf", i, rows=4) for i, n in enumerate("abc"))
    first = p.promote(a, home=home)
    second = p.promote(b, home=home)
    assert registry.current(home)["version"] == second["version"] == first["version"] + 1
    monkeypatch.setattr(p, "run_gate", lambda *a, **k: {"passed": False, "candidate": {"rate": 0.1},
                                                          "current": {"rate": 0.2, "cases": 10}})
    with pytest.raises(p.PromotionError, match="gate failed"):
        p.promote(c, home=home, gate=p.GateArgs(problems="x"))
    assert registry.current(home)["adapter"] == second["adapter"]  # the worse model never went into service
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(Path(c).read_bytes()[:1000])  # a truncated file
    with pytest.raises(p.PromotionError):
        p.promote(bad, home=home)
    assert p.rollback(home)["adapter"] == first["adapter"]
    assert registry.current(home)["adapter"] == first["adapter"]
    assert p.rollback(home) is None and registry.current(home) is None  # back to the shipped/plain model
    with pytest.raises(p.PromotionError, match="nothing to roll back"):
        p.rollback(home)


def test_promote_dry_run_measures_and_installs_nothing(tmp_path, monkeypatch, capsys):
    from ledex.engine import registry
    from ledex.training import promote as p
    from ledex.training.cli import main

    monkeypatch.setenv("LEDEX_HOME", str(tmp_path / "home"))
    seen = {}

    def gate(candidate, args, base, current):
        seen.update(current=current, split=args.split, samples=args.samples)
        return {"passed": True, "candidate": {"rate": 0.3}, "current": {"rate": 0.1, "cases": 10}}

    monkeypatch.setattr(p, "run_gate", gate)
    adapter = _fake_adapter(tmp_path / "a.gguf", 0, rows=4)
    assert main(["promote", str(adapter), "--problems", "x", "--split", "test", "--samples", "0",
                 "--dry-run", "--against", "base"]) == 0
    assert json.loads(capsys.readouterr().out)["candidate"]["rate"] == 0.3
    assert seen == {"current": None, "split": "test", "samples": 0}
    assert registry.current(tmp_path / "home") is None and not (tmp_path / "home").exists()


PROMOTE_LOOP = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ledex.training.promote import promote
    home, adapters = Path(sys.argv[1]), sys.argv[2:]
    print("ready", flush=True)
    while True:
        for adapter in adapters:
            promote(adapter, home=home)
""")


@pytest.mark.slow
def test_promotion_is_atomic_when_killed(tmp_path):
    from ledex.engine import registry
    from ledex.engine.models import file_hash
    from ledex.training.export import check_adapter

    home = tmp_path / "home"
    adapters = [str(_fake_adapter(tmp_path / f"a{i}.gguf", i)) for i in range(2)]
    rng = np.random.default_rng(0)
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", PROMOTE_LOOP, str(home), *adapters], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.5, 4.0)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        record = registry.current(home)
        if record is None:
            continue
        assert file_hash(record["adapter"]) == record["adapter_hash"]  # never a half-written adapter in service
        check_adapter(record["adapter"])
    assert registry.current(home) is not None
    for installed in (home / "models" / "adapters").glob("v*.gguf"):
        check_adapter(installed)  # final names only ever hold complete files
