"""The product attribute extraction task (``attributes``), e.g. OA-Mine titles.

Two units: ``product`` (one sample per product, the model answers a JSON object with every
attribute of the product's category) and ``question`` (one sample per (product, attribute)).
The metric is the same in both: every (product, attribute) question is judged once.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import LeantuneError, ParameterError
from ..io import write_jsonl
from .attributes_data import AttributeData, Product, load_attribute_data, question_id, split_question_id
from ..evaluation.generation import SEARCHES, generate_texts, greedy_settings
from .attributes_generate import json_object_closed, line_ended
from .attributes_prompts import product_answer, product_prompt, question_answer, question_prompt
from .attributes_scoring import INVALID, SUMMARY_METRICS, judge, parse_product_answer, parse_question_answer, summarise
from ..train.config import ALL_LINEAR
from .base import TASKS, Task, TextExample

UNITS = ("product", "question")
# The task's default fine-tuning recipe (`leantune attributes finetune`): the highest validation
# micro-F1 of the recipe grid in benchmarks/bench_attr_recipe.py (SmolLM2-135M, all 1,288 training
# products; benchmarks/results/attr-recipe-smollm2/). Loss on the answer only (train_on_inputs False).
# Models without a recipe of their own in MODEL_RECIPES (tiny, local folders) train with it.
RECIPE = {"unit": "product", "epochs": 5.0, "lr": 2e-3, "r": 16, "alpha": 32, "target_modules": ALL_LINEAR, "batch_size": 16}
# Per shipped model, the recipe chosen on that model's own validation cells. Gemma 3 270M: three epochs
# over the 1,288 training products (483 steps of 8), LoRA r 8 / alpha 16 on every linear layer, validation
# F1 0.766 on all 150 products (benchmarks/results/attr-recipe-gemma3-270m/). Until 2026-12-05 it was one
# epoch over the questions (0.733). Since 2026-12-07 a default moves only to a grid cell that beats it on
# validation with a paired 95% interval clear of zero (benchmarks/bench_attr_recipe.py, `default_lines`): two
# Gemma cells since lead it by 0.003, not told apart, so it stays.
MODEL_RECIPES = {
    "smollm2": RECIPE,
    "gemma3-270m": {"unit": "product", "epochs": 3.0, "lr": 1e-3, "r": 8, "alpha": 16, "target_modules": ALL_LINEAR,
                    "batch_size": 8, "save_every": 20},
}
# save_every (optional): optimizer steps between checkpoints when the user gives none (else once per
# epoch). Gemma's recipe is 483 steps, about 1.3 h on two CPU threads with bf16: without it a stopped
# run would have nothing to resume from until its first epoch ended. It does not change what is learned.


def default_recipe(model: str) -> dict:
    """The default fine-tuning recipe for ``model``: its own (``MODEL_RECIPES``) for a shipped model's
    name, else the task's (``RECIPE``, chosen on SmolLM2-135M). Keys: unit, epochs, lr, r, alpha,
    target_modules, batch_size, and optionally save_every."""
    return dict(MODEL_RECIPES.get(str(model), RECIPE))


@dataclass
class AttributeConfig:
    data: str = "oa-mine"
    unit: str = "product"  # what one training sample is: a product (JSON answer) or one question
    batch_size: int = 16  # generation batch
    max_new_tokens: int | None = None  # None: per prompt, the longest answer it could need (see _budget)
    strict_json: bool = False  # True: text around the JSON object makes every answer invalid
    shots: int = 0  # evaluation prompts show this many solved training products of the same category first
    cue_space: bool = True  # without a chat template, prompts end in "Answer: " (True) or "Answer:" (attributes_prompts)
    # Generation: "transformers" (batches through model.generate) or "leantune" (the pooled search:
    # batch_size prompts in flight, each leaving as soon as its answer ends; Llama-style models).
    search: str = "transformers"
    progress: bool = True

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ParameterError("unit", repr(self.unit), f"choose one of {', '.join(UNITS)}")
        if self.batch_size < 1:
            raise ParameterError("batch_size", self.batch_size, "must be at least 1")
        if isinstance(self.shots, bool) or not isinstance(self.shots, int) or self.shots < 0:
            raise ParameterError("shots", repr(self.shots), "must be a whole number, at least 0")
        if not isinstance(self.cue_space, bool):
            raise ParameterError("cue_space", repr(self.cue_space), "must be True or False")
        if self.search not in SEARCHES:
            raise ParameterError("search", repr(self.search), f"choose one of {', '.join(SEARCHES)}")


def seeded_subset(products: Sequence[Product], limit: int | None, seed: int) -> list[Product]:
    """``limit`` products drawn with ``seed`` (in data order, so prompts stay comparable); all if None."""
    from ..data.units import seeded_sample

    return seeded_sample(products, limit, seed, name="limit")


@TASKS.register("attributes")
class AttributeTask(Task):
    """Attribute-value extraction; primary metric: micro-F1 over all (product, attribute) questions
    (accuracy rewards answering "n/a": on OA-Mine's test split that alone scores 0.53)."""

    name = "attributes"
    primary_metric = "f1"
    breakdown_prefix = "attribute_f1/"  # per-attribute metrics, for per-attribute curves
    breakdown_support_prefix = "attribute_support/"  # questions per attribute: which lines to draw
    train_on_inputs = False  # loss on the answer only: the title is given, not to be learned

    def __init__(self, data: str = "oa-mine", unit: str = "product", **options):
        unknown = sorted(set(options) - set(AttributeConfig.__dataclass_fields__))
        if unknown:
            raise LeantuneError(f"attributes task: unknown option(s) {unknown} (known: {', '.join(AttributeConfig.__dataclass_fields__)})")
        self.config = AttributeConfig(data=data, unit=unit, **options)
        self.data: AttributeData = load_attribute_data(data)
        self.unit = unit

    @classmethod
    def model_recipe(cls, model: str) -> dict:
        """``default_recipe(model)``: what ``leantune attributes finetune`` trains ``model`` with."""
        return default_recipe(model)

    # -- training data ---------------------------------------------------------------------------
    def default_sizes(self) -> tuple[int, ...]:
        """Learning-curve sizes in this unit, from zero-shot to the whole pool (question units reach past
        the ~6,500 samples where Oliver & Wang saw saturation)."""
        n = len(self.train_pool())
        base = (0, 25, 50, 100, 200, 400, 800) if self.unit == "product" else (0, 100, 400, 1600, 3200, 6500)
        return tuple(s for s in base if s < n) + (n,)

    def train_pool(self) -> list[str]:
        return self._unit_ids(self.data.products("train"))

    def _unit_ids(self, products: Sequence[Product]) -> list[str]:
        if self.unit == "product":
            return [p.id for p in products]
        return [question_id(p.id, a) for p in products for a in p.attributes]

    def examples(self, split: str, unit_ids: Sequence[str], tokenizer) -> list[TextExample]:
        products = self.data.by_id(split)
        out = []
        for uid in unit_ids:
            if self.unit == "product":
                p = products.get(uid)
                if p is None:
                    raise LeantuneError(f"product {uid!r} is not in the {split} split of {self.data.folder}")
                out.append(TextExample(product_prompt(p, tokenizer, cue_space=self.config.cue_space), product_answer(p), uid))
            else:
                pid, attribute = split_question_id(uid)
                p = products.get(pid)
                if p is None or attribute not in p.attributes:
                    raise LeantuneError(f"question {uid!r} is not in the {split} split of {self.data.folder}")
                out.append(TextExample(question_prompt(p, attribute, tokenizer, cue_space=self.config.cue_space), question_answer(p, attribute), uid))
        return out

    def train_examples(self, unit_ids: Sequence[str], tokenizer) -> list[TextExample]:
        return self.examples("train", unit_ids, tokenizer)

    def eval_size(self, split: str = "test") -> int:
        """Products in ``split``: an evaluation's ``limit`` counts products in either unit."""
        return len(self.data.products(split))

    def set_progress(self, show: bool) -> None:
        self.config.progress = show

    def valid_examples(self, tokenizer, limit: int | None = None, seed: int = 0,
                       unit_ids: Sequence[str] | None = None) -> list[TextExample]:
        if unit_ids is not None:
            raise LeantuneError("attributes task: validation is a seeded sample of the validation products (limit), not tied to training units")
        products = seeded_subset(self.data.products("valid"), limit, seed)
        return self.examples("valid", self._unit_ids(products), tokenizer)

    # -- evaluation ------------------------------------------------------------------------------
    def demos(self, product: Product, seed: int = 0) -> list[Product]:
        """The ``shots`` solved training products shown before ``product`` in a few-shot prompt: drawn
        from its category's training products with a generator seeded by (``seed``, product id), so a
        product gets the same examples whichever subset is evaluated. Fewer when its category has fewer."""
        k = self.config.shots
        if k == 0:
            return []
        if not hasattr(self, "_train_by_category"):
            by_category: dict[str, list[Product]] = {}
            for p in self.data.products("train"):
                by_category.setdefault(p.category, []).append(p)
            self._train_by_category = by_category
        pool = [p for p in self._train_by_category.get(product.category, []) if p.id != product.id]
        return random.Random(f"{seed}|{product.id}").sample(pool, min(k, len(pool)))

    def predict(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0, log=None):
        """Generate and judge; returns (metrics, rows) with one row per question (raw output included).

        ``limit`` draws that many *products* (with all their questions) in either unit, so the two
        units are compared on the same questions. ``log`` (a ``GenerationLog``) keeps every generated
        answer as it comes, so an interrupted evaluation resumes instead of starting over.
        """
        cfg = self.config
        products = seeded_subset(self.data.products(split), limit, seed)
        judged, rows, status = [], [], []
        if self.unit == "product":
            prompts = [product_prompt(p, tokenizer, self.demos(p, seed), cfg.cue_space) for p in products]
            budgets = cfg.max_new_tokens or [self._budget(tokenizer, p) for p in products]
            raw = self._generate(model, tokenizer, prompts, budgets, json_object_closed, log)
            for p, text in zip(products, raw):
                answers, st = parse_product_answer(text, list(p.attributes), strict=cfg.strict_json)
                status.append(st)
                for a in p.attributes:
                    j = judge(p.id, p.category, a, p.accepted(a), answers[a])
                    judged.append(j)
                    rows.append({**j.as_dict(), "raw": text, "parse": st})
        else:
            pairs = [(p, a) for p in products for a in p.attributes]
            prompts = [question_prompt(p, a, tokenizer, self.demos(p, seed), cfg.cue_space) for p, a in pairs]
            budgets = cfg.max_new_tokens or [self._budget(tokenizer, p, a) for p, a in pairs]
            raw = self._generate(model, tokenizer, prompts, budgets, line_ended, log)
            for (p, a), text in zip(pairs, raw):
                answer = parse_question_answer(text)
                status.append("failed" if answer is INVALID else "ok")
                j = judge(p.id, p.category, a, p.accepted(a), answer)
                judged.append(j)
                rows.append({**j.as_dict(), "raw": text, "parse": status[-1]})
        return summarise(judged, status), rows

    def baselines(self, metric: str, split: str = "test", limit: int | None = None, seed: int = 0) -> dict[str, float]:
        """Scores without a model on the questions ``predict`` would judge, for plots beside zero-shot:
        answering "n/a" to every question (judged by the same scorer)."""
        products = seeded_subset(self.data.products(split), limit, seed)
        judged = [judge(p.id, p.category, a, p.accepted(a), None) for p in products for a in p.attributes]
        metrics = summarise(judged, ["ok"] * len(products))
        return {'answer "n/a" everywhere': float(metrics[metric])} if metric in metrics else {}

    def evaluate(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0) -> dict[str, float]:
        return self.predict(model, tokenizer, split, limit, seed)[0]

    def evaluate_units(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0, log=None):
        """``evaluate``'s metrics and one row per question; ``log`` as in ``predict``."""
        from ..evaluation.units import attribute_unit_rows

        metrics, rows = self.predict(model, tokenizer, split, limit, seed, log=log)
        return metrics, attribute_unit_rows(rows)

    def evaluate_answers(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0, log=None):
        """``evaluate_units``'s metrics and rows, and the judged answers (``predict``'s rows)."""
        from ..evaluation.units import attribute_unit_rows

        metrics, rows = self.predict(model, tokenizer, split, limit, seed, log=log)
        return metrics, attribute_unit_rows(rows), rows

    def generation_log(self, folder, settings: dict):
        """Answers are logged batch by batch (``GenerationLog``), so a long evaluation resumes."""
        from .attributes_generate import GenerationLog

        log = GenerationLog.in_folder(folder, settings)
        log.check()
        return log

    def metric_names(self) -> list[str]:
        """The scalar keys ``evaluate`` always returns (per-attribute ones, ``attribute_f1/<name>`` etc., besides)."""
        return list(SUMMARY_METRICS)

    @staticmethod
    def _budget(tokenizer, product: Product, attribute: str | None = None) -> int:
        """Token budget for one answer: values are spans of the title, so a correct answer fits in
        the all-"n/a" answer plus the title (on OA-Mine every gold answer does, with 5 tokens to
        spare); the margin lets a wrong-but-closed answer finish. Saves most of the time a looping
        zero-shot model would spend running to a fixed limit."""
        title = len(tokenizer(product.text)["input_ids"])
        if attribute is not None:
            return title + 8
        empty = json.dumps({a: "n/a" for a in product.attributes}, ensure_ascii=False)
        return len(tokenizer(empty)["input_ids"]) + title + 16

    def _generate(self, model, tokenizer, prompts, budgets, stop, log=None):
        """Greedy answers, each within its token budget, stopped by ``stop`` on the decoded text."""
        done = log.read(prompts) if log is not None else None
        if isinstance(budgets, int):
            budgets = [budgets] * len(prompts)
        return generate_texts(model, tokenizer, prompts, greedy_settings(self.config.batch_size, stop, search=self.config.search), self.config.progress,
                              on_batch=log.writer(prompts) if log is not None else None, budgets=budgets, done=done,
                              desc="attributes")


def write_predictions(path: str | Path, rows: list[dict]) -> None:
    """Write the judged rows of ``predict`` and, beside them, ``per_unit.jsonl`` (one row per
    question, for ``leantune compare``)."""
    from ..evaluation.units import attribute_unit_rows, write_per_unit

    write_jsonl(path, rows)
    write_per_unit(Path(path).parent, attribute_unit_rows(rows))
