"""What a scored curve's subsets hold, beside the random subsets of the same sizes and seeds.

For every finished run of a scored attribute curve (``<work>/runs/size*-seed*/subset.json``) it
sets the chosen products beside the random draw of the same size and seed (the units a random
curve's run trains on): the share of their questions with a value (the rest answer "n/a"),
questions per product, title length, the largest category's share, and the overlap of the two.
Prints a Markdown table and writes it to ``--out`` when given:

    python3 benchmarks/subset_composition.py --work benchmarks/results/curve-cells/product-smollm2-effort \\
        --out benchmarks/results/curve-product-smollm2-effort-composition.md
"""
from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)

from leantune.data.units import training_subset  # noqa: E402
from leantune.errors import LeantuneError  # noqa: E402
from leantune.io import atomic_path, read_json  # noqa: E402
from leantune.tasks.attributes import AttributeTask  # noqa: E402


def composition(products) -> dict:
    questions = sum(len(p.attributes) for p in products)
    valued = sum(v is not None for p in products for v in p.attributes.values())
    categories = Counter(p.category for p in products)
    top, top_n = categories.most_common(1)[0]
    return {"valued": valued / questions, "questions_per_product": questions / len(products),
            "title_chars": sum(len(p.text) for p in products) / len(products), "top_category": top,
            "top_share": top_n / len(products)}


def row(name: str, c: dict, overlap: str = "") -> str:
    return (f"| {name} | {c['valued']:.3f} | {c['questions_per_product']:.2f} | {c['title_chars']:.1f} | "
            f"{c['top_category']} {c['top_share']:.3f} | {overlap} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="a scored attribute curve's folder (its runs/ hold subset.json)")
    p.add_argument("--data", default="oa-mine")
    p.add_argument("--out", help="also write the table here (Markdown)")
    args = p.parse_args(argv)
    runs = sorted(Path(args.work).glob("runs/size*-seed*/subset.json"))
    if not runs:
        print(f"error: {args.work}: no runs/size*-seed*/subset.json", file=sys.stderr)
        return 2
    task = AttributeTask(data=args.data)
    pool, by_id = task.train_pool(), task.data.by_id("train")
    lines = ["| subset | questions with a value | questions / product | title chars | largest category, share | overlap with random |",
             "| --- | ---: | ---: | ---: | --- | ---: |",
             row(f"training pool ({len(pool)} products)", composition([by_id[u] for u in pool]))]
    for path in runs:
        sub = read_json(path)
        missing = [k for k in ("size", "seed", "method", "units") if k not in sub]
        if missing:
            raise LeantuneError(f"{path}: no field {missing[0]!r} (a curve run's subset.json has size, seed, method, units)")
        unknown = next((u for u in sub["units"] if u not in by_id), None)
        if unknown is not None:
            raise LeantuneError(f"{path}: unit {unknown!r} is not a training product of {args.data}")
        chosen = [by_id[u] for u in sub["units"]]
        drawn = training_subset(pool, sub["size"], sub["seed"])
        lines.append(row(f"random, {sub['size']} products, seed {sub['seed']}", composition([by_id[u] for u in drawn])))
        lines.append(row(f"{sub['method']}, {sub['size']} products, seed {sub['seed']}", composition(chosen),
                         str(len(set(sub["units"]) & set(drawn)))))
    text = "\n".join(lines)
    print(text)
    if args.out:
        command = "python3 benchmarks/subset_composition.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        with atomic_path(Path(args.out)) as tmp:
            Path(tmp).write_text(f"# Subset composition: {Path(args.work).name}\n\nReproduce: `{command}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LeantuneError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
