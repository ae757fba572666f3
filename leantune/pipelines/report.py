"""Markdown report (+ PNG) of a BIGRec run folder: settings, stage times, fine-tuned vs base metrics,
the loss curve and a few example recommendations."""
from __future__ import annotations

from pathlib import Path

from ..io import read_float, read_json, read_jsonl, read_loss_history

KS = (5, 10, 20, 50)


def write_run_report(run) -> dict[str, Path]:
    """Write ``report.md`` (and ``report.png`` when there is something to plot) into the run folder."""
    from ..io import atomic_path

    out = run.path
    settings = run.record["settings"]
    tuned = run.outputs("evaluate").get("metrics")
    base = run.outputs("evaluate_base").get("metrics")
    ft = run.outputs("finetune")
    history = _history(out)
    units = {"fine-tuned": _per_unit(out / "eval")}
    base_dir = run.outputs("evaluate_base").get("out_dir")
    if base_dir:
        units["base"] = _per_unit(Path(base_dir))
    files = {}
    png = out / "report.png"
    if _plot(png, history, tuned, base, units):
        files["png"] = png

    lines = [f"# BIGRec run: {settings['method']} on {settings['data']}, budget {settings['budget']}, seed {settings['seed']}", ""]
    f = settings["finetune"]
    lines += [
        f"Model `{settings['model']}`; pool {settings['pool'] or 'all'} training samples, {settings['budget']} selected by "
        f"`{settings['method']}`; LoRA r {f['r']}, alpha {f['alpha']}, lr {f['lr']:g}, batch {f['batch_size']}, "
        f"{f['epochs']:g} epochs max{' (loss on prompt and response)' if f['train_on_inputs'] else ' (prompt masked)'}; "
        f"evaluated on {run.outputs('evaluate').get('n_users', '?')} test users (seed {settings['eval_seed']}), "
        f"beam {settings['num_beams']}, ≤{settings['max_new_tokens']} new tokens.",
        "",
        "## Metrics",
        "",
    ]
    if tuned:
        header = "| model | " + " | ".join(f"R@{k}" for k in KS) + " | " + " | ".join(f"N@{k}" for k in KS) + " |"
        lines += [header, "|---" * (1 + 2 * len(KS)) + "|"]
        for name, metrics in (("fine-tuned", tuned), ("base (no fine-tuning)", base)):
            if metrics:
                cells = [f"{metrics[f'recall@{k}']:.4f}" for k in KS] + [f"{metrics[f'ndcg@{k}']:.4f}" for k in KS]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if not base:
            lines.append("\n(base model not evaluated in this run)")
        lines += _intervals(units)
    else:
        lines.append("not evaluated yet")
    lines += ["", "## Fine-tuning", ""]
    if ft:
        best = read_float(ft.get("best_valid_loss"), "best_valid_loss")
        lines.append(
            f"status **{ft['status']}** after {ft['steps']} of {ft['total_steps']} optimizer steps; "
            f"{ft['n_train']} training / {ft['n_valid']} validation examples; {ft['tokens_seen']:,} tokens seen; "
            f"best validation loss {best:.4f}" if best is not None else
            f"status **{ft['status']}** after {ft['steps']} of {ft['total_steps']} steps; {ft['tokens_seen']:,} tokens seen"
        )
        if ft.get("reason"):
            lines.append(f"\n{ft['reason']}")
        sittings = ft.get("sittings") or []
        if len(sittings) > 1:  # resumed: what each part of the run trained on, so its wall time can be read
            parts = [f"steps {s.get('from_step')}–{s.get('to_step')} on {s.get('machine') or 'an unrecorded machine'} "
                     f"({_duration(s.get('wall_s'))})" for s in sittings]
            lines.append(f"\nTrained over {len(sittings)} sittings: " + "; ".join(parts))
        elif ft.get("machine"):
            lines.append(f"\nTrained on: {ft['machine']}")
    lines += ["", "## Wall time per stage", "", "| stage | status | wall time |", "|---|---|---|"]
    for name, stage in run.stages.items():
        if name == "report":
            continue
        note = " (reused from cache)" if stage.get("outputs", {}).get("reused") else ""
        lines.append(f"| {name} | {stage.get('status')} | {_duration(stage.get('wall_s'))}{note} |")
    lines += _examples(out, run)
    if "png" in files:
        lines += ["", "![loss and metrics](report.png)"]
    md = out / "report.md"
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    files["markdown"] = md
    return files


def _per_unit(folder: Path) -> list[dict] | None:
    from ..evaluation.units import PER_UNIT_FILE

    return read_jsonl(folder / PER_UNIT_FILE) if (folder / PER_UNIT_FILE).exists() else None


def _intervals(units: dict) -> list[str]:
    """R@20 and N@20 with 95% bootstrap intervals over users, and the paired fine-tuned − base difference."""
    from ..evaluation.compare import Evaluation, compare, mean_interval

    present = {name: rows for name, rows in units.items() if rows}
    if not present:
        return []
    n = len(next(iter(present.values())))
    lines = ["", f"With 95% bootstrap intervals over the {n} test users:", ""]
    for name, rows in present.items():
        cells = []
        for metric in ("recall@20", "ndcg@20"):
            mean, low, high = mean_interval([r[metric] for r in rows])
            cells.append(f"{metric} {mean:.4f} [{low:.4f}, {high:.4f}]")
        lines.append(f"- {name}: " + "; ".join(cells))
    if len(present) == 2 and {r["unit"] for r in present["fine-tuned"]} == {r["unit"] for r in present["base"]}:
        evaluations = [Evaluation(Path(name), name, 0, rows) for name, rows in present.items()]
        for metric in ("recall@20", "ndcg@20"):
            row = compare(evaluations, baseline="base", metric=metric, n_boot=2000, n_perm=2000).rows[0]
            lines.append(f"- fine-tuned − base, {metric}: {row.diff:+.4f} (95% paired CI {row.ci_low:+.4f} … "
                         f"{row.ci_high:+.4f}, permutation p = {row.p_value:.3g}); with {n} users a difference below "
                         f"{row.mde_planning:.4f} is not detectable at 80% power")
    lines.append("\nCompare runs with `leantune compare RUN... --with-base` (paired intervals over the same users).")
    return lines


def _history(out: Path) -> list[dict]:
    path = out / "finetune" / "result.json"
    # a diverged run's "nan" (io.write_json) comes back as a float
    return read_loss_history(read_json(path).get("history", []), str(path)) if path.exists() else []


def _examples(out: Path, run, n: int = 5) -> list[str]:
    tuned_path = out / "eval" / "predictions.jsonl"
    if not tuned_path.exists():
        return []
    tuned = read_jsonl(tuned_path)[:n]
    base_dir = run.outputs("evaluate_base").get("out_dir")
    base = {}
    if base_dir and (Path(base_dir) / "predictions.jsonl").exists():
        base = {r["sample_id"]: r["prediction"] for r in read_jsonl(Path(base_dir) / "predictions.jsonl")}
    lines = ["", f"## Example generations (first {len(tuned)} test users)", "",
             "| user | target(s) | fine-tuned | base |", "|---|---|---|---|"]
    for row in tuned:
        lines.append(f"| {row['user']} | {_cell('; '.join(row['target_titles']))} | {_cell(row['prediction'])} | "
                     f"{_cell(base.get(row['sample_id'], ''))} |")
    return lines


def _cell(text: str, limit: int = 80) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _plot(path: Path, history: list[dict], tuned: dict | None, base: dict | None, units: dict | None = None) -> bool:
    if not history and not tuned:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    train = [(h["step"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    valid = [(h["step"], h["valid_loss"]) for h in history if h.get("valid_loss") is not None]
    if train:
        ax.plot(*zip(*train), label="train", marker="." if len(train) < 30 else None)
    if valid:
        ax.plot(*zip(*valid), label="validation", marker="o")
    ax.set(xlabel="optimizer step", ylabel="loss", title="fine-tuning loss")
    if train or valid:
        # From zero: an axis zoomed to the last digits makes noise look like a trend.
        ax.set_ylim(0, 1.1 * max(v for _, v in train + valid))
        ax.legend()
    ax = axes[1]
    if tuned:
        import numpy as np

        from ..evaluation.compare import mean_interval

        units = units or {}
        x = np.arange(len(KS))
        width = 0.38
        n_users = None
        for offset, name, metrics in ((-width / 2, "fine-tuned", tuned), (width / 2, "base", base)):
            if not metrics:
                continue
            rows = units.get(name)
            heights = [metrics[f"recall@{k}"] for k in KS]
            err = None
            if rows:
                n_users = len(rows)
                bounds = [mean_interval([r[f"recall@{k}"] for r in rows]) for k in KS]
                err = np.array([[m - lo for m, lo, _ in bounds], [hi - m for m, _, hi in bounds]])
            ax.bar(x + offset, heights, width, yerr=err, capsize=3, label=name)
        ax.set_xticks(x, [f"R@{k}" for k in KS])
        users = f"{n_users} test users" if n_users else "test users"
        ax.set(ylabel="Recall@K (mean over users)", title=f"Recall@K, {users}, 95% bootstrap intervals")
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True
