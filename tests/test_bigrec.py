"""Generation, grounding and BIGRec evaluation with the tiny model on tiny data."""
from __future__ import annotations

import json

import pytest

from leantune.data import dataset_fingerprint
from leantune.errors import LeantuneError
from leantune.evaluation.bigrec import BigrecEvalConfig, evaluate_bigrec, evaluate_loaded, select_samples
from leantune.evaluation.generation import GenerationSettings, generate_texts, newline_token_ids
from leantune.evaluation.grounding import clean_prediction, item_embeddings, rank_items, text_embeddings


@pytest.fixture(scope="module")
def tiny_model():
    from leantune.models.llm import load_model

    model, tokenizer = load_model("tiny")
    model.eval()
    return model, tokenizer


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model):
    model, tokenizer = tiny_model
    prompts = [
        "### Response:\n",
        "The user has purchased the following game products before, with titles as: Anno 2070; Mass Effect 3\n### Response:\n",
        "Titles: Halo\n### Response:\n",
        "A much longer prompt that lists many products: " + "; ".join(f"Game {i}" for i in range(12)) + "\n### Response:\n",
    ]
    settings = GenerationSettings(num_beams=2, max_new_tokens=6, batch_size=4)
    batched = generate_texts(model, tokenizer, prompts, settings, progress=False)
    single = [generate_texts(model, tokenizer, [p], GenerationSettings(2, 6, 1), progress=False)[0] for p in prompts]
    assert batched == single
    plain = generate_texts(model, tokenizer, prompts, GenerationSettings(2, 6, 4, prefill_once=False, search="transformers"),
                           progress=False)
    assert plain == batched  # leantune's pooled search gives what plain ``generate`` gives
    assert sum(bool(t) for t in batched) >= 2  # the random model also emits special tokens, decoded as ""
    assert tokenizer.padding_side == "right"  # restored


def test_text_embeddings_do_not_depend_on_batching(tiny_model):
    model, tokenizer = tiny_model
    texts = ["Halo", "Mass Effect 3: N7 Collector's Edition", "Anno 2070", "Game number 12"]
    together = text_embeddings(model, tokenizer, texts, batch_size=4)
    alone = text_embeddings(model, tokenizer, texts, batch_size=1)
    assert together.shape == (4, model.config.hidden_size)
    assert (together - alone).abs().max().item() < 1e-4


def test_exact_title_is_grounded_first(tiny_model, tiny_rec):
    model, tokenizer = tiny_model
    ids, vectors = item_embeddings(model, tokenizer, tiny_rec, progress=False)
    assert list(ids) == sorted(tiny_rec.items)
    generated = [tiny_rec.title(7), f'"{tiny_rec.title(23)}"', tiny_rec.title(1)]
    query = text_embeddings(model, tokenizer, [clean_prediction(g) for g in generated])
    top = rank_items(query, vectors, ids, k=5)
    assert top.shape == (3, 5)
    assert list(top[:, 0]) == [7, 23, 1]


def test_item_embeddings_are_cached_by_content(tiny_model, tiny_rec):
    import copy

    model, tokenizer = tiny_model
    ids, first = item_embeddings(model, tokenizer, tiny_rec, progress=False)
    _, again = item_embeddings(model, tokenizer, tiny_rec, progress=False)
    assert (first - again).abs().max().item() == 0
    edited = copy.deepcopy(tiny_rec)
    item = edited.items[3]
    edited.items[3] = type(item)(item.seq_id, item.asin, "A different title altogether", item.categories)
    _, changed = item_embeddings(model, tokenizer, edited, progress=False)
    row = list(ids).index(3)
    assert (changed[row] - first[row]).abs().max().item() > 0  # not served from the stale cache


def test_evaluation_scores_perfect_predictions_as_hits(tiny_model, tiny_rec, tmp_path):
    """Pre-filled predictions equal to each user's target title: grounding must hit at rank 1."""
    model, tokenizer = tiny_model
    cfg = BigrecEvalConfig(users=None, num_beams=1, max_new_tokens=4)
    samples = select_samples(tiny_rec, "test", None, 0)
    out = tmp_path / "eval"
    out.mkdir()
    with open(out / "predictions.partial.jsonl", "w") as fh:
        for s in samples:
            fh.write(json.dumps({"sample_id": s.sample_id, "prediction": tiny_rec.title(s.targets[0])}) + "\n")
    result = evaluate_loaded(model, tokenizer, tiny_rec, samples, cfg, out, progress=False)
    assert result.n_users == len(samples) == 20
    assert result.metrics["recall@5"] == 1.0 and result.metrics["ndcg@5"] == 1.0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["top10"][0] for r in rows] == [s.targets[0] for s in samples]
    assert not (out / "predictions.partial.jsonl").exists()


def test_evaluate_bigrec_end_to_end_and_reuse(tiny_rec, tmp_path):
    cfg = BigrecEvalConfig(users=5, seed=3, num_beams=2, max_new_tokens=5, batch_size=2)
    out = tmp_path / "ev"
    result = evaluate_bigrec("tiny", tiny_rec, None, cfg, out, progress=False)
    assert result.n_users == 5
    assert set(result.metrics) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20, 50)}
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.metrics["recall@50"] == 1.0  # 30 items: every target is within the top 50
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 5
    assert json.loads((out / "eval_settings.json").read_text())["data"] == dataset_fingerprint(tiny_rec, "evaluation")
    again = evaluate_bigrec("tiny", tiny_rec, None, cfg, out, progress=False)
    assert again.metrics == result.metrics and again.timings == result.timings  # read back, not recomputed
    with pytest.raises(LeantuneError, match="other settings"):
        evaluate_bigrec("tiny", tiny_rec, None, BigrecEvalConfig(users=4, seed=3, num_beams=2, max_new_tokens=5), out, progress=False)


def test_user_subsample_is_seeded(tiny_rec):
    a = [s.sample_id for s in select_samples(tiny_rec, "test", 7, seed=1)]
    b = [s.sample_id for s in select_samples(tiny_rec, "test", 7, seed=1)]
    c = [s.sample_id for s in select_samples(tiny_rec, "test", 7, seed=2)]
    assert a == b == sorted(a) and len(set(a)) == 7 and a != c
    with pytest.raises(LeantuneError, match="users"):
        BigrecEvalConfig(users=0)


def test_recommendation_task(tiny_rec, tiny_model):
    from leantune.tasks.base import TASKS
    from leantune.tasks.recommendation import RecommendationTask

    assert TASKS.get("recommendation") is RecommendationTask
    model, tokenizer = tiny_model
    task = RecommendationTask(tiny_rec, pool=10, seed=0, eval_users=4, eval_config=BigrecEvalConfig(num_beams=1, max_new_tokens=4))
    assert task.primary_metric == "recall@20"
    units = task.train_pool()
    assert len(units) == 10 and units == task.train_pool()
    train = task.train_examples(units[:3], tokenizer)
    first = tiny_rec.train_samples[int(units[0])]
    assert train[0].response == tiny_rec.title(first.targets[0]) and train[0].example_id == units[0]
    assert train[0].prompt.endswith("### Response:\n")
    valid = task.valid_examples(tokenizer, unit_ids=units)
    with_valid = {s.sample_id for s in tiny_rec.valid_samples}
    assert [int(e.example_id) for e in valid] == [int(u) for u in units if int(u) in with_valid]
    with pytest.raises(LeantuneError, match="not a training sample"):
        task.train_examples(["999"], tokenizer)
    metrics = task.evaluate(model, tokenizer, split="valid", limit=3)
    assert 0.0 <= metrics["recall@20"] <= 1.0


def test_adapter_is_used_in_generation_but_not_in_grounding():
    import torch
    from peft import LoraConfig, get_peft_model

    from leantune.models.llm import load_model

    base, tokenizer = load_model("tiny")
    texts = ["Halo", "Anno 2070"]
    base_vectors = text_embeddings(base, tokenizer, texts)
    prompts = ["Titles: Halo\n### Response:\n", "Titles: Anno 2070; Mass Effect\n### Response:\n"]
    base_out = generate_texts(base, tokenizer, prompts, GenerationSettings(2, 6, 2), progress=False)

    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
    model.eval()
    tuned = generate_texts(model, tokenizer, prompts, GenerationSettings(2, 6, 2), progress=False)
    plain = generate_texts(model, tokenizer, prompts, GenerationSettings(2, 6, 2, prefill_once=False, search="transformers"),
                           progress=False)
    assert tuned == plain and tuned != base_out  # the pooled search runs the adapter as generate does
    assert (text_embeddings(model, tokenizer, texts) - base_vectors).abs().max().item() < 1e-5


def test_newline_token_ids_cover_line_breaks(tiny_model):
    _, tokenizer = tiny_model
    ids = set(newline_token_ids(tokenizer))
    assert ids and all("\n" in tokenizer.decode([i]) for i in ids)
    assert set(tokenizer("Halo 3\n\n### Response:\n")["input_ids"]) & ids
    assert not set(tokenizer("Halo 3 - Xbox 360")["input_ids"]) & ids


def test_generation_stops_at_the_first_line_break(tiny_model):
    import copy

    import torch

    model, tokenizer = tiny_model
    prompt = "A much longer prompt that lists many products: Game 1; Game 2"
    enc = tokenizer([prompt], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    later = next(t for t in new if t != new[0])  # the random model writes "2 2 2 St St ..."
    # Give a line break the output row of that later token, a little larger: the model then writes
    # "2 2 2" and line breaks where it wrote " St".
    model = copy.deepcopy(model)
    newline = tokenizer.convert_tokens_to_ids("Ċ")
    with torch.no_grad():
        rows = model.get_output_embeddings().weight
        rows[newline] = 1.01 * rows[later]
    lengths = []
    generate = model.generate
    model.generate = lambda *a, **k: (lambda o: lengths.append(o.shape[1] - enc["input_ids"].shape[1]) or o)(generate(*a, **k))
    hf = dict(search="transformers")
    free = generate_texts(model, tokenizer, [prompt], GenerationSettings(1, 8, 1, stop_at_newline=False, **hf), progress=False)
    stopped = generate_texts(model, tokenizer, [prompt], GenerationSettings(1, 8, 1, **hf), progress=False)
    assert free == stopped == [tokenizer.decode(new[: new.index(later)])]
    assert lengths == [8, new.index(later) + 1]  # generation itself ended at the first line break
    # leantune's own search stops there too
    assert generate_texts(model, tokenizer, [prompt], GenerationSettings(1, 8, 1), progress=False) == stopped
    assert generate_texts(model, tokenizer, [prompt], GenerationSettings(1, 8, 1, stop_at_newline=False),
                          progress=False) == free
