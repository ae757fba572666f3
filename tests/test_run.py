"""`leantune run` end to end on tiny data with the tiny model: stages, reuse, interruption, report."""
from __future__ import annotations

import json

import pytest

from leantune.errors import LeantuneError
from leantune.train import FinetuneConfig
from leantune.pipelines.bigrec import BigrecRunConfig, run_bigrec


def tiny_run_cfg(folder, **kw) -> BigrecRunConfig:
    ft = FinetuneConfig(batch_size=4, micro_batch_size=2, epochs=1, lr=1e-3)
    base = dict(data=str(folder), budget=8, method="random", pool=None, model="tiny", test_users=4,
                device="cpu", finetune=ft, num_beams=2, max_new_tokens=4, gen_batch_size=4)
    base.update(kw)
    return BigrecRunConfig(**base)


def quiet(*args, **kwargs):
    pass


def test_run_twice_reuses_finished_stages(tiny_rec_folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = tiny_run_cfg(tiny_rec_folder)
    run = run_bigrec(cfg, out, progress=False, log=quiet)
    record = json.loads((out / "run.json").read_text())
    for stage in ("prune", "finetune", "evaluate", "evaluate_base", "report"):
        assert record["stages"][stage]["status"] == "finished", stage
        assert record["stages"][stage]["wall_s"] >= 0
    selection = json.loads((out / "prune" / "selection.json").read_text())
    assert len(selection["sample_ids"]) == 8
    assert (out / "finetune" / "adapter" / "adapter_model.safetensors").exists()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())["metrics"]
    assert set(metrics) >= {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    report = (out / "report.md").read_text()
    assert "fine-tuned" in report and "base (no fine-tuning)" in report and "| finetune | finished |" in report
    from leantune.device import machine_summary

    assert f"Trained on: {machine_summary('cpu')}" in report  # the machine beside the wall times
    assert (out / "report.png").stat().st_size > 1000
    assert run.outputs("evaluate_base")["n_users"] == run.outputs("evaluate")["n_users"] == 4

    # Second run: nothing is recomputed (any call to a stage's work would raise).
    import leantune.evaluation.bigrec as bigrec
    import leantune.pruning as pruning
    import leantune.train.lora as lora

    def boom(*a, **k):
        raise AssertionError("stage was recomputed")

    monkeypatch.setattr(pruning, "prune", boom)
    monkeypatch.setattr(lora, "finetune", boom)
    monkeypatch.setattr(bigrec, "evaluate_bigrec", boom)
    run_bigrec(cfg, out, progress=False, log=quiet)
    again = json.loads((out / "run.json").read_text())
    for stage in ("prune", "finetune", "evaluate", "evaluate_base"):
        assert again["stages"][stage] == record["stages"][stage]


def test_interrupted_run_keeps_finished_stages_and_resumes(tiny_rec_folder, tmp_path, monkeypatch):
    import leantune.evaluation.bigrec as bigrec

    out = tmp_path / "run"
    cfg = tiny_run_cfg(tiny_rec_folder, base=False)
    real = bigrec.evaluate_bigrec

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bigrec, "evaluate_bigrec", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_bigrec(cfg, out, progress=False, log=quiet)
    record = json.loads((out / "run.json").read_text())
    assert record["stages"]["prune"]["status"] == "finished"
    assert record["stages"]["finetune"]["status"] == "finished"
    assert record["stages"]["evaluate"]["status"] == "interrupted"

    monkeypatch.setattr(bigrec, "evaluate_bigrec", real)
    run = run_bigrec(cfg, out, progress=False, log=quiet)
    assert run.stages["evaluate"]["status"] == "finished" and run.stages["evaluate"]["attempts"] == 2
    assert run.stages["finetune"]["attempts"] == 1
    assert "evaluate_base" not in run.stages


def test_run_folder_refuses_other_settings(tiny_rec_folder, tmp_path):
    from leantune.pipelines.runs import RunFolder

    RunFolder(tmp_path / "r", "bigrec", tiny_run_cfg(tiny_rec_folder).settings())
    with pytest.raises(LeantuneError, match="other settings.*budget"):
        RunFolder(tmp_path / "r", "bigrec", tiny_run_cfg(tiny_rec_folder, budget=6).settings())
    # The device changes speed only, so it may differ.
    RunFolder(tmp_path / "r", "bigrec", tiny_run_cfg(tiny_rec_folder, device="cuda").settings(), ignore=("device", "gen_batch_size"))


def test_cli_help_and_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from leantune.cli import app

    runner = CliRunner()
    for command in ("run", "evaluate", "finetune"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
    assert "--epochs" in runner.invoke(app, ["run", "--help"]).output
    result = runner.invoke(app, ["evaluate", "--adapter", str(tmp_path), "--model", "tiny", "--data", "nowhere"])
    assert result.exit_code != 0
    assert isinstance(result.exception, LeantuneError)


def test_cli_finetune_then_evaluate(tiny_rec_folder, tmp_path):
    from typer.testing import CliRunner

    from leantune.cli import app

    runner = CliRunner()
    ft = tmp_path / "ft"
    args = ["finetune", "--data", str(tiny_rec_folder), "--model", "tiny", "--budget", "6", "--max-steps", "2",
            "--batch-size", "2", "--micro-batch-size", "2", "--lr", "1e-3", "--out", str(ft), "--device", "cpu", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "finished: 2/2 steps" in result.output
    ev = tmp_path / "ev"
    result = runner.invoke(app, ["evaluate", "--adapter", str(ft / "adapter"), "--data", str(tiny_rec_folder), "--model", "tiny",
                                 "--users", "3", "--beams", "2", "--max-new-tokens", "3", "--out", str(ev), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "3 users: recall@5" in result.output
    assert json.loads((ev / "metrics.json").read_text())["adapter"] == str(ft / "adapter")


def test_report_of_a_run_trained_over_several_sittings_names_each(tmp_path):
    """A fine-tuning stage resumed from a checkpoint reports what each sitting trained on, over which steps,
    in how long, so its wall time can be read; a run of one sitting keeps the one 'Trained on' line."""
    from leantune.pipelines.report import write_run_report
    from leantune.pipelines.runs import RunFolder

    run = RunFolder(tmp_path / "run", "bigrec", tiny_run_cfg(tmp_path / "data").settings())
    ft = {"status": "finished", "steps": 30, "total_steps": 30, "n_train": 8, "n_valid": 2, "tokens_seen": 900,
          "best_valid_loss": 1.5, "machine": "CPU B, 1 thread",
          "sittings": [{"machine": "", "from_step": 0, "to_step": 10, "wall_s": 30.0},
                       {"machine": "CPU A, 2 threads", "from_step": 10, "to_step": 20, "wall_s": 12.5},
                       {"machine": "CPU B, 1 thread", "from_step": 20, "to_step": 30, "wall_s": 300.0}]}
    run.stages["finetune"] = {"status": "finished", "wall_s": 342.5, "outputs": ft}
    report = write_run_report(run)["markdown"].read_text()
    assert ("Trained over 3 sittings: steps 0–10 on an unrecorded machine (30.0 s); steps 10–20 on CPU A, 2 threads "
            "(12.5 s); steps 20–30 on CPU B, 1 thread (5.0 min)") in report
    assert "Trained on:" not in report
    run.stages["finetune"]["outputs"] = {**ft, "sittings": ft["sittings"][2:]}
    assert "Trained on: CPU B, 1 thread" in write_run_report(run)["markdown"].read_text()
