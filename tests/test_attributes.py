"""Attribute extraction: data loading, answer parsing, scoring (literature P/R/F1) and the task wiring."""
from __future__ import annotations

import json
import time

import pytest

from leantune.errors import DataError, LeantuneError
from leantune.tasks.attributes_data import load_attribute_data
from leantune.tasks.attributes_scoring import (
    INVALID,
    judge,
    normalise,
    parse_product_answer,
    parse_question_answer,
    prf,
    summarise,
)

from .attributes_fixtures import write_attribute_folder

ATTRS = ["Brand", "Flavor", "Net content", "Roast type"]


@pytest.fixture
def attr_folder(tmp_path):
    return write_attribute_folder(tmp_path / "attrs")


# -- parsing ---------------------------------------------------------------------------------------
def test_parse_valid_json_and_na_spellings():
    answers, status = parse_product_answer('{"Brand": "Acme", "Flavor": "n/a", "Net content": null, "Roast type": "None"}', ATTRS)
    assert status == "ok"
    assert answers == {"Brand": "Acme", "Flavor": None, "Net content": None, "Roast type": None}


def test_parse_missing_keys_extra_keys_and_bad_values_are_invalid_not_errors():
    answers, status = parse_product_answer('{"brand": "Acme", "Colour": "red", "Flavor": ["a", "b"], "Net content": {"x": 1}}', ATTRS)
    assert status == "ok"
    assert answers["Brand"] == "Acme"  # key matched ignoring case
    assert answers["Flavor"] is INVALID and answers["Net content"] is INVALID
    assert answers["Roast type"] is INVALID  # missing key


@pytest.mark.parametrize(
    "text",
    ["", "I don't know", "{", "{{{{", '{"Brand": ', "[1, 2, 3]", "null", '"just a string"', "}{", "\x00\xff"],
)
def test_parse_garbage_never_raises(text):
    answers, status = parse_product_answer(text, ATTRS)
    assert set(answers) == set(ATTRS)
    assert status in ("failed", "salvaged", "recovered")
    if status == "failed":
        assert all(v is INVALID for v in answers.values())


def test_parse_extra_text_recovered_unless_strict():
    text = 'Sure! ```json\n{"Brand": "Acme", "Flavor": "Mint", "Net content": "n/a", "Roast type": "n/a"}\n``` Hope it helps.'
    answers, status = parse_product_answer(text, ATTRS)
    assert status == "recovered" and answers["Flavor"] == "Mint"
    strict, status = parse_product_answer(text, ATTRS, strict=True)
    assert status == "failed" and all(v is INVALID for v in strict.values())


def test_parse_cut_off_json_salvages_pairs_first_occurrence_wins():
    text = '{\n "Brand": "Acme",\n "Brand": "Other",\n "Flavor": "Mint \\"X\\"",\n "Net con'
    answers, status = parse_product_answer(text, ATTRS)
    assert status == "salvaged"
    assert answers["Brand"] == "Acme" and answers["Flavor"] == 'Mint "X"'
    assert answers["Net content"] is INVALID and answers["Roast type"] is INVALID


def test_parse_question_answers():
    assert parse_question_answer('  "Acme"\nmore text') == "Acme"
    assert parse_question_answer("N/A") is None
    assert parse_question_answer("   \n ") is INVALID


# -- scoring ---------------------------------------------------------------------------------------
def test_normalise_case_whitespace_punctuation():
    assert normalise("  12 Fl. oz ") == normalise("12 fl oz") == "12 fl oz"
    assert normalise("Cameron's  Coffee") == normalise("cameron's coffee")


def test_judge_outcomes_alt_values_and_strict():
    assert judge("p", "c", "a", ("12 Fl. oz",), "12 fl oz").outcome == "VC"
    assert not judge("p", "c", "a", ("12 Fl. oz",), "12 fl oz").strict_correct
    assert judge("p", "c", "a", ("12 Fl. oz",), "12 Fl. oz").strict_correct
    alt = judge("p", "c", "a", ("Colour Safe", "Color-Safe"), "color safe")
    assert alt.outcome == "VC" and alt.correct
    assert judge("p", "c", "a", ("Acme",), "Bolt").outcome == "VW"
    assert judge("p", "c", "a", ("Acme",), None).outcome == "VN"
    assert judge("p", "c", "a", (), None).outcome == "NN"
    assert judge("p", "c", "a", (), "Acme").outcome == "NV"
    # Unparseable: wrong for accuracy even on a gold n/a, but n/a for P/R/F1 (as the literature).
    bad = judge("p", "c", "a", (), INVALID)
    assert bad.outcome == "NN" and not bad.correct and not bad.valid


def test_prf_literature_definition():
    counts = {"NN": 10, "NV": 2, "VN": 3, "VC": 5, "VW": 1}
    p, r, f1 = prf(counts)
    assert p == pytest.approx(5 / 8) and r == pytest.approx(5 / 9)
    assert f1 == pytest.approx(2 * p * r / (p + r))


def _gold():
    """(accepted values) per question: half valued, half n/a."""
    return [("Acme",), (), ("Mint",), (), ("12 Ounce",), ()]


def test_all_na_answers_do_not_look_good():
    judged = [judge(f"p{i}", "c", f"a{i}", acc, None) for i, acc in enumerate(_gold())]
    m = summarise(judged)
    assert m["f1"] == 0 and m["precision"] == 0 and m["recall"] == 0
    assert m["valued_accuracy"] == 0 and m["na_accuracy"] == 1
    assert m["accuracy"] == pytest.approx(0.5)  # only the n/a share: reported next to F1 for that reason


def test_perfect_and_mixed_answers():
    gold = _gold()
    perfect = summarise(judge(f"p{i}", "c", "a", acc, acc[0] if acc else None) for i, acc in enumerate(gold))
    assert perfect["accuracy"] == perfect["f1"] == perfect["strict_f1"] == 1
    answers = ["acme", "Bolt", "Vanilla", None, INVALID, INVALID]  # VC(norm), NV, VW, NN, VN(invalid), NN(invalid)
    m = summarise(judge(f"p{i}", "c", "a", acc, ans) for i, (acc, ans) in enumerate(zip(gold, answers)))
    assert (m["count/VC"], m["count/NV"], m["count/VW"], m["count/NN"], m["count/VN"]) == (1, 1, 1, 2, 1)
    assert m["accuracy"] == pytest.approx(2 / 6)  # acme (normalised) and the valid n/a
    assert m["strict_accuracy"] == pytest.approx(1 / 6)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
    assert m["strict_f1"] == 0  # 'acme' only matches after normalisation
    assert m["invalid_rate"] == pytest.approx(2 / 6)


# -- data ------------------------------------------------------------------------------------------
def test_load_folder_plain_and_gz(tmp_path):
    for gz in (False, True):
        data = load_attribute_data(write_attribute_folder(tmp_path / f"d{gz}", gz=gz))
        assert len(data.products("train")) == 12 and len(data.products("test")) == 6
        assert data.schema["Tea"] == ["Brand", "Flavor", "Tea variety"]


def test_shipped_oa_mine_counts():
    data = load_attribute_data("oa-mine")
    assert [len(data.products(s)) for s in ("train", "valid", "test")] == [1288, 150, 500]
    assert sum(len(p.attributes) for p in data.products("test")) == 5352


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("text"), "missing field 'text'"),
        (lambda r: r["attributes"].pop("Brand"), "differ from schema.json"),
        (lambda r: r.update(category="Shoes"), "not in schema.json"),
        (lambda r: r["attributes"].update(Brand=7), r"'attributes'\['Brand'\] must be a non-empty string"),
        (lambda r: r.update(alt_values={"Brand": [1]}), "must be a list of strings"),
    ],
)
def test_bad_records_give_one_line_errors(tmp_path, mutate, message):
    folder = write_attribute_folder(tmp_path / "bad")
    rows = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()]
    mutate(rows[2])
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=message) as err:
        load_attribute_data(folder)
    assert "test.jsonl:3" in str(err.value) and "\n" not in str(err.value)


def test_unknown_data_name():
    with pytest.raises(LeantuneError, match="not a known attribute dataset"):
        load_attribute_data("no-such-data")


# -- task ------------------------------------------------------------------------------------------
def test_task_units_and_examples(attr_folder):
    from leantune.models.llm import load_tokenizer
    from leantune.tasks.attributes import AttributeTask

    tok = load_tokenizer("tiny")
    product = AttributeTask(data=str(attr_folder))
    question = AttributeTask(data=str(attr_folder), unit="question")
    assert len(product.train_pool()) == 12
    assert len(question.train_pool()) == sum(len(p.attributes) for p in product.data.products("train"))
    ex = product.train_examples(product.train_pool()[:1], tok)[0]
    answer = json.loads(ex.response)
    assert list(answer) == list(product.data.products("train")[0].attributes)
    assert "<|im_start|>assistant" in ex.prompt  # the instruct model's chat template
    qex = question.train_examples(question.train_pool()[:2], tok)
    assert qex[0].example_id == question.train_pool()[0] and "What is the Brand" in qex[0].prompt
    with pytest.raises(LeantuneError, match="not in the train split"):
        product.train_examples(["nope"], tok)
    with pytest.raises(LeantuneError, match="^unit 'word': choose one of"):
        AttributeTask(data=str(attr_folder), unit="word")


@pytest.mark.parametrize("unit", ["product", "question"])
def test_predict_wiring_with_oracle_and_broken_generators(attr_folder, monkeypatch, unit):
    """Answers go back to the right product/attribute: an oracle scores 1, garbage scores 0 without crashing."""
    from leantune.models.llm import load_tokenizer
    from leantune.tasks.attributes import AttributeTask
    from leantune.tasks.attributes_prompts import product_answer, question_answer

    tok = load_tokenizer("tiny")
    task = AttributeTask(data=str(attr_folder), unit=unit, progress=False)
    products = task.data.products("test")
    if unit == "product":
        gold = [product_answer(p) for p in products]
    else:
        gold = [question_answer(p, a) for p in products for a in p.attributes]
    monkeypatch.setattr(task, "_generate", lambda *a, **k: gold)
    m, rows = task.predict(None, tok, "test")
    assert m["accuracy"] == 1 and m["f1"] == 1 and m["n_products"] == 6
    assert len(rows) == m["n_questions"] == sum(len(p.attributes) for p in products)
    monkeypatch.setattr(task, "_generate", lambda *a, **k: ["{broken"] * len(gold))
    m, _ = task.predict(None, tok, "test")
    assert m["accuracy"] == 0 and m["f1"] == 0
    # --limit: a seeded subset of products, the same for the same seed
    monkeypatch.setattr(task, "_generate", lambda model, tok, prompts, *a: ["n/a"] * len(prompts))
    assert task.predict(None, tok, "test", limit=2, seed=5)[1] == task.predict(None, tok, "test", limit=2, seed=5)[1]
    assert task.evaluate(None, tok, "test", limit=2)["n_products"] == 2


def test_evaluate_tiny_model_end_to_end(attr_folder, tmp_path):
    """Real generation with the random tiny Llama: nonsense output is scored, never a crash; CLI writes files."""
    from typer.testing import CliRunner

    from leantune.cli import app

    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["attributes", "evaluate", "--data", str(attr_folder), "--model", "tiny", "--limit", "3", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["n_products"] == 3 and 0 <= metrics["accuracy"] <= 1
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == metrics["n_questions"] and "raw" in json.loads(lines[0])
    assert "per attribute" in result.output
    # F1 comes with its interval over the evaluated products, in metrics.json and on screen.
    low, high = metrics["f1_ci95"]
    assert 0 <= low <= metrics["f1"] <= high <= 1 and "f1 95% CI" in result.output


@pytest.mark.parametrize("unit", ["product", "question"])
def test_pooled_greedy_search_gives_the_batched_answers(attr_folder, unit):
    """search="leantune" (prompts leave the pool as their answers end) answers as the batched
    ``generate`` path does, on the random tiny Llama with the task's budgets and stop rules."""
    from leantune.models.llm import load_model
    from leantune.tasks.attributes import AttributeTask

    model, tokenizer = load_model("tiny")
    batched = AttributeTask(data=str(attr_folder), unit=unit, batch_size=4, progress=False)
    pooled = AttributeTask(data=str(attr_folder), unit=unit, batch_size=4, search="leantune", progress=False)
    _, rows_b = batched.predict(model, tokenizer, "test", limit=4, seed=0)
    _, rows_p = pooled.predict(model, tokenizer, "test", limit=4, seed=0)
    assert [r["raw"] for r in rows_p] == [r["raw"] for r in rows_b]
    with pytest.raises(LeantuneError, match="search 'beam'"):
        AttributeTask(data=str(attr_folder), search="beam")


def test_finetune_cli_tiny_question_unit(attr_folder, tmp_path):
    """`attributes finetune` trains through the shared trainer and evaluates; re-running reuses the run."""
    from typer.testing import CliRunner

    from leantune.cli import app

    out = tmp_path / "ft"
    args = ["attributes", "finetune", "--data", str(attr_folder), "--model", "tiny", "--unit", "question", "--train-limit", "6",
            "--max-steps", "2", "--batch-size", "2", "--micro-batch-size", "2", "--valid-limit", "2", "--eval-limit", "2",
            "--out", str(out), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2/2 steps" in result.output and (out / "train" / "adapter" / "adapter_config.json").exists()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["n_products"] == 2 and metrics["n_questions"] >= 6
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "2/2 steps" in again.output


def test_an_adapter_evaluation_records_and_compare_lists_the_seed_that_trained_it(attr_folder, tmp_path):
    """The adapter folder carries its training seed; `attributes evaluate` copies it into its settings as
    train_seed (the evaluation's own seed stays `seed`), and `compare` lists it as the run's seed."""
    from typer.testing import CliRunner

    from leantune.cli import app
    from leantune.evaluation.compare import compare, load_evaluation
    from leantune.train import load_training_record

    runs = {}
    for train_seed in (3, 5):
        out = tmp_path / f"ft{train_seed}"
        result = CliRunner().invoke(app, ["attributes", "finetune", "--data", str(attr_folder), "--model", "tiny", "--train-limit", "4",
                                          "--max-steps", "1", "--batch-size", "2", "--micro-batch-size", "2", "--eval-limit", "0",
                                          "--seed", str(train_seed), "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        adapter = out / "train" / "adapter"
        assert load_training_record(adapter) == {"model": "tiny", "seed": train_seed}
        ev = tmp_path / f"ev{train_seed}"
        result = CliRunner().invoke(app, ["attributes", "evaluate", "--data", str(attr_folder), "--model", "tiny", "--adapter", str(adapter),
                                          "--limit", "2", "--out", str(ev), "--quiet"])
        assert result.exit_code == 0, result.output
        settings = json.loads((ev / "metrics.json").read_text())["settings"]
        assert settings["train_seed"] == train_seed and settings["seed"] == 0
        assert load_evaluation(ev).seed == train_seed
        runs[train_seed] = load_evaluation(ev, name="tiny")
    assert compare([runs[3], runs[5], load_evaluation(tmp_path / "ev3", name="again")], baseline="tiny", metric="accuracy",
                   n_boot=200, n_perm=200).groups["tiny"].seeds == [3, 5]
    zero = tmp_path / "zero"
    assert CliRunner().invoke(app, ["attributes", "evaluate", "--data", str(attr_folder), "--model", "tiny", "--limit", "2",
                                    "--seed", "4", "--out", str(zero), "--quiet"]).exit_code == 0
    assert "train_seed" not in json.loads((zero / "metrics.json").read_text())["settings"] and load_evaluation(zero).seed == 4


@pytest.mark.parametrize("unit", ["product", "question"])
def test_few_shot_prompts_show_solved_same_category_training_products(attr_folder, unit):
    """--shots k: k training products of the product's category precede it as solved user/assistant turns,
    the same ones whichever subset is evaluated; 0 shots is the zero-shot prompt."""
    from leantune.models.llm import load_tokenizer
    from leantune.tasks.attributes import AttributeTask
    from leantune.tasks.attributes_prompts import product_answer, product_prompt, question_answer, question_prompt

    tok = load_tokenizer("tiny")
    zero = AttributeTask(data=str(attr_folder), unit=unit, progress=False)
    task = AttributeTask(data=str(attr_folder), unit=unit, shots=3, progress=False)
    test = task.data.products("test")
    seen = {}
    for seed in (0, 1):
        prompts = {}
        task._generate = lambda model, tok, p, *a: prompts.setdefault("all", p) and ["n/a"] * len(p)
        task.predict(None, tok, "test", seed=seed)
        seen[seed] = prompts["all"]
    demos = task.demos(test[0], seed=0)
    assert len(demos) == 3 and all(d.category == test[0].category for d in demos)
    assert {d.id for d in demos} <= {p.id for p in task.data.products("train")}
    assert task.demos(test[0], seed=0) == demos and task.demos(test[0], seed=1) != demos
    if unit == "product":
        prompt = product_prompt(test[0], tok, demos)
        assert prompt.count("<|im_start|>assistant") == 4 and all(product_answer(d) in prompt for d in demos)
        assert prompt in seen[0] and product_prompt(test[0], tok) in [product_prompt(p, tok) for p in test]
    else:
        attribute = next(iter(test[0].attributes))
        prompt = question_prompt(test[0], attribute, tok, demos)
        assert prompt.count("<|im_start|>assistant") == 4 and prompt in seen[0]
        assert all(f"<|im_start|>assistant\n{question_answer(d, attribute)}<|im_end|>" in prompt for d in demos)
    assert seen[0] != seen[1]  # another seed shows other examples
    # without a chat template the examples come as earlier "Answer:" blocks
    plain = product_prompt(test[0], None, demos)
    assert plain.count("\nAnswer: ") == 4 and plain.endswith("\nAnswer: ")
    # 0 shots: the zero-shot prompt, unchanged
    assert zero.demos(test[0]) == [] and product_prompt(test[0], tok, zero.demos(test[0])) == product_prompt(test[0], tok)
    # more shots than the category holds: all of its other training products
    many = AttributeTask(data=str(attr_folder), unit=unit, shots=50, progress=False)
    same = [p for p in many.data.products("train") if p.category == test[0].category]
    assert sorted(d.id for d in many.demos(test[0])) == sorted(p.id for p in same)
    with pytest.raises(LeantuneError, match="^shots "):
        AttributeTask(data=str(attr_folder), shots=-1)


def test_finetune_cli_save_every_checkpoints_between_epochs(attr_folder, tmp_path):
    """--save-every N: a checkpoint (to resume from) every N optimizer steps instead of once per epoch."""
    from typer.testing import CliRunner

    from leantune.cli import app

    def run(out, *extra):
        result = CliRunner().invoke(app, ["attributes", "finetune", "--data", str(attr_folder), "--model", "tiny", "--train-limit", "8",
                                          "--max-steps", "3", "--batch-size", "2", "--micro-batch-size", "2", "--eval-limit", "0",
                                          "--out", str(out), "--quiet", *extra])
        assert result.exit_code == 0, result.output
        return sorted(p.name for p in (out / "train" / "checkpoints").iterdir())

    assert run(tmp_path / "epoch") == ["checkpoint-3"]  # 4 steps an epoch: only the last step is saved
    assert run(tmp_path / "often", "--save-every", "1") == ["checkpoint-2", "checkpoint-3"]  # the newest two are kept
    assert json.loads((tmp_path / "often" / "train" / "manifest.json").read_text())["config"]["eval_every"] == 1


def test_finetune_cli_takes_the_task_recipe_unless_a_flag_overrides_it(attr_folder, tmp_path):
    """`attributes finetune` trains with the task's recipe (RECIPE; the tiny model has none of its own) by default; each flag overrides one setting."""
    from typer.testing import CliRunner

    from leantune.cli import app
    from leantune.tasks.attributes import ALL_LINEAR, RECIPE

    base = ["attributes", "finetune", "--data", str(attr_folder), "--model", "tiny", "--train-limit", "4", "--max-steps", "1",
            "--micro-batch-size", "4", "--eval-limit", "0", "--quiet"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "default")])
    assert result.exit_code == 0, result.output
    used = json.loads((tmp_path / "default" / "train" / "manifest.json").read_text())["config"]
    assert (used["r"], used["alpha"], used["lr"], used["batch_size"], used["epochs"]) == (
        RECIPE["r"], RECIPE["alpha"], RECIPE["lr"], RECIPE["batch_size"], RECIPE["epochs"])
    assert tuple(used["target_modules"]) == ALL_LINEAR == RECIPE["target_modules"] and used["train_on_inputs"] is False
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "over"), "--r", "4", "--alpha", "8", "--lr", "1e-4",
                                      "--target-modules", "q_proj, v_proj", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    used = json.loads((tmp_path / "over" / "train" / "manifest.json").read_text())["config"]
    assert (used["r"], used["alpha"], used["lr"], used["batch_size"], used["target_modules"]) == (4, 8, 1e-4, 4, ["q_proj", "v_proj"])


def test_each_shipped_model_has_its_own_default_recipe():
    """Gemma 3 270M defaults to the recipe chosen on its own validation cells; SmolLM2, the
    tiny model and local folders to the task's; a flag that is given overrides only its own setting."""
    from leantune.pipelines.attributes import attribute_finetune_config
    from leantune.tasks.attributes import MODEL_RECIPES, RECIPE, default_recipe

    gemma = MODEL_RECIPES["gemma3-270m"]
    cfg, unit = attribute_finetune_config("gemma3-270m", micro_batch_size=8, seed=3)
    assert unit == gemma["unit"] and gemma != RECIPE
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.r, cfg.alpha, tuple(cfg.target_modules)) == (
        gemma["epochs"], gemma["lr"], gemma["batch_size"], gemma["r"], gemma["alpha"], tuple(gemma["target_modules"]))
    assert cfg.micro_batch_size == 8 and cfg.seed == 3 and cfg.train_on_inputs is False
    assert cfg.eval_every == gemma["save_every"] and attribute_finetune_config("gemma3-270m", eval_every=7)[0].eval_every == 7
    assert attribute_finetune_config("smollm2")[0].eval_every is None  # once per epoch
    cfg, unit = attribute_finetune_config("gemma3-270m", unit="question", lr=5e-4)
    assert unit == "question" != gemma["unit"] and cfg.lr == 5e-4 and cfg.epochs == gemma["epochs"] and cfg.batch_size == gemma["batch_size"]
    for model in ("smollm2", "tiny", "runs/some-local-model"):
        assert default_recipe(model) == RECIPE and attribute_finetune_config(model)[1] == RECIPE["unit"]
    default_recipe("gemma3-270m")["lr"] = 1.0  # a copy: the table is not changed through it
    assert MODEL_RECIPES["gemma3-270m"]["lr"] == gemma["lr"] != 1.0


def test_evaluate_cli_few_shot_records_its_shots(attr_folder, tmp_path):
    from typer.testing import CliRunner

    from leantune.cli import app

    out = tmp_path / "fs"
    result = CliRunner().invoke(app, ["attributes", "evaluate", "--data", str(attr_folder), "--model", "tiny", "--limit", "2",
                                      "--shots", "2", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["settings"]["shots"] == 2 and saved["metrics"]["n_products"] == 2 and "2-shot on" in result.output
    assert saved["settings"]["cue_space"] is False  # few-shot without an adapter: "Answer:" unless told otherwise
    for flags, expected in ((["--shots", "2", "--cue-space"], True), (["--shots", "0"], False), (["--shots", "0", "--cue-space"], True)):
        folder = tmp_path / "-".join(flags)
        result = CliRunner().invoke(app, ["attributes", "evaluate", "--data", str(attr_folder), "--model", "tiny", "--limit", "2",
                                          *flags, "--out", str(folder), "--quiet"])
        assert result.exit_code == 0, result.output
        assert json.loads((folder / "metrics.json").read_text())["settings"]["cue_space"] is expected, flags


def test_default_cue_space_ends_only_prompts_without_an_adapter_without_the_space():
    from leantune.pipelines.attributes import default_cue_space

    assert default_cue_space(None, 3) is False
    assert default_cue_space(None, 0) is False  # zero-shot too (measured on Gemma's validation products)
    assert default_cue_space("adapter", 3) is True and default_cue_space("adapter", 0) is True


@pytest.mark.parametrize("unit", ["product", "question"])
def test_plain_prompts_can_end_without_the_cue_space(attr_folder, unit):
    """cue_space=False: a prompt without a chat template ends in "Answer:" (the model writes the space, as
    in the solved examples, whose "Answer: " blocks are unchanged); chat-template prompts are not affected."""
    from leantune.models.llm import load_tokenizer
    from leantune.tasks.attributes import AttributeTask

    class Plain:  # the tiny tokenizer without its chat template, as Gemma's base model has none
        def __init__(self, tok):
            self.tok, self.chat_template = tok, None

        def __call__(self, *a, **k):
            return self.tok(*a, **k)

    tok = load_tokenizer("tiny")
    plain = Plain(tok)
    prompts = {}
    for cue_space in (True, False):
        task = AttributeTask(data=str(attr_folder), unit=unit, shots=2, cue_space=cue_space, progress=False)
        for key, tokenizer in (("plain", plain), ("chat", tok)):
            seen = {}
            task._generate = lambda model, t, p, *a: seen.setdefault("all", p) and ["n/a"] * len(p)
            task.predict(None, tokenizer, "test")
            train = task.train_examples(task.train_pool()[:2], tokenizer)
            prompts[cue_space, key] = seen["all"], [e.prompt for e in train]
    for (cue_space, key), (evaluated, trained) in prompts.items():
        if key == "plain":
            end = "\nAnswer: " if cue_space else "\nAnswer:"
            assert all(p.endswith(end) for p in evaluated + trained)
            assert all(p.count("\nAnswer: ") == p.count("\nAnswer:") - (0 if cue_space else 1) for p in evaluated)
    assert prompts[True, "chat"] == prompts[False, "chat"]
    assert [p.rstrip(" ") for p in prompts[True, "plain"][0]] == prompts[False, "plain"][0]
    with pytest.raises(LeantuneError, match="^cue_space 'no'"):
        AttributeTask(data=str(attr_folder), cue_space="no")


def test_per_attribute_f1_is_the_micro_f1_of_that_attributes_questions():
    gold = _gold()
    answers = ["Acme", "Bolt", "Vanilla", None, "12 Ounce", None]  # a0 VC, a1 NV, a0 VW, a1 NN, a0 VC, a1 NN
    names = ["a0", "a1"] * 3
    m = summarise(judge(f"p{i}", "c", names[i], acc, ans) for i, (acc, ans) in enumerate(zip(gold, answers)))
    # a0: VC 2, VW 1 -> P 2/3, R 2/3; a1: NV 1, NN 2 -> no correct value: F1 0
    assert m["attribute_f1/a0"] == pytest.approx(2 / 3) and m["attribute_f1/a1"] == 0
    assert m["attribute_support/a0"] == 3 and m["attribute_accuracy/a1"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(prf({k: m[f"count/{k}"] for k in ("NN", "NV", "VN", "VC", "VW")})[2])


def test_interrupted_evaluation_resumes_from_its_generation_log(tmp_path, monkeypatch):
    """`attributes evaluate` appends every generated answer to a log; a re-run after an interruption
    generates only the rest and gives the same predictions as one uninterrupted run."""
    import json

    from leantune.errors import LeantuneError
    from leantune.pipelines.attributes import evaluate_attributes
    from leantune.tasks.attributes_generate import GENERATION_LOG
    from leantune.tasks import attributes as attributes_module
    from leantune.tasks.attributes_generate import GenerationLog

    folder = str(write_attribute_folder(tmp_path / "d", n_test=6))
    kw = dict(unit="question", batch_size=4, progress=False)
    straight = evaluate_attributes(folder, "tiny", out=tmp_path / "straight", **kw)
    assert not (tmp_path / "straight" / GENERATION_LOG).exists()  # removed once predictions.jsonl is written

    original, calls = attributes_module.generate_texts, []

    def interrupted(*args, on_batch=None, **kwargs):
        def stop_after_first(idx, texts):
            time.sleep(2.0)  # a slow first sitting: its seconds must count in the resumed run's wall time
            on_batch(idx, texts)
            raise KeyboardInterrupt

        calls.append(len(kwargs.get("done") or {}))
        return original(*args, on_batch=stop_after_first, **kwargs)

    monkeypatch.setattr("leantune.tasks.attributes.generate_texts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_attributes(folder, "tiny", out=tmp_path / "cut", **kw)
    logged = (tmp_path / "cut" / GENERATION_LOG).read_text().splitlines()
    assert json.loads(logged[0])["settings"]["unit"] == "question" and len(logged) == 1 + 4 + 1  # settings, one batch, its seconds
    earlier = GenerationLog(tmp_path / "cut" / GENERATION_LOG, {}).seconds()
    assert earlier >= 2.0 and json.loads(logged[-1]) == {"s": earlier}
    seen, generating = [], []

    def timed(*args, **kwargs):
        seen.append(len(kwargs.get("done") or {}))
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            generating.append(time.perf_counter() - start)

    monkeypatch.setattr("leantune.tasks.attributes.generate_texts", timed)
    resumed = evaluate_attributes(folder, "tiny", out=tmp_path / "cut", **kw)
    assert seen == [4]  # the first batch came from the log
    assert [r["raw"] for r in resumed.rows] == [r["raw"] for r in straight.rows] and resumed.metrics == straight.metrics
    # wall_s counts both sittings: the first's logged seconds and the second's own generation.
    assert resumed.wall_s >= earlier + generating[0] and json.loads((tmp_path / "cut" / "metrics.json").read_text())["settings"]["wall_s"] == resumed.wall_s
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / GENERATION_LOG).write_text(json.dumps({"settings": {"unit": "product"}}) + "\n")
    with pytest.raises(LeantuneError, match="a generation log made with other settings"):
        evaluate_attributes(folder, "tiny", out=tmp_path / "other", **kw)


def test_the_finetune_help_states_each_shipped_models_recipe():
    """`attributes finetune --help` spells the recipes out by hand (the CLI imports no model code to draw its
    help); this keeps them from drifting from MODEL_RECIPES when a grid changes a default."""
    import inspect

    from leantune.cli.attributes import finetune_cmd
    from leantune.tasks.attributes import MODEL_RECIPES

    doc = " ".join(inspect.getdoc(finetune_cmd).split())
    options = {p.default.param_decls[0]: p.default.help for p in inspect.signature(finetune_cmd).parameters.values()
               if hasattr(p.default, "param_decls")}
    for model, recipe in MODEL_RECIPES.items():
        paragraph = doc.split(f" {model}", 1)[1].split(". ")[0]  # the model's paragraph, up to its first sentence's end
        assert f"{recipe['unit']} unit, {recipe['epochs']:g} epochs" in paragraph, (model, paragraph)
        assert f"batch {recipe['batch_size']}, LoRA r {recipe['r']} / alpha {recipe['alpha']}" in paragraph, (model, paragraph)
    gemma = MODEL_RECIPES["gemma3-270m"]
    for flag, value in (("--epochs", f"{gemma['epochs']:g}"), ("--batch-size", gemma["batch_size"]), ("--r", gemma["r"]),
                        ("--alpha", gemma["alpha"])):
        assert f"gemma3-270m: {value})" in options[flag], (flag, options[flag])
    assert f"({gemma['unit']}, gemma3-270m included)" in options["--unit"] or f"gemma3-270m: {gemma['unit']})" in options["--unit"]
