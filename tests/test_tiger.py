"""TIGER: vocabulary, constrained generation, training/resume/reuse, evaluation, effort scorer, CLI."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from leantune.errors import DataError, LeantuneError
from leantune.evaluation.tiger import evaluate_tiger
from leantune.models.rqvae import SemanticIDs
from leantune.models.tiger import (
    PAD,
    TigerConfig,
    TrieConstraint,
    TigerEncoder,
    TigerVocab,
    build_model,
    build_trie,
    prefix_fn,
    recommend,
)
from leantune.train import tiger
from leantune.train.tiger import train_tiger

from .tiger_fixtures import tiny_sids

TINY = TigerConfig(
    d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32, dropout=0.1, user_buckets=8,
    batch_size=8, lr=3e-3, warmup_steps=2, max_epochs=3, eval_every_steps=1, patience=5, val_metric="recall@10", val_users=0, beam_size=12,
    eval_batch_size=16,
)


def test_vocab_layout_round_trips_and_rejects_foreign_tokens():
    vocab = TigerVocab([3, 3, 3, 2], user_buckets=5)
    assert vocab.offsets == [2, 5, 8, 11] and vocab.user_offset == 13 and vocab.size == 18
    toks = vocab.code_tokens([2, 0, 1, 1])
    assert toks == [4, 5, 9, 12] and vocab.tokens_to_codes(toks) == [2, 0, 1, 1]
    assert vocab.tokens_to_codes([5, 5, 9, 12]) is None  # a level-2 token in the level-1 slot
    assert vocab.tokens_to_codes([PAD, 5, 9, 12]) is None
    assert vocab.user_token(12345) == vocab.user_token(12345)
    assert all(13 <= vocab.user_token(u) < 18 for u in range(100))


def test_encoder_inputs_truncate_history_and_label_the_target(tiny_rec):
    sids = tiny_sids()
    enc = TigerEncoder(sids, TigerConfig(**{**TINY.__dict__, "max_history": 2}))
    sample = tiny_rec.train_samples[0]
    ids = enc.input_ids(sample.user, (5, 6, 7))
    assert ids[0] == enc.vocab.user_token(sample.user) and ids[-1] == 1
    assert ids[1:-1] == enc.item_tokens[6] + enc.item_tokens[7]  # oldest item dropped
    batch = enc.batch(tiny_rec.train_samples[:5])
    assert batch["labels"].shape == (5, 4) and batch["input_ids"].shape[0] == 5
    assert (batch["attention_mask"] == (batch["input_ids"] != PAD)).all()


def test_constrained_generation_never_emits_an_invalid_item():
    torch.manual_seed(0)
    sids = tiny_sids()
    enc = TigerEncoder(sids, TINY)
    model = build_model(enc.vocab, TINY).eval()  # untrained: its preferences ignore the item set
    from leantune.data import Sample

    samples = [Sample(i, 100 + i, tuple(range(1 + i, 4 + i)), (1,)) for i in range(6)]
    batch = enc.batch(samples, with_labels=False)
    common = dict(num_beams=12, num_return_sequences=12, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    constrained = model.generate(**batch, prefix_allowed_tokens_fn=prefix_fn(build_trie(enc)), **common)
    from transformers import LogitsProcessorList

    vectorised = model.generate(**batch, logits_processor=LogitsProcessorList([TrieConstraint(enc)]), **common)
    assert torch.equal(vectorised, constrained)
    free = model.generate(**batch, **common)
    valid = lambda seqs: [sids.item_of(enc.vocab.tokens_to_codes(s[1:]) or [-1]) is not None for s in seqs.tolist()]
    assert all(valid(constrained))
    assert not all(valid(free))  # without the trie the same model does produce non-items
    ranked = recommend(model, enc, samples, k=10, beam_size=12)
    assert all(len(r) == 10 and len(set(r)) == 10 and set(r) <= set(sids.item_ids) for r in ranked)


def test_vectorised_trie_masks_exactly_like_the_prefix_function():
    torch.manual_seed(0)
    sids = tiny_sids()
    enc = TigerEncoder(sids, TINY)
    trie, constraint = build_trie(enc), TrieConstraint(enc)
    fn = prefix_fn(trie)
    # every real prefix at every level, plus prefixes that leave the trie
    prefixes = sorted({p for p in trie}) + [(PAD,), (enc.item_tokens[1][0], PAD), (2, 5, 8 + 2)]
    for prefix in prefixes:
        ids = torch.tensor([[PAD, *prefix]])
        scores = torch.randn(1, enc.vocab.size)
        masked = constraint(ids, scores.clone())
        assert torch.isfinite(masked[0]).nonzero().flatten().tolist() == sorted(fn(0, ids[0])), prefix
    model = build_model(enc.vocab, TINY).eval()
    from leantune.data import Sample

    samples = [Sample(i, 7 * i, tuple(range(2 + i, 6 + 2 * i)), (1,)) for i in range(5)]
    assert recommend(model, enc, samples, 10, beam_size=12) == recommend(model, enc, samples, 10, beam_size=12, vectorised=False)


def test_fewer_items_than_beams_still_returns_only_real_items():
    sids = tiny_sids(n_items=5)
    enc = TigerEncoder(sids, TINY)
    model = build_model(enc.vocab, TINY)
    from leantune.data import Sample

    ranked = recommend(model, enc, [Sample(0, 1, (1, 2), (3,))], k=8, beam_size=8)
    assert set(ranked[0]) <= set(range(1, 6)) and len(ranked[0]) == len(set(ranked[0])) <= 5


def test_train_evaluate_reuse_and_subsets(tiny_rec, tmp_path, monkeypatch):
    sids = tiny_sids()
    run = train_tiger(tiny_rec, sids, None, tmp_path / "full", TINY, seed=0, progress=False)
    assert run.n_samples == 40 and run.epochs == 3 and run.steps == 15
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    # Stopped by its epoch cap: the training state stays, so a higher cap can continue the run.
    assert (tmp_path / "full" / "model.safetensors").exists() and (tmp_path / "full" / "train_state.safetensors").exists()
    assert run.stopped == "max-epochs"
    result = evaluate_tiger(tiny_rec, sids, tmp_path / "full", ks=(5, 10), progress=False)
    assert result["users"] == len(tiny_rec.test_samples)
    assert 0.0 <= result["metrics"]["recall@5"] <= result["metrics"]["recall@10"] <= 1.0
    assert evaluate_tiger(tiny_rec, sids, tmp_path / "full", users=7, ks=(10,), progress=False)["users"] == 7

    monkeypatch.setattr(tiger, "build_model", lambda *a: (_ for _ in ()).throw(AssertionError("retrained")))
    assert train_tiger(tiny_rec, sids, None, tmp_path / "full", TINY, seed=0, progress=False).key == run.key
    monkeypatch.undo()

    sub = train_tiger(tiny_rec, sids, [0, 5, 9, 17], tmp_path / "sub", TigerConfig(**{**TINY.__dict__, "val_metric": "loss"}), progress=False)
    assert sub.n_samples == 4 and sub.steps == 3 and sub.val_metric == "loss"
    with pytest.raises(LeantuneError, match="sample id 40 out of range"):
        train_tiger(tiny_rec, sids, [1, 40], tmp_path / "bad", TINY, progress=False)
    with pytest.raises(LeantuneError, match="other semantic IDs"):
        other = SemanticIDs(sids.item_ids, sids.codes, sids.level_sizes, key="other")
        evaluate_tiger(tiny_rec, other, tmp_path / "full", progress=False)


def test_selection_ids_are_sample_ids_not_positions(gappy_rec):
    # Users 5, 10, ... (sample ids 4, 9, ...) have no training items: sample id 6 is the 6th training sample.
    picked = tiger.select_train_samples(gappy_rec, [6, 0, 38])
    assert [s.sample_id for s in picked] == [6, 0, 38] and gappy_rec.train_samples[5] is picked[0]
    assert picked[0] is next(s for s in gappy_rec.train_samples if s.sample_id == 6)
    assert [s.sample_id for s in tiger.select_train_samples(gappy_rec, None)] == [s.sample_id for s in gappy_rec.train_samples]
    with pytest.raises(LeantuneError, match="sample id 4 is not a training sample of gappy: user 5 has no training items"):
        tiger.select_train_samples(gappy_rec, [1, 4])
    with pytest.raises(LeantuneError, match="sample id 40 out of range"):
        tiger.select_train_samples(gappy_rec, [40])
    with pytest.raises(LeantuneError, match="duplicates"):
        tiger.select_train_samples(gappy_rec, [1, 1])


def test_min_steps_repeats_epochs_for_small_subsets(tiny_rec, tmp_path):
    cfg = TigerConfig(**{**TINY.__dict__, "max_epochs": 1, "min_steps": 6, "eval_every_steps": 100, "val_metric": "loss"})
    run = train_tiger(tiny_rec, tiny_sids(), [0, 1, 2, 3, 4, 5, 6, 7, 8], tmp_path / "r", cfg, progress=False)
    assert run.steps == 6 and run.epochs == 3  # 2 steps per epoch
    assert sum("val_loss" in row for row in run.history) == 1  # validated only at the end


def test_interrupted_training_resumes_to_the_same_result(tiny_rec, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    sids = tiny_sids()
    ref = train_tiger(tiny_rec, sids, None, tmp_path / "ref", TINY, seed=1, progress=False)
    original = tiger.save_training_state

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(tiger, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_tiger(tiny_rec, sids, None, tmp_path / "cut", TINY, seed=1, progress=False)
    monkeypatch.undo()
    assert (tmp_path / "cut" / "train_state.safetensors").exists()
    resumed = train_tiger(tiny_rec, sids, None, tmp_path / "cut", TINY, seed=1, progress=False)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in ref.history]
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_capped_run_extends_to_a_higher_cap_as_if_trained_with_it(tiny_rec, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    sids = tiny_sids()
    longer = TigerConfig(**{**TINY.__dict__, "max_epochs": 5})
    ref = train_tiger(tiny_rec, sids, None, tmp_path / "ref", longer, seed=2, progress=False)
    first = train_tiger(tiny_rec, sids, None, tmp_path / "ext", TINY, seed=2, progress=False)
    assert first.epochs == 3 and first.key == ref.key  # the cap is not part of the run's identity
    extended = train_tiger(tiny_rec, sids, None, tmp_path / "ext", longer, seed=2, progress=False)
    assert extended.epochs == 5 and len(extended.history) == 5
    assert [r["train_loss"] for r in extended.history] == [r["train_loss"] for r in ref.history]
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(tmp_path / "ext" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The same cap again: reused, nothing trained.
    monkeypatch.setattr(tiger, "build_model", lambda *a: (_ for _ in ()).throw(AssertionError("retrained")))
    assert train_tiger(tiny_rec, sids, None, tmp_path / "ext", longer, seed=2, progress=False).epochs == 5
    monkeypatch.undo()
    # A lower cap than what ran is a different model: trained again from the start.
    again = train_tiger(tiny_rec, sids, None, tmp_path / "ext", TINY, seed=2, progress=False)
    assert again.epochs == 3 and [r["train_loss"] for r in again.history] == [r["train_loss"] for r in first.history]
    # Early stopping ends a run for any cap above where it stopped.
    patient = TigerConfig(**{**TINY.__dict__, "max_epochs": 50, "patience": 1})  # recall@10 plateaus at once
    stopped = train_tiger(tiny_rec, sids, None, tmp_path / "es", patient, seed=2, progress=False)
    assert stopped.stopped == "early-stopping" and not (tmp_path / "es" / "train_state.safetensors").exists()
    monkeypatch.setattr(tiger, "build_model", lambda *a: (_ for _ in ()).throw(AssertionError("retrained")))
    assert train_tiger(tiny_rec, sids, None, tmp_path / "es", TigerConfig(**{**patient.__dict__, "max_epochs": 60}),
                       seed=2, progress=False).epochs == stopped.epochs


def test_read_selection_accepts_prune_output_and_rejects_bad_files(tmp_path):
    from leantune.pruning import read_sample_ids as read_selection  # the one reader of prune's selection.json

    (tmp_path / "selection.json").write_text(json.dumps({"sample_ids": [3, 1, 2], "user_ids": [9, 8, 7], "method": "dealrec"}))
    assert read_selection(tmp_path) == [3, 1, 2] == read_selection(tmp_path / "selection.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sample_ids": ["a"]}))
    with pytest.raises(DataError, match="sample_ids"):
        read_selection(bad)
    with pytest.raises(DataError, match="file not found"):
        read_selection(tmp_path / "missing.json")


# --- effort ------------------------------------------------------------------------------------


def test_effort_is_the_exact_per_sample_gradient_norm_of_the_head(tiny_rec):
    from leantune.scoring.tiger_effort import per_sample_grad_norms

    torch.manual_seed(0)
    sids = tiny_sids()
    cfg = TigerConfig(**{**TINY.__dict__, "num_decoder_layers": 2})
    enc = TigerEncoder(sids, cfg)
    model = build_model(enc.vocab, cfg).eval()
    samples = tiny_rec.train_samples[:9]  # different history lengths: the batch is padded
    norms = per_sample_grad_norms(model, enc, samples, batch_size=4)

    # Reference: one sample at a time, plain autograd, on a copy whose lm_head is untied from the
    # input embedding (the effort differentiates the output projection in its output role only).
    ref_model = copy.deepcopy(model)
    ref_model.lm_head.weight = torch.nn.Parameter(ref_model.shared.weight.detach().clone())
    head = [n for n, _ in ref_model.named_parameters()
            if n.startswith(("decoder.block.1.", "decoder.final_layer_norm.")) or n == "lm_head.weight"]
    ref = []
    for s in samples:
        ref_model.zero_grad()
        ref_model(**enc.batch([s])).loss.backward()
        grads = dict(ref_model.named_parameters())
        ref.append(float(torch.sqrt(sum((grads[n].grad ** 2).sum() for n in head))))
    np.testing.assert_allclose(norms, ref, rtol=1e-4)
    assert len(set(np.round(norms, 6))) == len(samples)
    assert model.config._attn_implementation == "sdpa"  # restored


def test_tiger_effort_scorer_is_registered_and_keeps_sample_order(tiny_rec):
    from leantune.scoring import SCORERS, ScoringContext
    from leantune.scoring.tiger_effort import per_sample_grad_norms

    sids = tiny_sids()
    enc = TigerEncoder(sids, TINY)
    model = build_model(enc.vocab, TINY).eval()
    ctx = ScoringContext(tiny_rec, extras={"tiger_model": (model, enc)}, options={"tiger_batch": 3})
    samples = tiny_rec.train_samples[:10]
    out = SCORERS.get("tiger_effort")().score(samples, ctx)
    assert set(out) == {"tiger_effort"} and out["tiger_effort"].shape == (10,)
    one_by_one = [per_sample_grad_norms(model, enc, [s], 1)[0] for s in samples]
    np.testing.assert_allclose(out["tiger_effort"], one_by_one, rtol=1e-4)


def test_effort_scorer_trains_its_warmup_model_when_none_is_given(tiny_rec, tmp_path, monkeypatch):
    from leantune.scoring import ScoringContext
    from leantune.scoring.tiger_effort import TigerEffortScorer

    sids = tiny_sids()
    ids_dir = tmp_path / "ids"
    sids.save(ids_dir / "semantic_ids.json")
    small = {k: v for k, v in TINY.__dict__.items() if k not in ("max_epochs", "val_metric")}
    import leantune.models.tiger as tiger_model

    monkeypatch.setattr(tiger_model, "tiger_config", lambda preset, **kw: TigerConfig(**{**small, **kw}))
    with pytest.raises(LeantuneError, match="tiger_effort needs a trained TIGER"):  # scorers never train models themselves
        TigerEffortScorer().score(tiny_rec.train_samples[:5], ScoringContext(tiny_rec, work_dir=tmp_path / "w0", options={"tiger_ids": str(ids_dir)}))
    ctx = ScoringContext(tiny_rec, work_dir=tmp_path / "work", options={"tiger_ids": str(ids_dir)}, train_tiger=train_tiger)
    out = TigerEffortScorer().score(tiny_rec.train_samples[:5], ctx)
    assert (tmp_path / "work" / "tiger-effort-warmup" / "model.safetensors").exists()
    assert np.isfinite(out["tiger_effort"]).all() and (out["tiger_effort"] > 0).all()


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_train_and_evaluate(tiny_rec_folder, tmp_path):
    from typer.testing import CliRunner

    from leantune.cli import app

    ids = tmp_path / "ids"
    tiny_sids().save(ids / "semantic_ids.json")
    sel = tmp_path / "sel" / "selection.json"
    sel.parent.mkdir()
    sel.write_text(json.dumps({"sample_ids": list(range(12))}))
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["tiger", "train", "--data", str(tiny_rec_folder), "--ids", str(ids), "--selection", str(sel),
                                 "--out", str(out), "--preset", "small", "--epochs", "1", "--val-metric", "loss", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "trained on 12 samples" in result.output
    result = runner.invoke(app, ["tiger", "evaluate", "--data", str(tiny_rec_folder), "--ids", str(ids), "--model", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "recall@10" in result.output and (out / "evaluation-test.json").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = runner.invoke(app, ["tiger", "train", "--data", str(tiny_rec_folder), "--ids", str(ids), "--selection", str(bad)])
    assert isinstance(result.exception, DataError) and "sample_ids" in str(result.exception)


def test_tiger_effort_warmup_subset_is_seeded_and_checked(tiny_rec):
    from leantune.pruning import check_options
    from leantune.scoring.tiger_effort import warmup_subset

    ids = [s.sample_id for s in tiny_rec.train_samples]
    assert warmup_subset(tiny_rec, 0, 0) is None and warmup_subset(tiny_rec, len(ids), 0) is None  # all samples
    part = warmup_subset(tiny_rec, 10, 0)
    assert len(part) == 10 and set(part) <= set(ids) and part == sorted(part)
    assert part == warmup_subset(tiny_rec, 10, 0) and part != warmup_subset(tiny_rec, 10, 1)
    check_options({"tiger_warmup_samples": 10})
    with pytest.raises(LeantuneError, match="tiger_warmup_samples"):
        check_options({"tiger_warmup_samples": -1})
