"""`leantune compare`: paired bootstrap / permutation comparison of evaluation runs over the same units."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from leantune.errors import LeantuneError
from leantune.evaluation.compare import (Comparison, Evaluation, base_evaluation, compare, expand_paths, load_evaluation,
                                         minimum_detectable_effect, read_comparison, seed_paired)
from leantune.evaluation.units import write_per_unit

Z = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.8}


def rec_rows(hits, users=None, k=20):
    """Recommendation per-unit rows with one target per user: hits@K = recall@K = the 0/1 hit."""
    users = users if users is not None else range(len(hits))
    return [{"unit": str(u), "cluster": str(u), "n_targets": 1, f"hits@{k}": int(h), f"recall@{k}": float(h),
             f"ndcg@{k}": float(h) * 0.5} for u, h in zip(users, hits)]


def make_run(folder: Path, method: str, seed: int, rows, base_dir: Path | None = None) -> Path:
    """A run folder as `leantune run` leaves it: run.json plus eval/per_unit.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    stages = {"evaluate": {"status": "finished", "outputs": {"out_dir": str(folder / "eval")}}}
    if base_dir is not None:
        stages["evaluate_base"] = {"status": "finished", "outputs": {"out_dir": str(base_dir)}}
    record = {"kind": "bigrec-run", "settings": {"method": method, "seed": seed, "data": "games"}, "stages": stages}
    (folder / "run.json").write_text(json.dumps(record))
    write_per_unit(folder / "eval", rows)
    return folder


def ev(name, rows, seed=0):
    return Evaluation(path=Path(name), name=name, seed=seed, rows=rows, label=f"runs/{name}-s{seed}")


# ----------------------------------------------------------------------------- (a) hand-computed case


def test_hand_computed_exact_permutation(tmp_path):
    method = make_run(tmp_path / "m", "dealrec", 0, rec_rows([1, 1, 1, 0, 1, 0]))
    base = make_run(tmp_path / "b", "random", 0, rec_rows([0, 1, 0, 0, 0, 0]))
    c = compare([load_evaluation(method), load_evaluation(base)], n_boot=2000, n_perm=10000)
    assert c.baseline == "random" and c.n_units == c.n_clusters == 6
    r = c.row("dealrec")
    assert r.value == pytest.approx(4 / 6) and c.baseline_value == pytest.approx(1 / 6)
    assert r.diff == pytest.approx(0.5) and r.rel == pytest.approx(3.0)
    # Per-user differences d = [1, 0, 1, 0, 1, 0]; T_obs = sum(d)/6 = 0.5. 2**6 = 64 <= 10000, so all 64
    # swap patterns are enumerated. Swapping user c flips the sign of d_c: T* = (±1 ± 1 ± 1 + 0 + 0 + 0)/6.
    # The three zero users' 8 patterns change nothing; of the 8 sign patterns of the three non-zero users
    # only (+,+,+) and (-,-,-) give |T*| = 3/6 >= 0.5, the other 6 give |T*| = 1/6. So 2 * 8 = 16 of 64:
    # p = 16/64 = 0.25 (the identity assignment is one of them).
    assert r.p_exact and r.p_value == pytest.approx(0.25, abs=1e-12)
    # Paired MDE: sd(d) with ddof 1 = sqrt(6 * 0.25 / 5) = sqrt(0.3); MDE = (z + z) * sd / sqrt(6).
    assert r.mde_paired == pytest.approx(Z * math.sqrt(0.3) / math.sqrt(6), rel=1e-6)
    # Planning MDE (unpaired): per-unit variances (ddof 1) baseline (5/6) / 5 = 1/6, method
    # (4 * 1/9 + 2 * 4/9) / 5 = 4/15; row: (z + z) * sqrt((var_b + var_m) / n); table: the baseline twice.
    assert r.mde_planning == pytest.approx(Z * math.sqrt((1 / 6 + 4 / 15) / 6), rel=1e-6)
    assert r.mde_planning_rel == pytest.approx(r.mde_planning / (1 / 6))
    assert c.mde_planning == pytest.approx(Z * math.sqrt(2 * (1 / 6) / 6), rel=1e-6)
    # The CI is a percentile interval of resampled diffs: within the possible range, around 0.5.
    assert 0 <= r.ci_low <= 0.5 <= r.ci_high <= 1
    assert r.unit_se > 0 and r.seed_se_diff is None and r.seed_sd is None


def test_random_permutation_when_clusters_are_many():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, 40)
    b = rng.integers(0, 2, 40)
    c = compare([ev("a", rec_rows(a)), ev("random", rec_rows(b))], n_boot=200, n_perm=999)
    r = c.row("a")
    assert not r.p_exact
    count = round(r.p_value * 1000) - 1  # p = (1 + count) / (1 + 999)
    assert r.p_value == pytest.approx((1 + count) / 1000) and 0 <= count <= 999


def test_identical_runs_give_p_one_and_zero_interval():
    rows = rec_rows([1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0])
    c = compare([ev("random", rows), ev("same", [dict(r) for r in rows])], n_boot=300, n_perm=500)
    r = c.row("same")
    assert r.diff == 0 and r.ci_low == 0 and r.ci_high == 0 and r.p_value == 1.0


def test_deterministic_for_a_seed():
    def evs():
        rng = np.random.default_rng(1)
        return [ev("random", rec_rows(rng.integers(0, 2, 300))), ev("m", rec_rows(rng.integers(0, 2, 300)))]

    first, second = evs(), evs()
    a = compare(first, n_boot=500, n_perm=500, seed=7).to_dict()
    b = compare(second, n_boot=500, n_perm=500, seed=7).to_dict()
    assert a == b
    other = compare(first, n_boot=500, n_perm=500, seed=8).to_dict()
    assert other["rows"][0]["ci_low"] != a["rows"][0]["ci_low"]


# ----------------------------------------------------------------------------- (b) interval coverage


def test_bootstrap_interval_covers_the_true_difference():
    rng = np.random.default_rng(12345)
    n, true_diff, trials = 150, 0.1, 200
    covered = 0
    start = time.perf_counter()
    for _ in range(trials):
        base = rng.normal(0.0, 1.0, n)
        method = base + true_diff + rng.normal(0.0, 0.7, n)  # paired: shares each unit's difficulty
        rows_b = [{"unit": str(i), "cluster": str(i), "score": float(x)} for i, x in enumerate(base)]
        rows_m = [{"unit": str(i), "cluster": str(i), "score": float(x)} for i, x in enumerate(method)]
        c = compare([ev("random", rows_b), ev("m", rows_m)], metric="score", n_boot=1000, n_perm=50,
                    seed=int(rng.integers(1 << 30)))
        r = c.row("m")
        covered += r.ci_low <= true_diff <= r.ci_high
    assert 0.90 * trials <= covered <= 0.99 * trials, covered
    assert time.perf_counter() - start < 60


# ----------------------------------------------------------------------------- (c) different units


def test_runs_on_different_units_are_refused(tmp_path):
    a = make_run(tmp_path / "runs" / "a", "random", 0, rec_rows([1, 0, 1, 0, 1], users=range(5)))
    b = make_run(tmp_path / "runs" / "b", "dealrec", 0, rec_rows([1, 0, 1, 0, 1], users=range(2, 7)))
    with pytest.raises(LeantuneError) as err:
        compare([load_evaluation(a), load_evaluation(b)])
    msg = str(err.value)
    assert str(a) in msg and str(b) in msg and "(5 units)" in msg and "(4 not shared)" in msg
    assert "--test-users" in msg and "--eval-seed" in msg


def test_shared_units_pair_a_subset_run_with_a_full_run(tmp_path):
    # A run on products p0..p9 against one on p0..p29 (the first 10 the same products): --shared-units
    # gives exactly the comparison of the two runs cut by hand to p0..p9, and says what each lost.
    rng = np.random.default_rng(3)
    outcomes = np.array(["NN", "NV", "VN", "VC", "VW"])
    full = attr_rows({f"p{i}": list(rng.choice(outcomes, size=3)) for i in range(30)})
    part = attr_rows({f"p{i}": list(rng.choice(outcomes, size=3)) for i in range(10)})
    a, b = ev("full", full), ev("part", part)
    with pytest.raises(LeantuneError, match="--shared-units"):
        compare([a, b], baseline="full", metric="f1")
    c = compare([a, b], baseline="full", metric="f1", n_boot=400, n_perm=400, shared=True)
    by_hand = compare([ev("full", [r for r in full if r["cluster"] in {f"p{i}" for i in range(10)}]), b],
                      baseline="full", metric="f1", n_boot=400, n_perm=400)
    assert c.n_units == 30 and c.n_clusters == 10 and c.settings["dropped_units"] == {"full": 60, "part": 0}
    assert (c.row("part").diff, c.row("part").ci_low, c.row("part").p_value) == (
        by_hand.row("part").diff, by_hand.row("part").ci_low, by_hand.row("part").p_value)
    assert c.baseline_value == pytest.approx(direct_micro(full[:30])["f1"])
    assert "units left out: 60 of full, 0 of part" in c.to_markdown()
    assert read_comparison(c.write(tmp_path / "cmp")["json"].parent).settings["dropped_units"] == c.settings["dropped_units"]
    with pytest.raises(LeantuneError, match="share no test unit"):
        compare([a, ev("other", attr_rows({"q1": ["VC"]}))], metric="f1", shared=True)


def test_unknown_metric_lists_columns():
    with pytest.raises(LeantuneError, match=r"'recall@50'.*available: n_targets, hits@20, recall@20, ndcg@20"):
        compare([ev("random", rec_rows([1, 0])), ev("m", rec_rows([0, 1]))], metric="recall@50")


def test_loading_errors_name_the_path(tmp_path):
    with pytest.raises(LeantuneError, match=str(tmp_path / "nothing")):
        load_evaluation(tmp_path / "nothing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "per_unit.jsonl").write_text('{"unit": "1"}\n{broken\n')
    with pytest.raises(LeantuneError, match=r"bad/per_unit.jsonl:2"):
        load_evaluation(bad)
    with pytest.raises(LeantuneError, match=r"runs/x-\*: matches no file"):
        expand_paths([str(tmp_path / "runs" / "x-*")])
    make_run(tmp_path / "runs" / "x-1", "random", 0, rec_rows([1]))
    assert expand_paths([str(tmp_path / "runs" / "x-*"), str(tmp_path / "runs" / "x-1")]) == [tmp_path / "runs" / "x-1"]


def test_load_names_and_seeds(tmp_path):
    run = make_run(tmp_path / "r1", "kcenter", 3, rec_rows([1, 0]))
    e = load_evaluation(run)
    assert (e.name, e.seed, e.path) == ("kcenter", 3, run / "eval")
    assert load_evaluation(run / "eval").name == "kcenter"  # run.json one folder up
    assert load_evaluation(run, name="mine").name == "mine"
    plain = tmp_path / "plain-eval"
    write_per_unit(plain, rec_rows([1, 0]))
    assert (load_evaluation(plain).name, load_evaluation(plain).seed) == ("plain-eval", 0)


# ----------------------------------------------------------------------------- (d) seeds averaged


def test_seeds_are_averaged_and_their_spread_reported():
    base = rec_rows([0, 1, 0, 0, 1, 0, 0, 0])
    s0 = rec_rows([1, 1, 0, 0, 1, 0, 1, 0])  # 4/8
    s1 = rec_rows([1, 1, 1, 1, 1, 0, 1, 0])  # 6/8
    s2 = rec_rows([0, 1, 0, 0, 1, 0, 0, 1])  # 3/8
    b1 = rec_rows([0, 1, 1, 0, 1, 0, 0, 0])  # 3/8
    c = compare([ev("m", s0, 0), ev("m", s1, 1), ev("m", s2, 2), ev("random", base, 0)], n_boot=500, n_perm=500)
    g = c.groups["m"]
    assert g.seeds == [0, 1, 2] and g.values == pytest.approx([4 / 8, 6 / 8, 3 / 8])
    assert g.value == pytest.approx(np.mean([4 / 8, 6 / 8, 3 / 8]))
    assert g.seed_sd == pytest.approx(np.std([4 / 8, 6 / 8, 3 / 8], ddof=1))
    r = c.row("m")
    assert r.n_seeds == 3 and r.value == pytest.approx(g.value) and r.diff == pytest.approx(g.value - 2 / 8)
    assert r.seed_sd == pytest.approx(g.seed_sd) and r.seed_se_diff is None  # baseline has one seed
    # Two baseline seeds: seed SE of the difference = sqrt(sd_m^2 / 3 + sd_b^2 / 2).
    c2 = compare([ev("m", s0, 0), ev("m", s1, 1), ev("m", s2, 2), ev("random", base, 0), ev("random", b1, 1)],
                 n_boot=500, n_perm=500)
    sd_b = np.std([2 / 8, 3 / 8], ddof=1)
    assert c2.row("m").seed_se_diff == pytest.approx(math.sqrt(g.seed_sd ** 2 / 3 + sd_b ** 2 / 2))
    assert c2.baseline_value == pytest.approx(2.5 / 8)
    # The units + seeds interval: Δ ± t_df·sqrt(unit SE² + seed SE²), df by Welch–Satterthwaite.
    from scipy.stats import t as student_t

    r2 = c2.row("m")
    a, b = g.seed_sd ** 2 / 3, sd_b ** 2 / 2
    total = r2.unit_se ** 2 + a + b
    df = total ** 2 / (a ** 2 / 2 + b ** 2 / 1)
    half = student_t.ppf(0.975, df) * math.sqrt(total)
    assert (r2.ci_total_low, r2.ci_total_high) == pytest.approx((r2.diff - half, r2.diff + half))
    assert r2.ci_total_high - r2.ci_total_low > r2.ci_high - r2.ci_low  # wider than test units alone
    # Its MDE: (t_{0.975,df} + t_{0.8,df})·sqrt(unit SE² + seed SE²), above the units-only paired MDE.
    assert r2.mde_total == pytest.approx((student_t.ppf(0.975, df) + student_t.ppf(0.8, df)) * math.sqrt(total))
    assert r2.mde_total > r2.mde_paired and r.mde_total is None
    assert r.ci_total_low is None and "units + seeds" in c2.to_markdown()  # one baseline seed: no seed spread to add


def test_a_method_declared_deterministic_adds_no_seed_spread_and_gets_the_units_plus_seeds_interval():
    """A greedy zero-shot baseline (one run, no seed to vary) against 3 training seeds: the units + seeds
    interval is Δ ± t_df·sqrt(unit SE² + sd_m²/3), the method's seeds alone."""
    from scipy.stats import t as student_t

    base = rec_rows([0, 1, 0, 0, 1, 0, 0, 0])
    seeds = [rec_rows([1, 1, 0, 0, 1, 0, 1, 0]), rec_rows([1, 1, 1, 1, 1, 0, 1, 0]), rec_rows([0, 1, 0, 0, 1, 0, 0, 1])]
    runs = [ev("m", rows, i) for i, rows in enumerate(seeds)] + [ev("zero-shot", base, 0)]
    plain = compare(runs, baseline="zero-shot", n_boot=500, n_perm=500)
    assert plain.row("m").ci_total_low is None and plain.groups["zero-shot"].seed_sd is None  # unknown spread
    c = compare(runs, baseline="zero-shot", n_boot=500, n_perm=500, deterministic=["zero-shot"])
    r, sd_m = c.row("m"), np.std([4 / 8, 6 / 8, 3 / 8], ddof=1)
    assert c.groups["zero-shot"].seed_sd == 0.0 and r.seed_se_diff == pytest.approx(sd_m / math.sqrt(3))
    assert (r.diff, r.ci_low, r.ci_high, r.unit_se) == (plain.row("m").diff, plain.row("m").ci_low, plain.row("m").ci_high,
                                                        plain.row("m").unit_se)  # the paired figures do not change
    total = r.unit_se ** 2 + sd_m ** 2 / 3
    df = total ** 2 / ((sd_m ** 2 / 3) ** 2 / 2)  # Welch–Satterthwaite: the only seed part is m's, 3 - 1 df
    half = student_t.ppf(0.975, df) * math.sqrt(total)
    assert (r.ci_total_low, r.ci_total_high) == pytest.approx((r.diff - half, r.diff + half))
    assert c.settings["deterministic"] == ["zero-shot"] and "deterministic" not in plain.settings
    assert "Declared deterministic (one run, seed spread 0): zero-shot" in c.to_markdown()
    with pytest.raises(LeantuneError, match=r"^deterministic 'greedy': not among the methods: m, zero-shot"):
        compare(runs, deterministic=["greedy"], n_boot=50, n_perm=50)
    with pytest.raises(LeantuneError, match=r"^deterministic 'm': 3 runs given"):
        compare(runs, deterministic=["m"], n_boot=50, n_perm=50)


def test_seed_paired_takes_the_spread_of_the_per_seed_differences():
    """Seeds as blocks: a seed that lifts the method and the baseline alike leaves Δ_s steady, so the
    interval paired by seed is narrow where the one that treats both sides as independent is not."""
    from scipy.stats import t as student_t

    hits = {0: [0, 0, 0, 1, 0, 0, 0, 0, 0, 0], 1: [1, 1, 1, 1, 1, 0, 0, 0, 0, 0], 2: [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]}
    extra = {0: [0, 0, 0, 0, 0, 0, 0, 0, 1, 0], 1: [0, 0, 0, 0, 0, 0, 0, 0, 1, 1], 2: [0, 0, 0, 0, 0, 0, 0, 0, 1, 0]}
    evs = []
    for s in (0, 1, 2):  # seed s moves both sides; the method adds 1, 2, 1 hits of 10 on top
        evs += [ev("random", rec_rows(hits[s]), s), ev("m", rec_rows([max(a, b) for a, b in zip(hits[s], extra[s])]), s)]
    c = compare(evs, n_boot=500, n_perm=200)
    r, sp = c.row("m"), seed_paired(c, "m")
    assert sp["per_seed"] == pytest.approx({0: 0.1, 1: 0.2, 2: 0.1}) and sp["n"] == 3
    assert r.diff == pytest.approx(np.mean([0.1, 0.2, 0.1]))
    seed_se = np.std([0.1, 0.2, 0.1], ddof=1) / math.sqrt(3)
    assert sp["seed_se"] == pytest.approx(seed_se)
    total = r.unit_se ** 2 + seed_se ** 2
    df = total ** 2 / (seed_se ** 4 / 2)
    half = student_t.ppf(0.975, df) * math.sqrt(total)
    assert (sp["low"], sp["high"], sp["df"]) == pytest.approx((r.diff - half, r.diff + half, df))
    assert sp["mde"] == pytest.approx((student_t.ppf(0.975, df) + student_t.ppf(0.8, df)) * math.sqrt(total))
    assert sp["high"] - sp["low"] < r.ci_total_high - r.ci_total_low  # both sides' seed spread (0.1 → 0.8) cancels
    # Planning: the same spread of Δ_s over 10 seeds.
    plan = seed_paired(c, "m", n=10)
    se10 = np.std([0.1, 0.2, 0.1], ddof=1) / math.sqrt(10)
    df10 = (r.unit_se ** 2 + se10 ** 2) ** 2 / (se10 ** 4 / 9)
    assert plan["n"] == 10 and plan["mde"] == pytest.approx(
        (student_t.ppf(0.975, df10) + student_t.ppf(0.8, df10)) * math.sqrt(r.unit_se ** 2 + se10 ** 2))
    assert r.mde_paired * 0.5 < plan["mde"] < sp["mde"]
    with pytest.raises(LeantuneError, match="seeds 1"):
        seed_paired(c, "m", n=1)
    # Only the same seeds on both sides pair up.
    c2 = compare(evs[:5] + [ev("m", rec_rows(hits[2]), 3)], n_boot=50, n_perm=50)
    assert seed_paired(c2, "m") is None
    assert seed_paired(compare(evs[:2], n_boot=50, n_perm=50), "m") is None  # one seed: no spread
    with pytest.raises(LeantuneError, match="seeds 0"):  # a bad planning count is refused even then
        seed_paired(c2, "m", n=0)


def test_baseline_choice():
    rows = rec_rows([1, 0, 1])
    c = compare([ev("a", rows), ev("b", rows), ev("c", rows)], n_boot=100, n_perm=100)
    assert c.baseline == "a" and [r.name for r in c.rows] == ["b", "c"]
    c = compare([ev("a", rows), ev("b", rows)], baseline="b", n_boot=100, n_perm=100)
    assert c.baseline == "b" and [r.name for r in c.rows] == ["a"]
    with pytest.raises(LeantuneError, match="baseline 'zzz' is not among the methods: a, b"):
        compare([ev("a", rows), ev("b", rows)], baseline="zzz")
    with pytest.raises(LeantuneError, match="need at least two methods"):
        compare([ev("a", rows), ev("a", rows, 1)])


# ----------------------------------------------------------------------------- (e) attribute rows: micro F1, clusters


def attr_rows(outcomes_by_product: dict[str, list[str]]):
    return [{"unit": f"{pid}::a{j}", "cluster": pid, "outcome": o, "correct": int(o in ("NN", "VC")),
             "valued": int(o in ("VN", "VC", "VW"))}
            for pid, outs in outcomes_by_product.items() for j, o in enumerate(outs)]


def direct_micro(rows):
    n = {o: sum(r["outcome"] == o for r in rows) for o in ("NN", "NV", "VN", "VC", "VW")}
    p = n["VC"] / (n["NV"] + n["VC"] + n["VW"]) if n["NV"] + n["VC"] + n["VW"] else 0.0
    rc = n["VC"] / (n["VN"] + n["VC"] + n["VW"]) if n["VN"] + n["VC"] + n["VW"] else 0.0
    return {"precision": p, "recall": rc, "f1": 2 * p * rc / (p + rc) if p + rc else 0.0}


def test_micro_f1_on_attribute_rows():
    rng = np.random.default_rng(5)
    outcomes = np.array(["NN", "NV", "VN", "VC", "VW"])
    products = {f"p{i}": list(rng.choice(outcomes, size=int(rng.integers(1, 6)))) for i in range(30)}
    better = {pid: [("VC" if o in ("VW", "VN") and rng.random() < 0.5 else o) for o in outs] for pid, outs in products.items()}
    base_rows, m_rows = attr_rows(products), attr_rows(better)
    for metric in ("f1", "precision", "recall"):
        c = compare([ev("random", base_rows), ev("m", m_rows)], metric=metric, n_boot=500, n_perm=500)
        assert c.metric_kind == "micro"
        assert c.baseline_value == pytest.approx(direct_micro(base_rows)[metric])
        assert c.row("m").value == pytest.approx(direct_micro(m_rows)[metric])
        assert c.n_units == len(base_rows) and c.n_clusters == 30
        r = c.row("m")
        assert r.ci_low <= r.diff <= r.ci_high and r.mde_paired == pytest.approx(Z * r.unit_se)
    # Mean-type column on attribute rows (accuracy) still works, clustered by product.
    c = compare([ev("random", base_rows), ev("m", m_rows)], metric="correct", n_boot=300, n_perm=300)
    # The task's name for it, accuracy, reads the same column and keeps its name in the table.
    named = compare([ev("random", base_rows), ev("m", m_rows)], metric="accuracy", n_boot=300, n_perm=300)
    assert named.metric == "accuracy" and named.row("m").diff == c.row("m").diff and "| accuracy |" in named.to_markdown()
    assert c.metric_kind == "mean" and c.baseline_value == pytest.approx(np.mean([r["correct"] for r in base_rows]))


def test_a_products_questions_move_together():
    # 3 products x 4 questions: the method is right on every question the baseline gets wrong.
    base = attr_rows({p: ["VW", "VW", "VC", "VW"] for p in ("p1", "p2", "p3")})
    meth = attr_rows({p: ["VC", "VC", "VC", "VC"] for p in ("p1", "p2", "p3")})
    c = compare([ev("random", base), ev("m", meth)], metric="f1", n_boot=500, n_perm=10000)
    r = c.row("m")
    # Permutations swap whole products: 2**3 = 8 assignments, only "no swap" and "swap all" reach |T_obs|.
    assert c.n_clusters == 3 and r.p_exact and r.p_value == pytest.approx(2 / 8)
    # Had each question been its own cluster, 2**12 assignments would give a far smaller p.
    single = [dict(x, cluster=x["unit"]) for x in base], [dict(x, cluster=x["unit"]) for x in meth]
    r12 = compare([ev("random", single[0]), ev("m", single[1])], metric="f1", n_boot=500, n_perm=10000).row("m")
    assert r12.p_exact and r12.p_value < 0.01
    # All three products are alike, so every bootstrap resample of products gives the same Δ.
    assert r.ci_low == pytest.approx(r.diff) and r.ci_high == pytest.approx(r.diff) and r.unit_se < 1e-12


def test_clusters_must_agree():
    a = attr_rows({"p1": ["VC", "VW"], "p2": ["NN"]})
    b = [dict(x) for x in a]
    b[0]["cluster"] = "p9"
    with pytest.raises(LeantuneError, match="different clusters"):
        compare([ev("random", a), ev("m", b)], metric="f1")


# ----------------------------------------------------------------------------- (f) CLI


def test_cli_compare_writes_table_and_files(tmp_path):
    from typer.testing import CliRunner

    import leantune.cli  # noqa: F401  (registers the commands)
    from leantune.cli.app import app

    rng = np.random.default_rng(0)
    n = 60
    base_dir = tmp_path / "cache" / "base-eval"
    write_per_unit(base_dir, rec_rows(rng.random(n) < 0.1))
    runs = tmp_path / "runs"
    make_run(runs / "run-random-s0", "random", 0, rec_rows(rng.random(n) < 0.2), base_dir)
    make_run(runs / "run-dealrec-s0", "dealrec", 0, rec_rows(rng.random(n) < 0.4), base_dir)
    make_run(runs / "run-dealrec-s1", "dealrec", 1, rec_rows(rng.random(n) < 0.4), base_dir)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(runs / "run-random-s0"), str(runs / "run-dealrec-s*"),
                                      "--out", str(out), "--boot", "500", "--perm", "500", "--with-base"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "| dealrec | 2 |" in result.output and "| base | 1 |" in result.output
    assert "random (baseline)" in result.output and f"With {n} units a difference smaller than" in result.output
    for name in ("comparison.md", "comparison.json", "forest.png"):
        assert (out / name).stat().st_size > 100, name
    data = json.loads((out / "comparison.json").read_text())
    assert data["baseline"] == "random" and data["groups"]["dealrec"]["seeds"] == [0, 1]
    assert {r["name"] for r in data["rows"]} == {"dealrec", "base"}
    assert (out / "forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out / "comparison.md") in result.output

    # Runs on different users are refused, or with --shared-units paired over the users they share.
    make_run(runs / "few", "few", 0, rec_rows(rng.random(20) < 0.4, users=range(20)))
    args = ["compare", str(runs / "run-random-s0"), str(runs / "few"), "--out", str(tmp_path / "few"), "--boot", "200", "--perm", "200"]
    refused = CliRunner().invoke(app, args)
    assert isinstance(refused.exception, LeantuneError) and "--shared-units" in str(refused.exception)
    shared = CliRunner().invoke(app, args + ["--shared-units"])
    assert shared.exit_code == 0, (shared.output, shared.exception)
    assert "Paired over the 20 units every run shares; units left out: 40 of " in shared.output
    declared = CliRunner().invoke(app, ["compare", str(runs / "run-random-s0"), str(runs / "run-dealrec-s*"), "--out",
                                        str(tmp_path / "det"), "--boot", "200", "--perm", "200", "--deterministic", "random"])
    assert declared.exit_code == 0, (declared.output, declared.exception)
    assert "Declared deterministic (one run, seed spread 0): random" in declared.output
    assert json.loads((tmp_path / "det" / "comparison.json").read_text())["rows"][0]["ci_total_low"] is not None

    # Errors are one-line LeantuneErrors.
    bad = CliRunner().invoke(app, ["compare", str(runs / "nope-*"), "--out", str(out)])
    assert isinstance(bad.exception, LeantuneError) and "nope-*" in str(bad.exception)


def test_base_evaluation_from_run_json(tmp_path):
    base_dir = tmp_path / "base"
    write_per_unit(base_dir, rec_rows([0, 1]))
    run = make_run(tmp_path / "r", "random", 0, rec_rows([1, 1]), base_dir)
    e = base_evaluation(run)
    assert e.name == "base" and e.path == base_dir
    no_base = make_run(tmp_path / "r2", "random", 0, rec_rows([1, 1]))
    with pytest.raises(LeantuneError, match="evaluate_base"):
        base_evaluation(no_base)


def test_cli_power():
    from typer.testing import CliRunner

    import leantune.cli  # noqa: F401
    from leantune.cli.app import app

    result = CliRunner().invoke(app, ["power", "--rate", "0.5", "--units", "100"])
    assert result.exit_code == 0, result.output
    assert "0.1981 absolute (39.6% relative)" in result.output


def test_seed_plan_from_a_pilot(tmp_path):
    """``seed_plan`` at the pilot's own seed count is the pilot's ``mde_total``; more seeds lower it towards
    Z·unit SE; ``leantune power --pilot`` prints it; fewer than 2 seeds is refused."""
    from typer.testing import CliRunner

    import leantune.cli  # noqa: F401
    from leantune.cli.app import app
    from leantune.evaluation.compare import seed_plan

    rng = np.random.default_rng(7)
    evs = [ev(name, rec_rows(rng.integers(0, 2, 60)), seed=s) for name in ("random", "a") for s in (0, 1, 2)]
    evs.append(ev("one-seed", rec_rows(rng.integers(0, 2, 60)), seed=0))
    c = compare(evs, baseline="random", n_boot=300, n_perm=200)
    plan = seed_plan(c, [3, 10, 10 ** 6])
    a = plan["a"]
    assert a[0] == pytest.approx(c.row("a").mde_total) and a[0] > a[1] > a[2]
    assert a[2] == pytest.approx(Z * c.row("a").unit_se, rel=1e-3)
    assert plan["one-seed"] == [None, None, None]
    with pytest.raises(LeantuneError, match="at least 2"):
        seed_plan(c, [1, 3])
    c.write(tmp_path / "pilot")
    result = CliRunner().invoke(app, ["power", "--pilot", str(tmp_path / "pilot"), "--seeds", "3,10"])
    assert result.exit_code == 0, result.output
    assert f"| a | 3 | {c.row('a').diff:+.4f} | {a[0]:.4f} | {a[1]:.4f} | {c.row('a').mde_paired:.4f} |" in result.output
    assert "| one-seed | 1 |" in result.output and "fewer than 2 seeds" in result.output


# ----------------------------------------------------------------------------- (g) planning MDE


def test_minimum_detectable_effect_hand_value():
    # (1.95996 + 0.84162) * sqrt(2 * 0.25 / 100) = 2.80158 * 0.070711 = 0.19810
    assert minimum_detectable_effect(0.5, 100) == pytest.approx(0.19810, abs=5e-5)
    assert minimum_detectable_effect(0.5, 100, per_unit_sd=1.0) == pytest.approx(Z * math.sqrt(2 / 100))
    assert minimum_detectable_effect(0.015, 2000) == pytest.approx(Z * math.sqrt(0.015 * 0.985 * 2 / 2000))
    with pytest.raises(LeantuneError):
        minimum_detectable_effect(1.5, 100)
    with pytest.raises(LeantuneError):
        minimum_detectable_effect(0.5, 0)


def test_metric_interval_of_one_run_is_a_cluster_bootstrap(tmp_path):
    """A run's own interval: it collapses when every cluster is alike, matches compare's value, and
    for a 0/1 mean over independent units it is about ±1.96 standard errors wide."""
    from leantune.evaluation.compare import compare, load_evaluation, metric_interval
    from leantune.evaluation.units import attribute_unit_rows, write_per_unit

    same = attribute_unit_rows([{"product_id": f"p{i // 2}", "attribute": f"a{i % 2}", "outcome": "VC" if i % 2 else "VW",
                                 "correct": bool(i % 2), "gold": "x"} for i in range(40)])
    write_per_unit(tmp_path / "same", same)
    ev = load_evaluation(tmp_path / "same", name="a")
    value, low, high = metric_interval(ev, "f1", n_boot=500)
    assert value == pytest.approx(0.5) and low == pytest.approx(0.5) and high == pytest.approx(0.5)

    rng = np.random.default_rng(1)
    hits = rng.random(400) < 0.3
    rows = [{"unit": f"u{i}", "cluster": f"u{i}", "correct": int(h)} for i, h in enumerate(hits)]
    write_per_unit(tmp_path / "mean", rows)
    write_per_unit(tmp_path / "other", [{**r, "correct": 1} for r in rows])
    ev = load_evaluation(tmp_path / "mean", name="a")
    value, low, high = metric_interval(ev, "correct", n_boot=4000)
    se = math.sqrt(value * (1 - value) / 400)
    assert value == pytest.approx(hits.mean())
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.1) and low < value < high
    cmp = compare([ev, load_evaluation(tmp_path / "other", name="b")], baseline="a", metric="correct")
    assert cmp.baseline_value == pytest.approx(value)


def test_a_written_comparison_reads_back_whole(tmp_path):
    """``read_comparison`` is ``Comparison.write``'s inverse: the same rows, settings and table, seeds included."""
    rng = np.random.default_rng(5)
    evs = [ev("random", rec_rows(rng.integers(0, 2, 30)), seed=s) for s in (0, 1)]
    evs += [ev("a", rec_rows(rng.integers(0, 2, 30)), seed=s) for s in (0, 1)]
    c = compare(evs, baseline="random", n_boot=200, n_perm=200)
    c.write(tmp_path / "cmp")
    back = read_comparison(tmp_path / "cmp")
    assert back.to_dict() == c.to_dict() and back.to_markdown() == c.to_markdown()
    assert back.row("a").ci_total_low == c.row("a").ci_total_low is not None


def test_a_comparison_written_before_the_seed_mde_reads_back_with_it(tmp_path):
    """``comparison.json`` files from before ``mde_total`` existed get it from the figures they hold."""
    rng = np.random.default_rng(6)
    evs = [ev(name, rec_rows(rng.integers(0, 2, 40)), seed=s) for name in ("random", "a") for s in (0, 1, 2)]
    c = compare(evs, baseline="random", n_boot=200, n_perm=200)
    old = c.to_dict()
    for row in old["rows"]:
        del row["mde_total"]
    back = Comparison.from_dict(old)
    assert back.row("a").mde_total == pytest.approx(c.row("a").mde_total) and c.row("a").mde_total is not None
    assert "MDE units + seeds" in back.to_markdown()


def test_resampled_metric_draws_the_same_products_for_every_run():
    from leantune.evaluation.compare import metric_interval, resampled_metric

    rng = np.random.default_rng(3)
    outcomes = np.array(["NN", "NV", "VN", "VC", "VW"])
    products = {f"p{i}": list(rng.choice(outcomes, size=int(rng.integers(1, 6)))) for i in range(40)}
    better = {pid: [("VC" if o in ("VW", "VN") else o) for o in outs] for pid, outs in products.items()}
    runs = [ev("a", attr_rows(products)), ev("b", attr_rows(better)), ev("a2", attr_rows(products))]
    observed, draws = resampled_metric(runs, "f1", n_boot=400, seed=1)
    assert observed[0] == pytest.approx(direct_micro(attr_rows(products))["f1"])
    assert observed[1] == pytest.approx(direct_micro(attr_rows(better))["f1"])
    assert draws.shape == (400, 3)
    # Identical runs move identically (the same products in every resample), and every resample
    # keeps the better run ahead: whole products are drawn, never half of one.
    assert np.array_equal(draws[:, 0], draws[:, 2]) and (draws[:, 1] >= draws[:, 0]).all()
    assert draws[:, 0].std() > 0
    # Its spread is one run's interval over products.
    _, low, high = metric_interval(runs[0], "f1", n_boot=4000)
    lo, hi = np.quantile(draws[:, 0], [0.025, 0.975])
    assert lo == pytest.approx(low, abs=0.03) and hi == pytest.approx(high, abs=0.03)
    # Rows in another order give the same draws (aligned by unit id); other units are refused.
    shuffled = ev("b", list(reversed(attr_rows(better))))
    assert np.array_equal(resampled_metric([runs[0], shuffled, runs[2]], "f1", n_boot=400, seed=1)[1], draws)
    with pytest.raises(LeantuneError, match="different units"):
        resampled_metric([runs[0], ev("c", attr_rows({"p0": ["VC"]}))], "f1")
    with pytest.raises(LeantuneError, match="available"):
        resampled_metric(runs, "recall@20")
