"""LoRA fine-tuning on the tiny model: steps, pause/resume, divergence, reuse, validation."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from leantune.errors import LeantuneError
from leantune.tasks.base import TextExample
from leantune.train import FinetuneConfig, finetune, latest_checkpoint, load_finetuned
from leantune.train.config import FinetuneResult
from leantune.train.data import IGNORE_INDEX, tokenize_example

EXAMPLES = [
    TextExample(f"### Input:\nThe user bought game {i}.\n\n### Response:\n", f"Game number {i + 1}", str(i))
    for i in range(10)
]
VALID = EXAMPLES[:3]


def small_cfg(**kw) -> FinetuneConfig:
    base = dict(batch_size=4, micro_batch_size=2, epochs=2, lr=1e-3, eval_every=1, device="cpu")
    base.update(kw)
    return FinetuneConfig(**base)


def adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def tokenizer():
    from leantune.models.llm import load_tokenizer

    return load_tokenizer("tiny")


def test_tokenize_appends_eos_and_masks_prompt(tokenizer):
    ex = EXAMPLES[0]
    full = tokenize_example(tokenizer, ex, cutoff_len=512, train_on_inputs=True)
    assert full["input_ids"][-1] == tokenizer.eos_token_id
    assert full["labels"] == full["input_ids"]
    masked = tokenize_example(tokenizer, ex, cutoff_len=512, train_on_inputs=False)
    n_prompt = len(tokenizer(ex.prompt)["input_ids"])
    assert masked["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert masked["labels"][n_prompt:] == full["input_ids"][n_prompt:]
    cut = tokenize_example(tokenizer, ex, cutoff_len=8)
    assert len(cut["input_ids"]) == 8  # no room left for EOS: the text is cut, as the reference does


def test_tokenize_keeps_the_prompt_tokens_generation_sees_when_the_boundary_merges(tokenizer):
    """A prompt ending in a space ("Answer: ", the plain prompt without a chat template) merges with the
    answer's first token in the full text (" Alpine"); training must start from the prompt's own tokens,
    as generation does, and put loss on every answer token, the first one included."""
    ex = TextExample("Title: Alpine Start Coffee\nAnswer: ", "Alpine Start", "q")
    prompt_ids = tokenizer(ex.prompt)["input_ids"]
    joint = tokenizer(ex.prompt + ex.response)["input_ids"]
    assert joint[: len(prompt_ids)] != prompt_ids  # the case this guards: the trailing space merged into the answer
    out = tokenize_example(tokenizer, ex, cutoff_len=512, train_on_inputs=False)
    answer = tokenizer(ex.response, add_special_tokens=False)["input_ids"]
    assert out["input_ids"] == prompt_ids + answer + [tokenizer.eos_token_id]
    assert out["labels"] == [IGNORE_INDEX] * len(prompt_ids) + answer + [tokenizer.eos_token_id]
    # A boundary that does not merge (a chat template's newline) keeps the one tokenisation of the full text.
    plain = TextExample("Title: Alpine Start Coffee\nAnswer:\n", "Alpine Start", "q")
    assert tokenize_example(tokenizer, plain, cutoff_len=512)["input_ids"][:-1] == tokenizer(plain.prompt + plain.response)["input_ids"]


def test_pause_then_resume_matches_one_run(tmp_path):
    cfg = small_cfg()
    one = finetune("tiny", EXAMPLES, VALID, tmp_path / "one", cfg, progress=False)
    assert one.status == "finished"
    assert one.steps == one.total_steps == cfg.total_steps(len(EXAMPLES)) == 6  # ceil(5 micro / 2) per epoch
    assert one.tokens_seen > 0 and one.best_valid_loss is not None
    assert [h["step"] for h in one.history] == list(range(1, 7))

    part = finetune("tiny", EXAMPLES, VALID, tmp_path / "two", cfg, stop_after_fraction=0.5, progress=False)
    assert part.status == "paused" and part.steps == 3 and part.total_steps == 6
    assert latest_checkpoint(tmp_path / "two" / "checkpoints").name == "checkpoint-3"
    rest = finetune("tiny", EXAMPLES, VALID, tmp_path / "two", cfg, progress=False)
    assert rest.status == "finished" and rest.steps == one.steps
    assert [h["step"] for h in rest.history] == list(range(1, 7))
    # Same schedule, data order and dropout draws: the resumed run ends where the single run does.
    for step in range(6):
        assert rest.history[step]["train_loss"] == pytest.approx(one.history[step]["train_loss"], rel=1e-4)
    a, b = adapter_tensors(one.adapter_dir), adapter_tensors(rest.adapter_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max().item() < 1e-5

    # A finished folder is reused, not retrained.
    mtime = (rest.adapter_dir / "adapter_model.safetensors").stat().st_mtime_ns
    again = finetune("tiny", EXAMPLES, VALID, tmp_path / "two", cfg, progress=False)
    assert again.status == "finished" and again.steps == 6
    assert (rest.adapter_dir / "adapter_model.safetensors").stat().st_mtime_ns == mtime

    model, _ = load_finetuned("tiny", one.adapter_dir)
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_the_progress_bar_counts_to_where_the_run_stops_and_names_the_schedule(tmp_path, capsys):
    cfg = small_cfg()
    finetune("tiny", EXAMPLES, VALID, tmp_path / "run", cfg, stop_after_fraction=0.5, progress=True)
    first = capsys.readouterr().err
    assert "fine-tune (to step 3 of 6)" in first and "3/3" in first and "/6" not in first
    finetune("tiny", EXAMPLES, VALID, tmp_path / "run", cfg, progress=True)
    rest = capsys.readouterr().err
    assert "fine-tune:" in rest and "6/6" in rest and "to step" not in rest


def test_interrupted_run_resumed_from_a_checkpoint_reports_the_time_of_both_sittings(tmp_path):
    """A run killed after a checkpoint (no result.json) and run again resumes there; its ``wall_s``
    counts the first sitting's seconds up to that checkpoint (``wall.json`` in it), not only the second's."""
    import time

    from transformers import TrainerCallback

    from leantune.device import machine_summary
    from leantune.train.callbacks import checkpoint_sittings, checkpoint_wall

    class SlowThenKilled(TrainerCallback):  # 2 s steps, each checkpointed; killed as the third begins
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step >= 2:
                raise KeyboardInterrupt

        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(2.0)

    out, cfg = tmp_path / "run", small_cfg()
    with pytest.raises(KeyboardInterrupt):
        finetune("tiny", EXAMPLES, VALID, out, cfg, progress=False, callbacks=[SlowThenKilled()])
    assert not (out / "result.json").exists()
    checkpoint = latest_checkpoint(out / "checkpoints")
    first = checkpoint_wall(checkpoint)
    assert checkpoint.name == "checkpoint-2" and first >= 4.0
    assert [(s["from_step"], s["to_step"]) for s in checkpoint_sittings(checkpoint)] == [(0, 2)]
    start = time.perf_counter()
    rest = finetune("tiny", EXAMPLES, VALID, out, cfg, progress=False)
    second = time.perf_counter() - start
    assert rest.status == "finished" and rest.steps == 6
    assert rest.wall_s > second and rest.wall_s >= first
    # ... and says what each sitting trained on, over which steps, in how many seconds
    assert [(s["machine"], s["from_step"], s["to_step"]) for s in rest.sittings] == [(machine_summary("cpu"), 0, 2),
                                                                                     (machine_summary("cpu"), 2, 6)]
    assert rest.sittings[0]["wall_s"] == pytest.approx(first, abs=0.01)
    assert sum(s["wall_s"] for s in rest.sittings) == pytest.approx(rest.wall_s, abs=0.05)
    assert json.loads((out / "result.json").read_text())["sittings"] == rest.sittings
    assert rest.time_summary() == f"{rest.wall_s:.0f} s over 2 sittings"


def test_sittings_from_before_they_were_recorded_count_as_one_on_an_unrecorded_machine(tmp_path):
    from leantune.train.callbacks import WALL_FILE, checkpoint_sittings
    from leantune.train.config import FinetuneResult
    from leantune.train.lora import _result_sittings

    old = tmp_path / "checkpoint-40"
    old.mkdir()
    assert checkpoint_sittings(old) == []  # nothing recorded at all
    (old / WALL_FILE).write_text(json.dumps({"wall_s": 120.5}))
    assert checkpoint_sittings(old) == [{"machine": "", "from_step": 0, "to_step": 40, "wall_s": 120.5}]
    paused = FinetuneResult.from_dict({"adapter_dir": None, "status": "paused", "steps": 40, "total_steps": 200,
                                       "tokens_seen": 0, "wall_s": 120.5, "machine": "CPU B, 1 thread"})
    assert paused.sittings == []  # a result.json from before the field
    assert _result_sittings(paused) == [{"machine": "", "from_step": 0, "to_step": 40, "wall_s": 120.5}]
    assert _result_sittings(None) == []
    assert paused.time_summary() == "120 s"  # no sittings recorded: the seconds alone


def test_injected_nan_stops_as_diverged_and_keeps_last_good_checkpoint(tmp_path):
    import torch
    from transformers import TrainerCallback

    class PoisonAfterStep2(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if "lora_B" in name:
                            p.fill_(float("nan"))

    result = finetune("tiny", EXAMPLES, VALID, tmp_path / "nan", small_cfg(), progress=False, callbacks=[PoisonAfterStep2()])
    assert result.status == "diverged"
    assert "non-finite" in result.reason
    assert result.steps == 2  # the step-2 validation saw the NaN, before step 2 was checkpointed
    assert latest_checkpoint(tmp_path / "nan" / "checkpoints").name == "checkpoint-1"
    kept = adapter_tensors(result.adapter_dir)
    good = adapter_tensors(tmp_path / "nan" / "checkpoints" / "checkpoint-1")
    assert all(torch.isfinite(t).all() for t in kept.values())
    assert all(torch.equal(kept[k], good[k]) for k in good)
    from leantune.train import load_training_record

    assert load_training_record(result.adapter_dir) == {"model": "tiny", "seed": 0}  # the kept adapter says what trained it
    saved = json.loads((tmp_path / "nan" / "result.json").read_text())
    assert saved["status"] == "diverged"
    from leantune.device import machine_summary

    assert saved["machine"] == result.machine == machine_summary("cpu")  # what the timing (wall_s) ran on


def test_finite_weights_check_names_the_first_non_finite_trainable_tensor_and_skips_frozen_ones():
    from types import SimpleNamespace

    from leantune.train.callbacks import DivergedError, FiniteWeightsCallback

    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    net[0].requires_grad_(False)
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")  # frozen: not the run's weights to check
    check, state = FiniteWeightsCallback(), SimpleNamespace(global_step=7)
    check.on_step_end(None, state, None, model=net)  # every trainable tensor finite: no error
    with torch.no_grad():
        net[2].bias[1] = float("inf")
        net[1].weight[2, 0] = float("nan")
    with pytest.raises(DivergedError, match=r"non-finite weights in 1\.weight after step 7"):
        check.on_step_end(None, state, None, model=net)


def test_a_result_with_non_finite_losses_round_trips_through_strict_json(tmp_path):
    from leantune.io import read_json, write_json

    history = [{"epoch": 0.5, "step": 1, "train_loss": 2.5, "valid_loss": 2.4},
               {"epoch": 1.0, "step": 2, "train_loss": float("nan"), "valid_loss": float("inf")}]
    result = FinetuneResult(adapter_dir=tmp_path / "adapter", status="diverged", steps=2, total_steps=4, tokens_seen=10,
                            history=history, best_valid_loss=2.4, wall_s=1.5, reason="non-finite loss")
    write_json(tmp_path / "result.json", result.to_dict())
    assert '"train_loss": "nan"' in (tmp_path / "result.json").read_text()  # strict JSON, no NaN token
    back = FinetuneResult.from_dict(read_json(tmp_path / "result.json"))
    assert math.isnan(back.history[1]["train_loss"]) and back.history[1]["valid_loss"] == math.inf
    assert back.history[0] == history[0] and back.best_valid_loss == 2.4 and back.adapter_dir == tmp_path / "adapter"


def test_nan_training_loss_without_validation_is_caught_before_the_step(tmp_path):
    """(A huge learning rate does not make this tiny Llama's loss NaN — RMSNorm keeps it finite —
    so the NaN is injected: weights poisoned at the start of step 3 make step 3's loss NaN.)"""
    import torch
    from transformers import TrainerCallback

    class PoisonBeforeStep3(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                with torch.no_grad():
                    next(p for n, p in model.named_parameters() if "lora_A" in n).fill_(float("nan"))

    result = finetune("tiny", EXAMPLES, None, tmp_path / "loss", small_cfg(max_steps=6), progress=False,
                      callbacks=[PoisonBeforeStep3()])
    assert result.status == "diverged"
    assert "non-finite training loss" in result.reason and "step 3" in result.reason
    assert latest_checkpoint(tmp_path / "loss" / "checkpoints").name == "checkpoint-2"
    assert all(torch.isfinite(t).all() for t in adapter_tensors(result.adapter_dir).values())


def test_folder_with_other_settings_is_refused(tmp_path):
    cfg = small_cfg(max_steps=1)
    finetune("tiny", EXAMPLES, None, tmp_path / "f", cfg, progress=False)
    with pytest.raises(LeantuneError, match="other settings.*config.lr"):
        finetune("tiny", EXAMPLES, None, tmp_path / "f", small_cfg(max_steps=1, lr=5e-4), progress=False)
    with pytest.raises(LeantuneError, match="train"):
        finetune("tiny", EXAMPLES[:5], None, tmp_path / "f", cfg, progress=False)


def test_config_validation_and_schedule():
    with pytest.raises(LeantuneError, match="lr must be positive"):
        FinetuneConfig(lr=0)
    for bad in ({"lr": float("inf")}, {"alpha": float("inf")}):
        with pytest.raises(LeantuneError, match="lr and alpha must be finite"):
            FinetuneConfig(**bad)
    with pytest.raises(LeantuneError, match="unknown keys"):
        FinetuneConfig.from_dict({"rank": 4})
    cfg = FinetuneConfig()  # the reference recipe
    assert (cfg.r, cfg.alpha, cfg.dropout, cfg.target_modules) == (8, 16, 0.05, ("q_proj", "v_proj"))
    assert (cfg.lr, cfg.batch_size, cfg.cutoff_len, cfg.train_on_inputs, cfg.early_stopping_patience) == (1e-4, 128, 512, True, 5)
    assert cfg.accumulation == 32
    assert cfg.steps_per_epoch(1024) == 8 and cfg.total_steps(1024) == 400
    assert cfg.steps_per_epoch(64) == 1  # fewer examples than one batch: one (smaller) step per epoch
    assert FinetuneConfig(epochs=0.5).total_steps(1024) == 4
    assert FinetuneConfig.from_dict(cfg.to_dict()) == cfg
    assert math.isclose(FinetuneConfig(max_steps=7).total_steps(10), 7)


def test_target_modules_one_parser_for_every_finetune_command():
    from leantune.errors import LeantuneError
    from leantune.train import ALL_LINEAR, parse_target_modules

    assert parse_target_modules("q_proj, v_proj") == ("q_proj", "v_proj")
    assert parse_target_modules(" all ") == ALL_LINEAR and len(ALL_LINEAR) == 7
    with pytest.raises(LeantuneError, match="^target_modules ' , ': name at least one module"):
        parse_target_modules(" , ")


def test_answer_only_logits_give_the_full_loss_and_gradient(tokenizer):
    """Logits only at scored positions: same loss and LoRA gradient as logits everywhere, with the mean
    and with the gradient-accumulation sum (num_items_in_batch), on a right-padded batch."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq

    from leantune.models.llm import load_model
    from leantune.train.callbacks import accepts_logits_to_keep, answer_only_logits

    model, tok = load_model("tiny", dtype="float32", device="cpu")
    tok.padding_side = "right"
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    assert accepts_logits_to_keep(model)

    class OwnForward(torch.nn.Module):  # takes the argument but does not slice with transformers' helper
        def forward(self, input_ids, logits_to_keep=0, **kwargs):
            return None

    assert not accepts_logits_to_keep(OwnForward())  # such a model trains with logits everywhere
    rows = [tokenize_example(tok, ex, cutoff_len=512, train_on_inputs=False) for ex in (EXAMPLES[0], EXAMPLES[5], VALID[2])]
    rows[1]["input_ids"] += tok("and a longer answer", add_special_tokens=False)["input_ids"]
    rows[1]["labels"] = rows[1]["labels"] + rows[1]["input_ids"][len(rows[1]["labels"]):]
    rows[1]["attention_mask"] = [1] * len(rows[1]["input_ids"])
    batch = DataCollatorForSeq2Seq(tok, padding=True, return_tensors="pt")(rows)
    scored = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert 0 < scored < batch["labels"].numel() // 2

    def loss_and_grads(inputs, **kw):
        model.zero_grad()
        out = model(**inputs, **kw)
        out.loss.backward()
        return out, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    for kw in ({}, {"num_items_in_batch": torch.tensor(scored + 5)}):
        full, g_full = loss_and_grads(batch, **kw)
        part, g_part = loss_and_grads(answer_only_logits(batch), **kw)
        assert part.logits.shape == (scored, full.logits.shape[-1])  # one row per scored position
        assert part.loss.item() == pytest.approx(full.loss.item(), rel=1e-5)
        for a, b in zip(g_full, g_part):
            assert torch.allclose(a, b, atol=1e-6)
    no_labels = {k: v for k, v in batch.items() if k != "labels"}
    assert answer_only_logits(no_labels) is no_labels


def test_training_uses_answer_only_logits_and_learns_the_same(tmp_path, monkeypatch):
    """The Trainer path: with the loss on answers only, fine-tuning computes logits at scored positions
    only, and its losses and adapter match a run that computes logits everywhere."""
    from leantune.train import callbacks

    cfg = small_cfg(epochs=1, train_on_inputs=False, dropout=0.0)
    calls = []
    original = callbacks.answer_only_logits
    monkeypatch.setattr(callbacks, "answer_only_logits", lambda inputs: calls.append(1) or original(inputs))
    fast = finetune("tiny", EXAMPLES, VALID, tmp_path / "fast", cfg, progress=False)
    assert calls, "the trainer did not ask for answer-only logits"
    monkeypatch.setattr(callbacks, "accepts_logits_to_keep", lambda model: False)
    calls.clear()
    full = finetune("tiny", EXAMPLES, VALID, tmp_path / "full", cfg, progress=False)
    assert not calls
    assert [h["train_loss"] for h in fast.history] == pytest.approx([h["train_loss"] for h in full.history], rel=1e-4)
    assert fast.best_valid_loss == pytest.approx(full.best_valid_loss, rel=1e-4)
    a, b = adapter_tensors(fast.adapter_dir), adapter_tensors(full.adapter_dir)
    for key in a:
        assert (a[key] - b[key]).abs().max().item() < 1e-5


def test_two_cpu_processes_train_the_adapter_one_process_trains(tmp_path):
    """``processes=2``: DDP over gloo on this CPU, each rank half of every step's micro-batches; the
    steps, losses and adapter are those of one process, and only rank 0 writes."""
    from safetensors.torch import load_file

    train = [TextExample(f"question: {i}+{i}?", str(2 * i), str(i)) for i in range(24)]
    results = {}
    for n in (1, 2):
        cfg = FinetuneConfig(batch_size=8, micro_batch_size=2, max_steps=3, lr=1e-3, dropout=0.0, processes=n,
                             device="cpu", train_on_inputs=False, eval_every=2)
        results[n] = finetune("tiny", train, None, tmp_path / f"p{n}", cfg, progress=False)
    one, two = results[1], results[2]
    assert two.status == "finished" and two.steps == one.steps == 3 and two.tokens_seen == one.tokens_seen
    assert [h["train_loss"] for h in two.history] == pytest.approx([h["train_loss"] for h in one.history], abs=1e-5)
    a, b = load_file(one.adapter_dir / "adapter_model.safetensors"), load_file(two.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
    checkpoint = latest_checkpoint(tmp_path / "p2" / "checkpoints")
    assert (checkpoint / "wall.json").exists() and (checkpoint / "rng_state_1.pth").exists()
    # A finished multi-process run is read back like any other; the process count is not a training setting.
    again = finetune("tiny", train, None, tmp_path / "p2", FinetuneConfig(
        batch_size=8, micro_batch_size=2, max_steps=3, lr=1e-3, dropout=0.0, processes=1, device="cpu",
        train_on_inputs=False, eval_every=2), progress=False)
    assert again.steps == 3 and again.wall_s == two.wall_s


def test_processes_must_divide_a_step_and_train_on_the_cpu_without_callbacks(tmp_path):
    with pytest.raises(LeantuneError, match="processes 3 must divide the 2 micro-batches"):
        FinetuneConfig(batch_size=8, micro_batch_size=4, processes=3)
    with pytest.raises(LeantuneError, match="processes must be at least 1"):
        FinetuneConfig(processes=0)
    train = [TextExample("q: 1?", "1", "a")]
    cfg = FinetuneConfig(batch_size=2, micro_batch_size=1, max_steps=1, processes=2, device="cpu")
    with pytest.raises(LeantuneError, match="processes.*callbacks"):
        finetune("tiny", train, None, tmp_path / "run", cfg, progress=False, callbacks=[object()])
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_run_trains_the_same_adapter_whether_or_not_the_model_was_cached(tmp_path, monkeypatch):
    """Building the tiny model draws random numbers; it happens before the run is seeded, so the first
    run on a fresh cache initialises LoRA as every later run does."""
    from safetensors.torch import load_file

    monkeypatch.setenv("LEANTUNE_HOME", str(tmp_path / "home"))
    train = [TextExample(f"question: {i}+{i}?", str(2 * i), str(i)) for i in range(8)]
    cfg = FinetuneConfig(batch_size=4, micro_batch_size=2, max_steps=2, lr=1e-3, dropout=0.0, device="cpu")
    first = finetune("tiny", train, None, tmp_path / "first", cfg, progress=False)  # builds the model
    second = finetune("tiny", train, None, tmp_path / "second", cfg, progress=False)  # loads it
    a, b = (load_file(r.adapter_dir / "adapter_model.safetensors") for r in (first, second))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _finite_rank(rank: int, out: str) -> None:
    # A file store, not a TCP one: with TCP, rank 0 hosts the store and, leaving first, could pull it from under
    # rank 1's teardown (one SIGABRT, "terminate called without an active exception", in about ten CI runs).
    torch.distributed.init_process_group("gloo", init_method=f"file://{Path(out) / 'store'}", rank=rank, world_size=2)
    from leantune.train.callbacks import _finite_everywhere

    try:
        verdict = _finite_everywhere(torch.tensor(float("nan") if rank == 1 else 1.0))
        (Path(out) / f"rank{rank}").write_text(str(verdict))
        # Both ranks finish their collectives before either tears gloo down: a rank that destroys its group
        # while the other's all_reduce is still in flight aborts that one ("terminate called without an
        # active exception", SIGABRT; seen once in a CI run).
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_a_non_finite_loss_in_one_process_stops_every_process(tmp_path):
    """Under data parallelism the divergence check agrees across ranks (else one rank raises and the
    others wait for its gradients for ever)."""
    import torch.multiprocessing as mp

    mp.spawn(_finite_rank, args=(str(tmp_path),), nprocs=2, join=True)
    assert (tmp_path / "rank0").read_text() == "False" and (tmp_path / "rank1").read_text() == "False"


def test_bf16_on_a_cpu_without_native_bf16_warns_once_in_one_line(tmp_path, monkeypatch, capsys):
    """bf16 autocast is emulated on a CPU without AMX or AVX512-BF16 (slower than fp32): training with
    it asked for says so, and the CLI prints the warning as one ``warning: ...`` line."""
    import warnings

    import leantune.device as device
    from leantune.cli import _show_warning
    from leantune.errors import LeantuneWarning

    monkeypatch.setattr(device, "cpu_native_bf16", lambda: "AMX")
    assert device.bf16_cpu_warning("cpu") == "" and device.bf16_cpu_warning("cuda") == ""
    monkeypatch.setattr(device, "cpu_native_bf16", lambda: "")
    assert "no AMX or AVX512-BF16" in device.bf16_cpu_warning("cpu") and device.bf16_cpu_warning("cuda:0") == ""
    assert device.bf16_cpu_warning("cpu", "--gen-dtype bfloat16").startswith("--gen-dtype bfloat16 on a CPU")
    assert "\n" not in device.bf16_cpu_warning("cpu")
    with pytest.warns(LeantuneWarning, match="without native bf16"):
        finetune("tiny", EXAMPLES, None, tmp_path / "bf16", small_cfg(max_steps=1, bf16=True), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeantuneWarning)  # fp32 (the CPU default) warns nothing
        finetune("tiny", EXAMPLES, None, tmp_path / "fp32", small_cfg(max_steps=1), progress=False)
    capsys.readouterr()  # the runs' progress output
    _show_warning("slow\nhere", LeantuneWarning, "x.py", 1)
    assert capsys.readouterr().err == "warning: slow here\n"


def test_micro_batches_on_a_gpu_get_a_one_line_hint_and_never_on_a_cpu():
    import leantune.device as device
    from leantune.errors import LeantuneWarning

    hint = device.micro_batch_warning("cuda", 4, 16)
    assert hint.startswith("--micro-batch-size 4 on cuda: 4 forward passes an optimizer step of 16;") and "\n" not in hint
    assert "3.8x" in hint and hint.endswith("raise it towards 16 unless GPU memory runs short")
    assert "3 forward passes an optimizer step of 10" in device.micro_batch_warning("cuda:1", 4, 10)  # the last pass is short
    assert device.micro_batch_warning("cuda", 16, 16) == "" and device.micro_batch_warning("cpu", 4, 16) == ""
    with pytest.warns(LeantuneWarning, match="micro-batch-size 8 on cuda"):
        device.warn_if_small_micro_batches("cuda", 8, 32)


def test_cpu_native_bf16_names_what_torch_reports(monkeypatch):
    import torch

    from leantune.device import cpu_native_bf16

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert cpu_native_bf16() == "AMX"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert cpu_native_bf16() == ""
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert cpu_native_bf16() == "unknown"


def test_loading_an_adapter_raises_no_peft_plumbing_warning(tmp_path):
    """peft's own ``is_gradient_checkpointing`` call is deprecated in transformers 5.x; a user loading an
    adapter for evaluation is not shown that FutureWarning (nothing they can act on)."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from leantune.models.llm import load_model

    model, _ = load_model("tiny")
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(tmp_path / "adapter")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded, _ = load_finetuned("tiny", tmp_path / "adapter")
    assert any("lora_A" in name for name, _ in loaded.named_parameters())
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_a_training_record_round_trips_and_a_malformed_one_is_refused_naming_its_file(tmp_path):
    from leantune.train import load_training_record, save_training_record

    assert load_training_record(tmp_path) is None  # an adapter saved before leantune wrote one
    save_training_record(tmp_path, {"model": "tiny", "seed": 7})
    assert load_training_record(tmp_path) == {"model": "tiny", "seed": 7}
    (tmp_path / "leantune_training.json").write_text('{"seed": "7"}')
    with pytest.raises(LeantuneError, match=r"leantune_training\.json: expected an object with an integer 'seed'"):
        load_training_record(tmp_path)
