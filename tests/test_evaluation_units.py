"""Per-unit evaluation results, the shared seeded-subset rule, shared-prefix generation and resuming."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leantune.evaluation.bigrec import BigrecEvalConfig, evaluate_bigrec
from leantune.evaluation.generation import GenerationSettings, common_prefix, generate_texts, greedy_settings
from leantune.evaluation.metrics import ranking_metrics
from leantune.evaluation.units import PER_UNIT_FILE, ranking_unit_rows, read_per_unit


@pytest.fixture(scope="module")
def tiny_model():
    from leantune.models.llm import load_model

    model, tokenizer = load_model("tiny")
    model.eval()
    return model, tokenizer


def test_ranking_unit_rows_average_to_the_metrics():
    rng = np.random.default_rng(0)
    topk = [rng.permutation(40)[:20] for _ in range(30)]
    targets = [list(rng.choice(40, size=rng.integers(1, 4), replace=False)) for _ in range(30)]
    rows = ranking_unit_rows(list(range(30)), topk, targets, (5, 20))
    metrics = ranking_metrics(topk, targets, (5, 20))
    for key, value in metrics.items():
        assert np.mean([r[key] for r in rows]) == pytest.approx(value)
    # Hand check of one user: targets {a, b}, a at rank 1 and b at rank 3 of the top 5.
    row = ranking_unit_rows(["u"], [[7, 1, 9, 2, 3]], [[7, 9]], (5,))[0]
    assert row["hits@5"] == 2 and row["recall@5"] == 1.0
    assert row["ndcg@5"] == pytest.approx((1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3)))


def test_common_prefix_leaves_every_prompt_a_token():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == [1, 2]
    assert common_prefix([[1, 2, 3], [1, 2, 3]]) == [1, 2]  # identical prompts keep their last token
    assert common_prefix([[1, 2]]) == []
    assert common_prefix([[4, 2], [5, 2]]) == []


def test_shared_prefix_generation_equals_whole_prompts(tiny_model):
    model, tokenizer = tiny_model
    head = "Below is an instruction. ### Input: The user has purchased the following game products before: "
    prompts = [head + t + "\n### Response:\n" for t in
               ("Halo", "Anno 2070; Mass Effect 3; Portal 2", "Game 1; Game 2; Game 3; Game 4; Game 5; Game 6", "Zelda")]
    assert len(common_prefix(tokenizer(prompts)["input_ids"])) > 10
    whole = generate_texts(model, tokenizer, prompts, GenerationSettings(2, 6, 4, share_prefix=False), progress=False)
    shared = generate_texts(model, tokenizer, prompts, GenerationSettings(2, 6, 4), progress=False)
    auto = generate_texts(model, tokenizer, prompts, GenerationSettings(2, 6, None, batch_tokens=8), progress=False)
    single = [generate_texts(model, tokenizer, [p], GenerationSettings(2, 6, 1, share_prefix=False), progress=False)[0]
              for p in prompts]
    assert shared == whole == auto == single


def test_greedy_answers_keep_their_own_budget_stop_rule_and_resume(tiny_model):
    """The one loop's greedy mode (attribute answers, ``--task sft --generate``): a prompt's answer
    depends neither on its batch-mates nor on their budgets (a batch runs to its largest budget,
    each answer is cut back to its own), a text stop rule cuts an answer at the first token where
    it holds, and prompts already done are neither generated nor reported again."""
    model, tokenizer = tiny_model
    prompts = ["Title: red cotton shirt\nAnswer:", "Title: a blue hat\nAnswer:", "Title: steel pan 28 cm, non-stick\nAnswer:"]
    budgets = [3, 9, 6]
    batched = generate_texts(model, tokenizer, prompts, greedy_settings(3), progress=False, budgets=budgets)
    single = [generate_texts(model, tokenizer, [p], greedy_settings(1, max_new_tokens=b), progress=False)[0]
              for p, b in zip(prompts, budgets)]
    assert batched == single
    longer = generate_texts(model, tokenizer, prompts[:1], greedy_settings(1, max_new_tokens=9), progress=False)[0]
    assert len(batched[0]) < len(longer)  # the first answer stopped at its own 3 tokens, not its batch's 9

    free = generate_texts(model, tokenizer, prompts[:1], greedy_settings(1, max_new_tokens=12), progress=False)[0]
    assert len(free) > 2
    stopped = generate_texts(model, tokenizer, prompts[:1], greedy_settings(1, stop=lambda t: len(t.strip()) >= 2,
                                                                              max_new_tokens=12), progress=False)[0]
    assert free.startswith(stopped) and 2 <= len(stopped) < len(free)

    seen = []
    resumed = generate_texts(model, tokenizer, prompts, greedy_settings(2), progress=False, budgets=budgets,
                             done={1: "from the log"}, on_batch=lambda idx, texts: seen.extend(idx))
    assert resumed == [batched[0], "from the log", batched[2]] and sorted(seen) == [0, 2]


def test_identical_prompts_share_all_but_their_last_token(tiny_model):
    model, tokenizer = tiny_model
    prompt = "Below is an instruction. ### Input: Halo\n### Response:\n"
    alone = generate_texts(model, tokenizer, [prompt], GenerationSettings(2, 4, 1), progress=False)
    together = generate_texts(model, tokenizer, [prompt, prompt], GenerationSettings(2, 4, 2), progress=False)
    assert together == alone * 2


def test_shared_prefix_cache_gives_the_same_next_token_logits(tiny_model):
    """The text test above is weak with a random model that repeats one token, so compare the
    next-token logits after prefilling with and without the shared prefix cache."""
    import torch

    from leantune.evaluation.generation import _encode_prefix, _left_pad, _prefill

    model, tokenizer = tiny_model
    head = "Below is an instruction. ### Input: The user has purchased the following game products before: "
    ids = tokenizer([head + t + "\n### Response:\n" for t in ("Halo", "Anno 2070; Mass Effect 3", "Zelda")])["input_ids"]
    shared = common_prefix(ids)
    pad = tokenizer.pad_token_id

    def next_logits(prefix_len):
        rows, mask = _left_pad([t[prefix_len:] for t in ids], pad, "cpu")
        if prefix_len:
            head_ids = torch.tensor(ids[0][:prefix_len]).expand(len(ids), -1)
            rows, mask = torch.cat([head_ids, rows], 1), torch.cat([torch.ones_like(head_ids), mask], 1)
        prefix_cache = _encode_prefix(model, ids[0][:prefix_len], "cpu") if prefix_len else None
        with torch.inference_mode():
            cache = _prefill(model, rows, mask, 1, prefix_cache, prefix_len)
            positions = mask.cumsum(-1)[:, -1:] - 1
            out = model(input_ids=rows[:, -1:], attention_mask=mask, position_ids=positions, cache=cache)
        return out.logits[:, -1]

    whole, with_prefix = next_logits(0), next_logits(len(shared))
    assert len(shared) > 10
    assert torch.allclose(whole, with_prefix, atol=1e-4), (whole - with_prefix).abs().max()


def test_evaluation_writes_per_unit_results_that_match_the_metrics(tiny_rec, tmp_path):
    cfg = BigrecEvalConfig(users=6, seed=1, num_beams=2, max_new_tokens=4)
    result = evaluate_bigrec("tiny", tiny_rec, None, cfg, tmp_path / "ev", progress=False)
    rows = read_per_unit(tmp_path / "ev")
    assert len(rows) == 6 and len({r["unit"] for r in rows}) == 6
    for key, value in result.metrics.items():
        assert np.mean([r[key] for r in rows]) == pytest.approx(value)
    # The same seed and count pick the same users in TIGER's evaluation rule.
    from leantune.data.units import seeded_sample

    assert [r["unit"] for r in rows] == [str(s.sample_id) for s in seeded_sample(tiny_rec.samples("test"), 6, 1)]


def test_interrupted_evaluation_resumes_at_the_next_unit(tiny_rec, tmp_path, monkeypatch):
    import leantune.evaluation.bigrec as bigrec

    cfg = BigrecEvalConfig(users=6, seed=2, num_beams=2, max_new_tokens=4, batch_size=2)
    out = tmp_path / "ev"
    real = bigrec.generate_texts
    calls, first = [], []

    def interrupted(model, tokenizer, prompts, settings, progress, on_batch):
        def stop_after_first(indices, texts):
            on_batch(indices, texts)
            first.append(len(indices))  # the users whose results were final first
            raise KeyboardInterrupt

        calls.append(len(prompts))
        return real(model, tokenizer, prompts, settings, progress, stop_after_first)

    monkeypatch.setattr(bigrec, "generate_texts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_bigrec("tiny", tiny_rec, None, cfg, out, progress=False)
    assert 0 < first[0] < 6
    assert len((out / "predictions.partial.jsonl").read_text().splitlines()) == first[0]

    def counting(model, tokenizer, prompts, settings, progress, on_batch):
        calls.append(len(prompts))
        return real(model, tokenizer, prompts, settings, progress, on_batch)

    monkeypatch.setattr(bigrec, "generate_texts", counting)
    resumed = evaluate_bigrec("tiny", tiny_rec, None, cfg, out, progress=False)
    assert calls == [6, 6 - first[0]]  # the resumed run generated only the users not yet done
    fresh = evaluate_bigrec("tiny", tiny_rec, None, cfg, tmp_path / "fresh", progress=False)
    assert resumed.metrics == fresh.metrics


def test_evaluation_from_before_per_unit_results_is_completed_without_generating(tiny_rec, tmp_path, monkeypatch):
    import leantune.evaluation.bigrec as bigrec

    cfg = BigrecEvalConfig(users=5, seed=0, num_beams=2, max_new_tokens=4)
    out = tmp_path / "ev"
    first = evaluate_bigrec("tiny", tiny_rec, None, cfg, out, progress=False)
    (out / PER_UNIT_FILE).unlink()  # as an evaluation folder written by an older leantune

    def boom(*a, **k):
        raise AssertionError("generated again")

    monkeypatch.setattr(bigrec, "generate_texts", boom)
    again = evaluate_bigrec("tiny", tiny_rec, None, cfg, out, progress=False)
    assert again.metrics == first.metrics and len(read_per_unit(out)) == 5


def test_bfloat16_generation_is_recorded_and_refused_when_unknown(tiny_rec, tmp_path, monkeypatch):
    import leantune.device as device
    from leantune.errors import LeantuneError, LeantuneWarning

    with pytest.raises(LeantuneError, match="gen_dtype"):
        BigrecEvalConfig(gen_dtype="float16")
    assert "gen_dtype" not in BigrecEvalConfig().identity()  # float32 folders from before still match
    cfg = BigrecEvalConfig(users=3, seed=0, num_beams=2, max_new_tokens=3, gen_dtype="bfloat16")
    monkeypatch.setattr(device, "cpu_native_bf16", lambda: "")  # a CPU without native bf16: said in a warning
    with pytest.warns(LeantuneWarning, match="--gen-dtype bfloat16 on a CPU without native bf16"):
        evaluate_bigrec("tiny", tiny_rec, None, cfg, tmp_path / "bf", progress=False)
    settings = json.loads((tmp_path / "bf" / "eval_settings.json").read_text())
    assert settings["settings"]["gen_dtype"] == "bfloat16"
    assert len(read_per_unit(tmp_path / "bf")) == 3


def test_attribute_predictions_write_per_question_rows(tmp_path):
    from leantune.tasks.attributes import write_predictions

    rows = [
        {"product_id": "p1", "category": "c", "attribute": "Brand", "gold": "Acme", "predicted": "Acme", "valid": True,
         "outcome": "VC", "correct": True, "strict_correct": True, "raw": "{}", "parse": "ok"},
        {"product_id": "p1", "category": "c", "attribute": "Size", "gold": None, "predicted": None, "valid": True,
         "outcome": "NN", "correct": True, "strict_correct": True, "raw": "{}", "parse": "ok"},
    ]
    write_predictions(tmp_path / "predictions.jsonl", rows)
    per_unit = read_per_unit(tmp_path)
    assert per_unit == [
        {"unit": "p1::Brand", "cluster": "p1", "outcome": "VC", "correct": 1, "valued": 1},
        {"unit": "p1::Size", "cluster": "p1", "outcome": "NN", "correct": 1, "valued": 0},
    ]
