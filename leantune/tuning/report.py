"""``leantune tune report``: markdown + PNG plots of a search, read from its Optuna storage."""
from __future__ import annotations

import math
from pathlib import Path

from ..io import atomic_path, save_figure, write_json
from .analysis import SearchRecords, TrialRecord, early_epoch_span, early_vs_final, load_records, ranking_by_fraction
from .study import public_url

PLOTS = ("score_vs_trial.png", "lr_vs_alpha.png", "valid_loss.png", "early_vs_final.png")


def _save(fig, path: Path) -> None:
    save_figure(fig, path, dpi=110, tight=True)


def _plot_scores(rec: SearchRecords, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ok = [t for t in rec.trials if t.status == "ok"]
    ax.plot([t.number for t in ok], [t.early_score for t in ok], "o", color="tab:blue", label="early (validation)")
    cont = [t for t in rec.continued if t.final_status == "ok"]
    ax.plot([t.number for t in cont], [t.final_score for t in cont], "s", color="tab:green", mfc="none", ms=9, label="end (validation)")
    failed = [t for t in rec.trials if t.failed]
    ax.plot([t.number for t in failed], [0.0] * len(failed), "x", color="tab:red", ms=9, label="failed")
    if rec.baseline is not None:
        ax.axvline(rec.baseline.number, color="grey", ls=":", lw=1, label="baseline trial")
    ax.set_xlabel("trial number")
    ax.set_ylabel(rec.metric)
    ax.set_title("score per trial, at the early point and at the end")
    ax.legend(fontsize=8)
    _save(fig, path)


def _plot_lr_alpha(rec: SearchRecords, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    have = [t for t in rec.trials if "lr" in t.params and "alpha" in t.params]
    good = [t for t in have if not t.failed]
    scores = [t.final_score if t.final_score is not None else t.early_score for t in good]
    continued = [t.final_score is not None for t in good]
    vmin, vmax = (min(scores), max(scores)) if scores else (0, 1)
    for flag, marker, size, label in ((True, "o", 70, "final score (continued)"), (False, "^", 35, "early score only")):
        sel = [i for i, c in enumerate(continued) if c == flag]
        if sel:
            sc = ax.scatter([good[i].params["lr"] for i in sel], [good[i].params["alpha"] for i in sel], c=[scores[i] for i in sel],
                            cmap="viridis", vmin=vmin, vmax=vmax, marker=marker, s=size, edgecolors="k", linewidths=0.5, label=label)
    if good:
        fig.colorbar(sc, ax=ax, label=rec.metric)
    failed = [t for t in have if t.failed]
    ax.scatter([t.params["lr"] for t in failed], [t.params["alpha"] for t in failed], marker="x", color="tab:red", s=60, label="failed")
    ax.set_xscale("log")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("LoRA alpha")
    ax.set_title("learning rate vs LoRA alpha")
    ax.legend(fontsize=7, loc="best")
    _save(fig, path)


def _as_float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _plot_losses(rec: SearchRecords, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for t in rec.trials:
        rows = [r for r in t.history if r.get("valid_loss") is not None]
        if not rows:
            continue
        xs, ys = [_as_float(r.get("epoch")) for r in rows], [_as_float(r["valid_loss"]) for r in rows]
        style = dict(color="tab:red", ls="--", lw=0.8, alpha=0.7) if t.failed else (
            dict(color="tab:green", lw=1.6) if t.final_status == "ok" else dict(color="tab:blue", lw=0.8, alpha=0.5))
        ax.plot(xs, ys, marker=".", **style)
        bad = [x for x, y in zip(xs, ys) if not math.isfinite(y)]
        finite = [y for y in ys if math.isfinite(y)]
        if bad:  # a NaN loss has no height: mark where it happened, at the top of that trial's curve
            ax.plot(bad, [max(finite) if finite else 0.0] * len(bad), "x", color="tab:red")
    ax.plot([], [], color="tab:green", label="continued to the end")
    ax.plot([], [], color="tab:blue", label="early only")
    ax.plot([], [], color="tab:red", ls="--", label="failed (x: NaN)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.set_title("validation loss per trial")
    ax.legend(fontsize=8)
    _save(fig, path)


def _plot_early_final(rec: SearchRecords, agreement: dict, k: int, path: Path) -> None:
    pts = [t for t in rec.continued if t.final_score is not None]
    colors = ["tab:red" if t.failed else ("tab:orange" if t.baseline else "tab:blue") for t in pts]
    plot_early_final([t.early_score for t in pts], [t.final_score for t in pts], [str(t.number) for t in pts], agreement,
                     path, metric=rec.metric, what="trials", colors=colors)


def plot_early_final(early: list[float], final: list[float], labels: list[str], agreement: dict, path: Path,
                     metric: str = "score", what: str = "trials", colors: list[str] | None = None) -> Path:
    """Scatter of each candidate's early score against its final one (a label beside each point, the
    diagonal dotted), titled with ``agreement`` (``rank_agreement``/``agreement_interval``); a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(early, final, c=colors or "tab:blue", edgecolors="k", linewidths=0.5)
    for x, y, label in zip(early, final, labels):
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lims = [0, max([1e-9] + [max(x, y) for x, y in zip(early, final)]) * 1.05]
    ax.plot(lims, lims, color="grey", lw=0.8, ls=":")
    sp, kt = agreement.get("spearman"), agreement.get("kendall")
    title = f"early vs final ({agreement['n']} {what})"
    if sp is not None:
        title += f"\nSpearman {sp:.2f}, Kendall {kt:.2f}, top-{agreement['k']} overlap {agreement['topk_overlap']}/{agreement['k']}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"early {metric}")
    ax.set_ylabel(f"final {metric} (validation)")
    _save(fig, path)
    return Path(path)


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.2e}" if 0 < abs(x) < 1e-2 else f"{x:.{digits}g}"
    return str(x)


def _params_cell(t: TrialRecord) -> str:
    return ", ".join(f"{k}={_fmt(v, 3)}" for k, v in t.params.items())


def render_markdown(rec: SearchRecords, agreement: dict, k: int, storage_url: str, by_fraction: list | None = None) -> str:
    storage_url = public_url(storage_url)
    c = rec.compute()
    s = rec.settings
    lines = [f"# Hyperparameter search `{rec.study}`", ""]
    lines += [f"- storage: `{storage_url}`  (view live: `optuna-dashboard {storage_url}`)",
              f"- metric: `{rec.metric}` (higher is better); early point: {s.get('early_fraction')} of each schedule",
              "- run settings: " + ", ".join(f"{k_}={v}" for k_, v in s.items() if k_ not in ("space", "early_fraction", "metric")),
              "- search space: " + "; ".join(f"{n} {_space_cell(p)}" for n, p in s.get("space", {}).get("params", {}).items()),
              f"- trials: {len(rec.trials)} finished phase 1, {sum(t.status == 'failed' for t in rec.trials)} failed early, "
              f"{len(rec.continued)} continued to the end; {len(rec.lost)} lost to dead workers and retried; {rec.running} still running", ""]
    lines += ["## Compute (optimizer steps)", "",
              "| phase 1 (early) | phase 2 (continue) | total | every trial to the end | share |", "|---|---|---|---|---|",
              f"| {c['phase1_steps']} | {c['phase2_steps']} | {c['total_steps']} | {c['full_fidelity_steps']} | "
              f"{100 * c['total_steps'] / max(1, c['full_fidelity_steps']):.1f}% |",
              "", f"Tokens: phase 1 {c['phase1_tokens']}, phase 2 {c['phase2_tokens']}.", ""]
    best = rec.best()
    lines += ["## Continued trials (ranked by final validation score)", "",
              "| trial | role | early rank | early | final valid | test | steps | hyperparameters |", "|---|---|---|---|---|---|---|---|"]
    early_rank = {t.number: i + 1 for i, t in enumerate(sorted(rec.trials, key=lambda t: (-t.early_score, t.number)))}
    for t in sorted(rec.continued, key=lambda t: (-(t.final_score or 0), t.number)):
        name = f"**{t.number}**" if best is not None and t.number == best.number else str(t.number)
        final = f"FAILED ({t.final_reason})" if t.final_status == "failed" else _fmt(t.final_score)
        lines.append(f"| {name} | {t.role}{' (baseline)' if t.baseline and t.role != 'baseline' else ''} | {early_rank[t.number]} | "
                     f"{_fmt(t.early_score)} | {final} | {_fmt(t.test_score)} | {t.final_steps}/{t.total_steps} | {_params_cell(t)} |")
    lines.append("")
    base = rec.baseline
    if best is not None:
        lines.append(f"Chosen by validation: trial {best.number}, final validation {_fmt(best.final_score)}, test {_fmt(best.test_score)}.")
        if base is not None and base.final_status is not None:
            lines.append(f"Baseline (default hyperparameters, trial {base.number}): final validation {_fmt(base.final_score)}, "
                         f"test {_fmt(base.test_score)}" + (f" — FAILED: {base.reason}" if base.failed else "") + ".")
            if best.test_score is not None and base.test_score is not None:
                lines.append(f"Test gain over the baseline: {best.test_score - base.test_score:+.4g}.")
        lines.append("")
    lines += ["## Do early ranks predict final ranks?", ""]
    lines += _early_epochs_lines(rec.trials)
    if agreement["spearman"] is None:
        lines.append(f"Not enough continued trials with distinct scores to correlate ({agreement['n']}).")
    else:
        scope = ("every resumable trial was continued (`--validate-all`)" if agreement["all_continued"]
                 else "only the continued trials (top-k and baseline), a selected subset: run with `--validate-all` for the real figure")
        a = agreement
        lines.append(f"Over {a['n']} trials ({scope}): Spearman {a['spearman']:.3f}{_ci(a, 'spearman')}, "
                     f"Kendall {a['kendall']:.3f}{_ci(a, 'kendall')}, "
                     f"early top-{a['k']} ∩ final top-{a['k']} = {a['topk_overlap']}{_ci(a, 'topk_overlap')} "
                     "(95% bootstrap intervals over trials).")
    lines.append("")
    if by_fraction:
        lines += ["## When does the ranking settle?", "",
                  "Validation loss at each fraction of the schedule against the final score, over the trials continued to the end "
                  "(95% bootstrap intervals over trials):", "",
                  "| fraction | trials | Spearman [95% CI] | Kendall [95% CI] | top-k overlap [95% CI] |", "|---|---|---|---|---|"]
        for r in by_fraction:
            lines.append(f"| {r['fraction']:.0%} | {r['n']} | {_fmt(r['spearman'], 3)}{_ci(r, 'spearman')} | "
                         f"{_fmt(r['kendall'], 3)}{_ci(r, 'kendall')} | "
                         f"{r['topk_overlap'] if r['topk_overlap'] is not None else '–'}/{r['k']}{_ci(r, 'topk_overlap')} |")
        lines.append("")
    failed = [t for t in rec.trials if t.failed]
    lines += ["## Failed trials", ""]
    if failed:
        lines += ["| trial | phase | reason | hyperparameters |", "|---|---|---|---|"]
        for t in failed:
            phase = "early" if t.status == "failed" else "continuation"
            lines.append(f"| {t.number} | {phase} | {t.reason} | {_params_cell(t)} |")
    else:
        lines.append("None.")
    lines += ["", "## Plots", ""]
    lines += [f"![{p[:-4]}]({p})" for p in PLOTS]
    return "\n".join(lines) + "\n"


def _early_epochs_lines(trials: list[TrialRecord]) -> list[str]:
    """A line saying where the early points lie in epochs when they differ between trials: a fraction of each
    trial's own schedule is then not equal compute (a longer schedule is scored after more training)."""
    span = early_epoch_span([(float(t.params["epochs"]), t.early_steps, t.total_steps) for t in trials
                             if "epochs" in t.params and not t.params.get("max_steps") and t.status == "ok"])
    if span is None:
        return []
    return [f"The early points lie at {span[0]:.1f} to {span[1]:.1f} epochs (each trial's fraction of its own schedule), so "
            "early scores are not taken at equal compute: a trial with more epochs was scored after more training and may "
            "have less of its run left to gain.", ""]


def _ci(row: dict, key: str) -> str:
    """`` [lo, hi]`` of ``row[key + "_ci"]`` (an ``agreement_interval`` result), or nothing without one."""
    ci = row.get(f"{key}_ci")
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def _space_cell(p: dict) -> str:
    if "choices" in p:
        return "{" + ", ".join(map(str, p["choices"])) + "}"
    if p.get("kind") == "fixed":
        return f"= {p.get('value')}"
    return f"[{_fmt(p.get('low'))}, {_fmt(p.get('high'))}]" + (" log" if p.get("log") else "")


def write_report(study: str, storage_url: str, out_dir: str | Path, top_k: int = 5) -> Path:
    """Write ``report.md``, ``summary.json`` and the four PNGs into ``out_dir``; return the markdown path."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    rec = load_records(study, storage_url)  # a missing study or storage is refused before any folder is made
    out_dir.mkdir(parents=True, exist_ok=True)
    agreement = early_vs_final(rec, top_k)
    by_fraction = ranking_by_fraction(rec, top_k)
    _plot_scores(rec, out_dir / PLOTS[0])
    _plot_lr_alpha(rec, out_dir / PLOTS[1])
    _plot_losses(rec, out_dir / PLOTS[2])
    _plot_early_final(rec, agreement, top_k, out_dir / PLOTS[3])
    md = out_dir / "report.md"
    with atomic_path(md) as tmp:
        tmp.write_text(render_markdown(rec, agreement, top_k, storage_url, by_fraction))
    best = rec.best()
    write_json(out_dir / "summary.json", {
        "study": study, "metric": rec.metric, "compute": rec.compute(), "rank_agreement": agreement,
        "ranking_by_fraction": by_fraction,
        "best": None if best is None else {"trial": best.number, "params": best.params, "final_valid": best.final_score, "test": best.test_score},
        "baseline": None if rec.baseline is None else {"trial": rec.baseline.number, "final_valid": rec.baseline.final_score,
                                                        "test": rec.baseline.test_score, "failed": rec.baseline.failed},
        "failed": [{"trial": t.number, "reason": t.reason} for t in rec.trials if t.failed],
    })
    return md
