"""Markdown report (+ PNG) of a BIGRec run folder: settings, stage times, fine-tuned vs base metrics,
the loss curve and a few example recommendations."""
from __future__ import annotations

from pathlib import Path

from ..io import read_json, read_jsonl

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
    files = {}
    png = out / "report.png"
    if _plot(png, history, tuned, base):
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
    else:
        lines.append("not evaluated yet")
    lines += ["", "## Fine-tuning", ""]
    if ft:
        best = ft.get("best_valid_loss")
        lines.append(
            f"status **{ft['status']}** after {ft['steps']} of {ft['total_steps']} optimizer steps; "
            f"{ft['n_train']} training / {ft['n_valid']} validation examples; {ft['tokens_seen']:,} tokens seen; "
            f"best validation loss {best:.4f}" if best is not None else
            f"status **{ft['status']}** after {ft['steps']} of {ft['total_steps']} steps; {ft['tokens_seen']:,} tokens seen"
        )
        if ft.get("reason"):
            lines.append(f"\n{ft['reason']}")
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


def _history(out: Path) -> list[dict]:
    path = out / "finetune" / "result.json"
    return read_json(path).get("history", []) if path.exists() else []


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


def _plot(path: Path, history: list[dict], tuned: dict | None, base: dict | None) -> bool:
    if not history and not tuned:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    train = [(h["step"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    valid = [(h["step"], h["valid_loss"]) for h in history if h.get("valid_loss") is not None]
    if train:
        ax.plot(*zip(*train), label="train", marker="." if len(train) < 30 else None)
    if valid:
        ax.plot(*zip(*valid), label="validation", marker="o")
    ax.set(xlabel="optimizer step", ylabel="loss", title="fine-tuning loss")
    if train or valid:
        ax.legend()
    ax = axes[1]
    if tuned:
        import numpy as np

        x = np.arange(len(KS))
        width = 0.38
        ax.bar(x - width / 2, [tuned[f"recall@{k}"] for k in KS], width, label="fine-tuned")
        if base:
            ax.bar(x + width / 2, [base[f"recall@{k}"] for k in KS], width, label="base")
        ax.set_xticks(x, [f"R@{k}" for k in KS])
        ax.set(title="Recall@K on the test users")
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True
