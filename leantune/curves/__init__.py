"""Data-efficiency learning curves for any registered task, with a saturating fit.

``learning_curve(cfg, out)`` runs (or resumes) every (size, seed) adapter, then writes the results
table (CSV + JSON), the fit, the saturation point with a bootstrap interval, and the plots.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ParameterError
from .analysis import CurveAnalysis, analyse, describe, write_table
from .breakdown import BreakdownCurves, breakdown_curves
from .fit import CurveFit, Saturation, bootstrap_saturation, fit_curve
from .paired import PairedSteps, paired_steps, unit_draws
from .plan import CurvePlan, measure_costs, plan_curve
from .runner import DEFAULT_SIZES, CurveConfig, CurveRecipe, CurveRun, default_sizes, make_task, resolve_recipe, run_curve
from .versus import CurveGap, compare_curves, read_curve_gap

__all__ = [
    "BreakdownCurves", "CurveConfig", "CurveFit", "CurveGap", "CurvePlan", "CurveRecipe", "CurveResult", "DEFAULT_SIZES", "PairedSteps", "Saturation", "analyse",
    "bootstrap_saturation", "breakdown_curves", "compare_curves", "default_sizes", "fit_curve", "learning_curve", "make_task", "measure_costs", "paired_steps",
    "plan_curve", "read_curve_gap", "resolve_recipe", "run_curve",
]


@dataclass
class CurveResult:
    run: CurveRun
    analysis: CurveAnalysis
    files: dict  # name -> path
    lines: list  # the printed summary
    steps: PairedSteps | None = None  # each size against the previous one and zero-shot, paired
    breakdown: BreakdownCurves | None = None  # per attribute, with intervals (runs with per-question rows)


def learning_curve(
    cfg: CurveConfig, out: str | Path, task=None, log: Callable[[str], None] = print, cached_only: bool = False
) -> CurveResult:
    """Run (or resume) every (size, seed) adapter of ``cfg`` in ``out``, fit the curve and write table, fit and plots."""
    from .plots import plot_breakdown, plot_breakdown_bands, plot_curve

    out = Path(out)
    task = task or make_task(cfg.task, cfg.task_options)
    metric = cfg.metric or task.primary_metric
    run = run_curve(cfg, out, task=task, log=log, cached_only=cached_only)
    if not run.rows:
        raise ParameterError("cached_only", True, f"{out} holds no finished runs for these sizes and seeds yet, and nothing is trained")
    evaluated = [r for r in run.rows if r["metrics"]]
    if evaluated and metric not in evaluated[0]["metrics"]:
        have = ", ".join(sorted(k for k in evaluated[0]["metrics"] if "/" not in k))
        raise ParameterError("metric", repr(metric), f"not among the task's metrics ({have})")
    failed = [r for r in run.rows if not r["metrics"]]
    for r in failed:
        log(f"size {r['size']} seed {r['seed']}: {r['status']} ({(r.get('train') or {}).get('reason', '')}); left out of the fit")
    # The saturation interval resamples the test units too (paired across sizes) when every run has per-unit results.
    draws, why_not = unit_draws(out, run.rows, metric, n_boot=cfg.bootstrap, seed=cfg.seed) if cfg.bootstrap else (None, "")
    analysis = analyse(run.rows, metric, cfg.gain_threshold, cfg.bootstrap, seed=cfg.seed, ceiling=cfg.ceiling, unit_draws=draws)
    if draws is None and why_not and analysis.saturation:
        analysis.note = (analysis.note + "; " if analysis.note else "") + f"saturation interval over seeds only ({why_not})"
    csv_path, json_path = write_table(out, run.rows, analysis, {"config": cfg.run_settings(), "sizes": list(cfg.sizes), "seeds": cfg.seeds})
    files = {"csv": csv_path, "json": json_path}
    label = f"{task.name} ({cfg.method}, {cfg.model})"
    baselines = task.baselines(metric, limit=cfg.eval_limit, seed=cfg.eval_seed)
    files["curve_png"] = plot_curve(run.rows, analysis, out / "curve.png", title=f"{label}: {metric} vs training size",
                                    subtitle=cfg.schedule_label(), baselines=baselines)
    prefix, curves = task.breakdown_prefix, None
    if prefix:
        # Per attribute: a panel each with its interval over the test products where the runs kept
        # per-question rows; otherwise one line each from the runs' own per-attribute metrics.
        curves, _ = breakdown_curves(out, run.rows, metric, n_boot=cfg.bootstrap or 1000, seed=cfg.seed)
        if curves is not None:
            files.update(curves.write(out))
            files["breakdown_png"] = plot_breakdown_bands(curves, out / "per_attribute.png", title=f"{label}: {metric} per attribute")
        else:
            support = task.breakdown_support_prefix
            what = prefix.rstrip("/").replace("_", " ")
            breakdown = plot_breakdown(run.rows, prefix, out / "per_attribute.png", support_prefix=support, title=f"{label}: {what}")
            if breakdown:
                files["breakdown_png"] = breakdown
    lines = [cfg.schedule_label(), *describe(analysis)]
    if curves is not None:
        lines.append(curves.summary())
    lines += [f"baseline '{name}': {metric} {value:.4f}" for name, value in baselines.items()]
    steps = paired_steps(out, run.rows, metric, seed=cfg.seed)
    if steps is not None:
        files.update(steps.write(out))
        lines += ["", f"Paired steps ({metric}; intervals over the test units, seeds averaged):", steps.to_markdown()]
    return CurveResult(run, analysis, files, lines, steps, curves)
