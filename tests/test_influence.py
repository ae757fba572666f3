"""Influence (LiSSA, CG, batched products), GraNd and EL2N on a tiny trained surrogate."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from leantune.data import Sample
from leantune.errors import LeantuneError
from leantune.models.sasrec import SASRecConfig, load_surrogate, pad_histories, sample_loss
from leantune.train.sasrec import get_surrogate, train_surrogate
from leantune.scoring import SCORERS, ScoringContext
from leantune.scoring.ihvp import CGConfig, LissaConfig, auto_damping, conjugate_gradient, lanczos_extremes, lissa
from leantune.scoring.influence import InfluenceConfig, SurrogateObjective, compute_influence, frozen, select_params
from leantune.scoring.surrogate_scores import el2n_scores, grad_norms

TINY = SASRecConfig(hidden=16, heads=2, blocks=2, dropout=0.1, max_len=10, lr=1e-2, batch_size=16, patience=0, max_epochs=15)
# The tiny model's Hessian has negative eigenvalues near -1; λ = 2 keeps H + λI positive definite.
DAMPING = 2.0


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def trained(tiny_rec, tmp_path):
    train_surrogate(tiny_rec, tmp_path / "surrogate", TINY, seed=0, progress=False)
    return load_surrogate(tmp_path / "surrogate")


def test_batched_products_equal_one_sample_loop(tiny_rec, trained):
    sample = tiny_rec.train_samples[3]
    loss = sample_loss(trained.eval(), pad_histories([sample.history], 10), torch.tensor(sample.targets))
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss.sum(), list(trained.parameters()))])
    with frozen(trained):
        obj = SurrogateObjective(trained, tiny_rec.train_samples, "all", batch_size=7)
        assert torch.allclose(obj.sample_grad(3), expected, atol=1e-6)  # the loop's gradients are autograd's
        v = torch.randn(obj.theta.shape, generator=torch.Generator().manual_seed(0))
        loop = np.array([float(obj.sample_grad(i) @ v) for i in range(obj.n)])
        assert np.allclose(obj.products(v), loop, rtol=1e-4, atol=1e-5)
        for spec in ("reference", "item_emb", "blocks.0,pos_emb"):  # the closed-form output layer with and without E
            part = SurrogateObjective(trained, tiny_rec.train_samples, spec, batch_size=7)
            w = torch.randn(part.theta.shape, generator=torch.Generator().manual_seed(1)) * part.free
            loop = np.array([float(part.sample_grad(i) @ w) for i in range(part.n)])
            assert np.allclose(part.products(w), loop, rtol=1e-4, atol=1e-5), spec


def test_mean_grad_and_hvp_match_autograd(tiny_rec, trained):
    model = trained.double()
    with frozen(model):
        obj = SurrogateObjective(model, tiny_rec.train_samples, "all", batch_size=7)
        g = obj.mean_grad()
        assert torch.allclose(g, sum(obj.sample_grad(i) for i in range(obj.n)) / obj.n, atol=1e-10)
        gen = torch.Generator().manual_seed(0)
        u, v = (torch.randn(obj.theta.shape, dtype=torch.float64, generator=gen) * obj.free for _ in range(2))
        everyone = np.arange(obj.n)
        # Forward-over-reverse (torch.func) as the independent reference for the double backward;
        # ReLU kinks make finite differences unreliable here.
        grad = torch.func.grad(lambda th: obj.losses(th, everyone).mean())
        expected = torch.func.jvp(grad, (obj.theta,), (v,))[1]
        hv = obj.full_hvp(v)
        assert torch.allclose(hv, expected, atol=1e-9)
        assert torch.allclose(obj.hvp(v, everyone), expected, atol=1e-9)
        assert float(u @ hv) == pytest.approx(float(v @ obj.full_hvp(u)), rel=1e-8)  # symmetric
        # The closed-form softmax layer also without the item table among the differentiated parameters.
        for spec in ("reference", "blocks.0,pos_emb", "item_emb"):
            part = SurrogateObjective(model, tiny_rec.train_samples, spec, batch_size=5)
            w = torch.randn(part.theta.shape, dtype=torch.float64, generator=gen) * part.free
            grad = torch.func.grad(lambda th: part.losses(th, everyone).mean())
            assert torch.allclose(part.mean_grad(), grad(part.theta), atol=1e-10), spec
            assert torch.allclose(part.full_hvp(w), torch.func.jvp(grad, (part.theta,), (w,))[1], atol=1e-9), spec


def test_cg_solves_the_damped_system(tiny_rec, trained):
    with frozen(trained):
        obj = SurrogateObjective(trained.double(), tiny_rec.train_samples, "all", batch_size=16)
        v = obj.mean_grad()
        result = conjugate_gradient(obj.full_hvp, v, CGConfig(damping=DAMPING, max_iter=300, tol=1e-7))
        assert result.converged
        residual = obj.full_hvp(result.x) + DAMPING * result.x - v
        assert float(residual.norm() / v.norm()) < 1e-5
        with pytest.raises(LeantuneError, match="non-positive curvature"):
            conjugate_gradient(lambda x: -x, v, CGConfig(damping=0.5))


def test_lissa_converges_to_the_damped_inverse():
    # Deterministic quadratic: LiSSA with exact Hessians must reach (H + λI)^-1 v.
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    hessian = q @ torch.diag(torch.linspace(-0.1, 30, 20, dtype=torch.float64)) @ q.T
    v = torch.randn(20, generator=gen, dtype=torch.float64)
    every = itertools.repeat(np.arange(5))
    cfg = LissaConfig(damping=0.25, scale=25, depth=3000, tail=0)
    out = lissa(lambda x, idx: hessian @ x, v, every, cfg)
    exact = torch.linalg.solve(hessian + 0.25 * torch.eye(20, dtype=torch.float64), v)
    assert torch.allclose(out, exact, rtol=1e-6, atol=1e-8)
    # H = 120·I: scale 25 and 50 diverge (120 + λ > 2·scale), so LiSSA restarts twice and lands on 100, same λ.
    info = {}
    out = lissa(lambda x, idx: 120 * x, v, every, LissaConfig(damping=0.25, scale=25, depth=300), info=info)
    assert info == {"scale_used": 100, "restarts": 2}
    assert torch.allclose(out, v / 120.25)
    with pytest.raises(LeantuneError, match="diverged"):
        lissa(lambda x, idx: 120 * x, v, every, LissaConfig(damping=0.25, scale=25, depth=300, max_restarts=1))


def test_lissa_tail_averaging_cancels_minibatch_noise():
    # Mini-batch Hessians = H + zero-mean symmetric noise: the average of the last iterates lands much
    # closer to (H + λI)^-1 v than the last iterate does, over the same draws.
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen, dtype=torch.float64))
    hessian = q @ torch.diag(torch.linspace(0.5, 10, 30, dtype=torch.float64)) @ q.T
    noise = [(lambda a: (a + a.T) * 1.5)(torch.randn(30, 30, generator=gen, dtype=torch.float64)) for _ in range(64)]
    noise = [n - sum(noise) / len(noise) for n in noise]  # exactly zero mean over the 64 "batches"
    v = torch.randn(30, generator=gen, dtype=torch.float64)
    exact = torch.linalg.solve(hessian + torch.eye(30, dtype=torch.float64), v)
    errors = {}
    for tail in (0.0, 0.5):
        draws = iter(np.random.default_rng(0).integers(64, size=(100_000, 1)))
        out = lissa(lambda x, idx: (hessian + noise[int(idx[0])]) @ x, v, draws, LissaConfig(damping=1.0, scale=20, depth=2000, tail=tail))
        errors[tail] = float((out - exact).norm() / exact.norm())
    assert errors[0.5] < 0.25 and errors[0.5] < errors[0.0] / 5, errors


def test_lanczos_finds_the_extreme_eigenvalues_and_damping_follows():
    gen = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(200, 200, generator=gen, dtype=torch.float64))
    eigs = torch.cat([torch.tensor([-0.7, -0.3], dtype=torch.float64), torch.linspace(0, 5, 197, dtype=torch.float64),
                      torch.tensor([40.0], dtype=torch.float64)])
    matrix = q @ torch.diag(eigs) @ q.T
    spectrum = lanczos_extremes(lambda x: matrix @ x, torch.zeros(200, dtype=torch.float64), steps=30, seed=0)
    assert spectrum.largest == pytest.approx(40.0, rel=1e-6)
    assert -0.7 <= spectrum.smallest < -0.6  # a Ritz value never passes the true extreme
    assert auto_damping(spectrum, margin=2.0) == pytest.approx(-2 * spectrum.smallest)
    psd = lanczos_extremes(lambda x: (matrix + 0.7 * torch.eye(200, dtype=torch.float64)) @ x, torch.zeros(200, dtype=torch.float64), steps=30)
    assert auto_damping(psd) == pytest.approx(1e-3 * psd.largest)  # positive semi-definite: only the floor
    small = lanczos_extremes(lambda x: torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)) @ x,
                             torch.zeros(3, dtype=torch.float64), steps=20)
    assert (small.smallest, small.largest, small.steps) == (pytest.approx(-2.0), pytest.approx(3.0), 3)


def test_lissa_matches_cg_on_a_tiny_surrogate(tiny_rec, trained):
    common = dict(params="all", batch_size=64, damping=DAMPING, grad_product=True)
    via_cg = compute_influence(trained, tiny_rec.train_samples, InfluenceConfig(solver="cg", cg_tol=1e-5, **common))
    assert via_cg.solver_info["converged"] and via_cg.solver_info["damping"] == pytest.approx(DAMPING)
    n = len(tiny_rec.train_samples)
    # Mini-batches of all samples: the recursion itself must land on CG's answer.
    exact = compute_influence(trained, tiny_rec.train_samples,
                              InfluenceConfig(solver="lissa", depth=400, lissa_batch=n, tail=0.0, **common))
    assert torch.allclose(exact.ihvp, via_cg.ihvp, rtol=1e-3, atol=1e-3 * float(via_cg.ihvp.abs().max()))
    assert spearmanr(exact.influence, via_cg.influence)[0] > 0.999
    assert np.allclose(exact.grad_product, via_cg.grad_product)
    assert spearmanr(via_cg.influence, via_cg.grad_product)[0] > 0.5  # related, yet not the same score


def test_default_influence_chooses_a_damping_that_makes_the_solve_well_posed(tiny_rec, trained):
    # No settings: λ comes from Lanczos, above |λ_min|, and CG at that λ converges where the
    # reference's λ = 0.25 meets negative curvature; the default LiSSA agrees with that CG solve.
    result = compute_influence(trained, tiny_rec.train_samples)
    info = result.solver_info
    assert info["spectrum"]["smallest"] < 0 and info["damping"] == pytest.approx(-2 * info["spectrum"]["smallest"])
    assert info["damping_source"].endswith("Lanczos λ_min|") and info["restarts"] == 0
    with pytest.raises(LeantuneError, match="non-positive curvature"):
        compute_influence(trained, tiny_rec.train_samples, InfluenceConfig(solver="cg", damping=0.25))
    cg = compute_influence(trained, tiny_rec.train_samples, InfluenceConfig(solver="cg", damping=info["damping"]))
    assert cg.solver_info["converged"]
    assert spearmanr(result.influence, cg.influence)[0] > 0.99
    again = compute_influence(trained, tiny_rec.train_samples, seed=1)
    assert spearmanr(result.influence, again.influence)[0] > 0.99


def test_influence_settings_are_checked():
    for options, match in (({"influence_damping": -1.0}, "influence_damping -1.0"), ({"influence_tail": 1.0}, "influence_tail"),
                           ({"influence_lissa_batch": 0}, "influence_lissa_batch 0"), ({"influence_solver": "x"}, "influence_solver")):
        with pytest.raises(LeantuneError, match=match):
            InfluenceConfig.from_options(options)


def test_param_selection():
    from leantune.models.sasrec import SASRec

    model = SASRec(10, SASRecConfig(hidden=8, blocks=2))
    assert select_params(model, "reference") == ["blocks.1.out.weight"]
    assert select_params(model, "item_emb") == ["item_emb.weight"]
    assert len(select_params(model, "all")) == len(list(model.parameters()))
    with pytest.raises(LeantuneError, match="matches no surrogate parameter"):
        select_params(model, "nope")


def test_grand_equals_per_sample_autograd_norm(tiny_rec, trained):
    samples = tiny_rec.train_samples
    fast = grad_norms(trained, samples, batch_size=6)
    slow = []
    for s in samples:
        trained.zero_grad()
        sample_loss(trained, pad_histories([s.history], 10), torch.tensor(s.targets)).sum().backward()
        slow.append(float(torch.sqrt(sum(p.grad.pow(2).sum() for p in trained.parameters()))))
    assert np.allclose(fast, slow, rtol=1e-4)
    probs = trained.logits(pad_histories([s.history for s in samples], 10)).softmax(-1).detach()
    onehot = torch.nn.functional.one_hot(torch.tensor([s.targets[0] for s in samples]), probs.shape[1])
    assert np.allclose(el2n_scores(trained, samples), (probs - onehot).norm(dim=1).numpy(), atol=1e-5)


def test_scorers_align_with_samples(tiny_rec, trained, tmp_path, monkeypatch):
    monkeypatch.setenv("LEANTUNE_HOME", str(tmp_path / "home"))
    options = {"progress": False, "grand_models": 2, "grand_epochs": 1, "el2n_models": 2, "el2n_epochs": 1}
    ctx = ScoringContext(tiny_rec, seed=0, options=options, extras={"surrogate": trained, "surrogate_config": TINY},
                         get_surrogate=get_surrogate)
    samples = tiny_rec.train_samples
    subset = samples[::-3]
    for name, columns in (("influence", {"influence"}), ("grand", {"grand"}), ("el2n", {"el2n"})):
        scorer = SCORERS.get(name)()
        full = scorer.score(samples, ctx)
        assert set(full) == columns
        for column, values in full.items():
            assert values.shape == (len(samples),) and np.isfinite(values).all(), (name, column)
            assert np.unique(values).size > len(samples) // 2, (name, column)
        part = scorer.score(subset, ctx)
        for column in columns:
            assert np.allclose(part[column], full[column][[s.sample_id for s in subset]]), (name, column)
    assert ctx.extras["surrogate"] is trained
    with pytest.raises(LeantuneError, match="needs a trained SASRec surrogate"):  # scorers never train models themselves
        SCORERS.get("influence")().score(samples, ScoringContext(tiny_rec, options={"progress": False}))
    on_trained = SCORERS.get("el2n")().score(samples, ScoringContext(tiny_rec, options={"el2n_model": "trained"},
                                                                     extras={"surrogate": trained}))
    assert np.allclose(on_trained["el2n"], el2n_scores(trained, samples))
    # GraNd and EL2N share the two early models, trained once into the cache.
    assert len(list((tmp_path / "home" / "surrogate").iterdir())) == 2
    with pytest.raises(LeantuneError, match="exactly one target"):
        SCORERS.get("el2n")().score([Sample(0, 1, (1,), (2, 3))], ctx)


def test_scorers_on_users_without_training_items(gappy_rec, tmp_path, monkeypatch):
    # Sample ids skip the users without training items; scores follow the samples, not the ids.
    monkeypatch.setenv("LEANTUNE_HOME", str(tmp_path / "home"))
    train_surrogate(gappy_rec, tmp_path / "surrogate", TINY, seed=0, progress=False)
    model = load_surrogate(tmp_path / "surrogate")
    options = {"progress": False, "grand_models": 1, "grand_epochs": 1, "el2n_models": 1, "el2n_epochs": 1}
    ctx = ScoringContext(gappy_rec, seed=0, options=options, extras={"surrogate": model, "surrogate_config": TINY},
                         get_surrogate=get_surrogate)
    samples = gappy_rec.train_samples
    positions = list(range(len(samples)))[::-4]
    for name, column in (("influence", "influence"), ("grand", "grand"), ("el2n", "el2n")):
        full = SCORERS.get(name)().score(samples, ctx)[column]
        assert full.shape == (len(samples),) and np.isfinite(full).all(), name
        part = SCORERS.get(name)().score([samples[i] for i in positions], ctx)[column]
        assert np.allclose(part, full[positions]), name
