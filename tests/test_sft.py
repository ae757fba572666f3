"""--task sft: both JSONL formats, bad lines, the gradient-influence scorer (LESS) and prune → finetune."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leantune.errors import DataError, LeantuneError
from leantune.tasks.sft import SFTTask, read_sft, render_prompt, split_valid, to_example

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                     {"role": "assistant", "content": "Paris"}]}
PC = {"prompt": "2 + 2 =", "completion": " 4"}


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def sft_file(path, n=24):
    """Alternating formats, answers the model can learn (the number spelled out)."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    rows = []
    for i in range(n):
        if i % 2:
            rows.append({"prompt": f"Spell {i % 10}:", "completion": f" {words[i % 10]}"})
        else:
            rows.append({"messages": [{"role": "user", "content": f"Spell the digit {i % 10}."},
                                      {"role": "assistant", "content": words[i % 10] * (1 + i % 3)}]})
    return write(path, rows)


def test_both_formats_are_read_and_rendered(tmp_path):
    from leantune.models.llm import load_tokenizer

    records = read_sft(write(tmp_path / "a.jsonl", [CHAT, "", PC]))
    assert [r.unit_id for r in records] == ["L1", "L3"]  # blank lines skipped, ids are line numbers
    tok = load_tokenizer("tiny")
    chat = to_example(records[0], tok)
    assert chat.response == "Paris" and "Capital of France?" in chat.prompt and "Paris" not in chat.prompt
    assert chat.prompt == tok.apply_chat_template(CHAT["messages"][:2], tokenize=False, add_generation_prompt=True)
    assert to_example(records[1], tok).prompt == "2 + 2 =" and records[1].answer == " 4"
    assert render_prompt(records[0], None).endswith("user: Capital of France?\nassistant: ")
    assert records[0].as_dict() == CHAT and records[1].as_dict() == PC


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"text": "x"}', "expected 'messages' or 'prompt' and 'completion' (keys: text)"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "at least two messages"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}', "must be the assistant's answer"),
    ('{"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}', "messages[0].role 'bot'"),
    ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}', "messages[0]: expected"),
    ('{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "x"}]}', "no user message"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}', "answer is empty"),
    ('{"prompt": "q"}', "'completion' must be a string"),
    ('{"prompt": 1, "completion": "a"}', "'prompt' must be a string"),
])
def test_a_bad_line_is_named_with_its_number(tmp_path, line, message):
    path = write(tmp_path / "bad.jsonl", [PC, line])
    with pytest.raises(DataError) as err:
        read_sft(path)
    assert "bad.jsonl:2: " in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_sft(tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="no records"):
        read_sft(write(tmp_path / "empty.jsonl", [""]))


def test_held_out_split_is_seeded_and_disjoint(tmp_path):
    records = read_sft(sft_file(tmp_path / "d.jsonl", n=30))
    train, valid = split_valid(records, 0.1, seed=0)
    again = split_valid(records, 0.1, seed=0)
    assert [r.line for r in valid] == [r.line for r in again[1]] and len(valid) == 3 and len(train) == 27
    assert not {r.line for r in train} & {r.line for r in valid}
    assert [r.line for r in split_valid(records, 0.1, seed=1)[1]] != [r.line for r in valid]
    with pytest.raises(LeantuneError, match="^valid: .* give a validation file"):
        split_valid(records[:1], 0.1, seed=0)


def test_projection_is_seeded_and_keeps_inner_products():
    from leantune.scoring.gradient_influence import projection

    a, b, c = projection(500, 64, seed=3), projection(500, 64, seed=3), projection(500, 64, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and a.shape == (500, 64)
    assert set(np.unique(a * np.sqrt(64)).round(6)) == {-1.0, 1.0}
    assert projection(500, 500, seed=0) is None and projection(500, 4096, seed=0) is None  # exact gradients
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5000)).astype(np.float32)  # norms kept to about sqrt(2 / dim) = 3%
    ratio = np.linalg.norm(x @ projection(5000, 2000, seed=1), axis=1) / np.linalg.norm(x, axis=1)
    assert np.allclose(ratio, 1, atol=0.15) and abs(ratio.mean() - 1) < 0.01


def test_batched_gradient_influence_equals_one_sample_computation(tmp_path):
    from leantune.scoring.effort import EffortConfig, EffortModel, encode_example
    from leantune.scoring.gradient_influence import gradient_features, influence_scores

    task = SFTTask(data=str(sft_file(tmp_path / "d.jsonl", n=14)))
    model = EffortModel(EffortConfig(model="tiny", mask_prompt=True, progress=False), "cpu", seed=0)
    examples = task.train_examples(task.train_pool(), model.tokenizer)
    encoded = [encode_example(e, model.tokenizer, 512, mask_prompt=True) for e in examples]
    grads = np.concatenate([model.batch_gradients(encoded[i:i + 5]) for i in range(0, len(encoded), 5)])
    one = np.concatenate([model.batch_gradients([e]) for e in encoded])
    assert grads.shape == (len(encoded), model.gradient_size()) and np.allclose(grads, one, rtol=1e-4, atol=1e-5)
    # Its row norms are the effort score.
    assert np.allclose(np.linalg.norm(one, axis=1), model.scores(encoded, progress=False), rtol=1e-4)
    targets = encoded[:3]
    for dim in (64, 10 ** 6):  # projected and exact
        batched = influence_scores(gradient_features(model, encoded, dim, seed=0, batch_size=4),
                                   gradient_features(model, targets, dim, seed=0, batch_size=4))
        single = []
        for e in encoded:  # by hand, one example at a time
            f = gradient_features(model, [e], dim, seed=0, batch_size=1)[0]
            t = np.stack([gradient_features(model, [x], dim, seed=0, batch_size=1)[0] for x in targets])
            single.append(float(np.mean(t @ f)))
        assert np.allclose(batched, single, atol=1e-5)
    # The cosine of a target with itself is the largest possible contribution.
    exact = gradient_features(model, encoded, 10 ** 6, seed=0)
    assert np.allclose(np.linalg.norm(exact, axis=1), 1, atol=1e-5)


def test_prune_then_finetune_then_compare(tmp_path):
    from leantune.evaluation.compare import compare, load_evaluation
    from leantune.pipelines.sft import finetune_sft, load_sft_selection, prune_sft
    from leantune.train import FinetuneConfig

    data = sft_file(tmp_path / "d.jsonl", n=30)
    res = prune_sft(data, 6, "gradient-influence", tmp_path / "p", model="tiny", seed=0, options={"gi_dim": 32}, progress=False)
    rec = res.record
    assert len(rec["unit_ids"]) == 6 == len(set(rec["unit_ids"])) and rec["pool_size"] == 27 and not res.reused
    assert rec["scorer"]["gradient_influence"]["dim"] == 32 and list(rec["scorer"]["effort_model"]["layers"]) == [-1]
    scores = [json.loads(l) for l in (tmp_path / "p" / "scores.jsonl").read_text().splitlines()]
    top = sorted(scores, key=lambda r: -r["gradient_influence"])[:6]
    assert sorted(r["unit"] for r in top) == sorted(rec["unit_ids"])  # top-k is LESS's selector
    assert prune_sft(data, 6, "gradient-influence", tmp_path / "p", model="tiny", options={"gi_dim": 32}, progress=False).reused
    with pytest.raises(LeantuneError, match="budget"):
        prune_sft(data, 7, "gradient-influence", tmp_path / "p", model="tiny", options={"gi_dim": 32}, progress=False)
    with pytest.raises(LeantuneError, match="^options gi_dims: not an option"):
        prune_sft(data, 6, "gradient-influence", tmp_path / "q", model="tiny", options={"gi_dims": 32}, progress=False)
    with pytest.raises(LeantuneError, match="larger than the training records"):
        prune_sft(data, 28, "random", tmp_path / "q", model="tiny", progress=False)
    with pytest.raises(LeantuneError, match="selector 'topk'"):
        prune_sft(data, 6, "random", tmp_path / "q", selector="topk", model="tiny", progress=False)
    eff = prune_sft(data, 6, "effort", tmp_path / "e", model="tiny", progress=False)
    assert eff.record["settings"]["selector"] == "coverage" and len(eff.record["unit_ids"]) == 6
    # LESS's warm-up: gradients taken with a LoRA trained for a few steps on a seeded part of the data.
    prune_sft(data, 6, "gradient-influence", tmp_path / "w", model="tiny",
              options={"gi_dim": 32, "gi_warmup_steps": 2, "gi_warmup_fraction": 0.3}, progress=False)
    assert (tmp_path / "w" / "warmup" / "adapter" / "adapter_config.json").is_file()
    cold = {r["unit"]: r["gradient_influence"] for r in map(json.loads, (tmp_path / "p" / "scores.jsonl").read_text().splitlines())}
    hot = {r["unit"]: r["gradient_influence"] for r in map(json.loads, (tmp_path / "w" / "scores.jsonl").read_text().splitlines())}
    assert cold.keys() == hot.keys() and any(abs(cold[u] - hot[u]) > 1e-4 for u in cold)

    cfg = FinetuneConfig(max_steps=2, batch_size=4, micro_batch_size=2, lr=1e-3, train_on_inputs=False,
                         early_stopping_patience=None, device="cpu")
    run = finetune_sft(data, tmp_path / "f", cfg, selection=tmp_path / "p", model="tiny", base=True, progress=False)
    assert run.units == 6 and run.metrics["n_examples"] == 3 and 0 <= run.metrics["token_accuracy"] <= 1
    tuned, base = load_evaluation(tmp_path / "f"), load_evaluation(tmp_path / "f" / "base")
    assert (tuned.name, base.name) == ("gradient-influence", "base") and tuned.units == base.units
    c = compare([tuned, base], baseline="base", metric="loss", n_boot=200, n_perm=200)
    assert c.row("gradient-influence").diff == pytest.approx(run.metrics["loss"] - json.loads(
        (tmp_path / "f" / "base" / "eval" / "metrics.json").read_text())["metrics"]["loss"], abs=0.05)
    # A selection made on another file is refused, naming both.
    other = sft_file(tmp_path / "other.jsonl", n=31)
    with pytest.raises(DataError, match="made on .*d.jsonl"):
        load_sft_selection(tmp_path / "p", other)


def test_export_writes_records_the_sft_reader_accepts(tmp_path):
    from leantune.io import write_jsonl
    from leantune.pipelines.sft import export_records

    from .attributes_fixtures import write_attribute_folder

    folder = write_attribute_folder(tmp_path / "attrs")
    for fmt in ("chat", "prompt-completion"):
        rows = export_records("attributes", str(folder), "train", fmt)
        write_jsonl(tmp_path / f"{fmt}.jsonl", rows)
        records = read_sft(tmp_path / f"{fmt}.jsonl")
        assert len(records) == 12 and all(r.answer.startswith("{") for r in records)
        assert (records[0].messages is not None) == (fmt == "chat")
    with pytest.raises(LeantuneError, match="^format 'xml': choose one of"):
        export_records("attributes", str(folder), "train", "xml")
    with pytest.raises(LeantuneError, match="^task 'sft': export writes"):
        export_records("sft", None, "train", "chat")


def test_cli_bad_line_is_one_line_error(tmp_path):
    import subprocess
    import sys

    bad = write(tmp_path / "bad.jsonl", [PC, PC, '{"messages": "x"}'])
    proc = subprocess.run([sys.executable, "-m", "leantune", "prune", "--task", "sft", "--data", str(bad), "--budget", "1",
                           "--method", "random", "--model", "tiny", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "bad.jsonl:3: 'messages' must be a list" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_generated_answers_scored_by_exact_match_or_a_user_function(tmp_path):
    """--generate: greedy answers per validation record, scored exact-match or by the user's FILE.py:FUNCTION;
    the per-record column is what `leantune compare --metric` reads; bad specs fail before any training."""
    from leantune.models.llm import load_model
    from leantune.tasks.sft import exact_match, load_answer_scorer

    assert exact_match(" Paris \n", "Paris") == 1.0 and exact_match("paris", "Paris") == 0.0
    data = sft_file(tmp_path / "d.jsonl", n=20)
    model, tok = load_model("tiny")
    task = SFTTask(data=str(data), generate="exact-match", max_new_tokens=4, progress=False)
    metrics, rows = task.evaluate_units(model, tok)
    assert "exact_match" in task.metric_names() and all(r["exact_match"] in (0.0, 1.0) for r in rows)
    assert metrics["exact_match"] == pytest.approx(sum(r["exact_match"] for r in rows) / len(rows))
    user = tmp_path / "judge.py"
    user.write_text("def length_ratio(prediction, reference):\n    return min(len(prediction), len(reference)) / max(len(reference), 1)\n")
    metrics, rows = SFTTask(data=str(data), generate=f"{user}:length_ratio", max_new_tokens=4, progress=False).evaluate_units(model, tok)
    assert all(0 <= r["score"] <= 1 for r in rows) and metrics["score"] == pytest.approx(np.mean([r["score"] for r in rows]))
    user.write_text(user.read_text() + "def broken(prediction, reference):\n    return 1 / 0\n")
    with pytest.raises(LeantuneError, match="failed on record L"):
        SFTTask(data=str(data), generate=f"{user}:broken", max_new_tokens=2, progress=False).evaluate_units(model, tok)
    for spec, message in (("regex", "'exact-match' or FILE.py:FUNCTION"), (f"{tmp_path}/no.py:f", "no such file"),
                          (f"{user}:missing", "has no function 'missing'")):
        with pytest.raises(LeantuneError, match=message):
            load_answer_scorer(spec)
    with pytest.raises(LeantuneError, match="no such file"):
        SFTTask(data=str(data), generate=f"{tmp_path}/no.py:f")  # refused when the task is made, before training
