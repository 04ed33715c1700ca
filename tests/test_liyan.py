"""Li & Yan's coefficient design on low-dimensional Gaussian data, in closed form."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tuner.solver_run import TunerRule
from tuner.solvers import per_image_noise

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "liyan_check.py"
_spec = importlib.util.spec_from_file_location("liyan_check", _PATH)
liyan_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(liyan_check)


@pytest.mark.parametrize("T", [100, 1000])
def test_sigma_star_error_does_not_grow_with_d_baseline_does(T):
    ly = {d: liyan_check.kl(T, d, "liyan") for d in (10, 100, 1000)}
    base = {d: liyan_check.kl(T, d, "baseline") for d in (10, 100, 1000)}
    assert ly[1000] <= 1.5 * ly[10]
    assert base[1000] > 10 * base[10] and base[100] > 3 * base[10]
    assert all(ly[d] < base[d] for d in ly)
    assert ly[10] > 0  # the k data coordinates still carry a discretization error


def test_sigma_star_error_shrinks_with_T():
    assert liyan_check.kl(1000, 100, "liyan") < liyan_check.kl(100, 100, "liyan") / 10


def test_schedule_matches_ho_et_al_at_T_1000():
    from tuner.proxy.model import build_scheduler

    ab = liyan_check.alpha_bars(1000)
    assert torch.allclose(torch.from_numpy(ab[1:]), build_scheduler().alphas_cumprod.double(), rtol=1e-5)


def _affine_step(sampler, x_value, t_idx, v, seed=0):
    """One TunerRule.step on a single coordinate with the exact score -x/v, split as a·x + c·Z."""
    ab_t = sampler.alpha_bar(t_idx)

    def run(x):
        eps = x * (1.0 - ab_t) ** 0.5 / v  # s = -eps / sqrt(1 - ab_t) = -x / v
        return sampler.step(eps, t_idx, x, [torch.Generator().manual_seed(seed)], t_prev=t_idx - 1)

    x = torch.full((1, 1), x_value, dtype=torch.float64)
    out0, out1 = run(torch.zeros_like(x)), run(x)
    z = per_image_noise(x.shape, [torch.Generator().manual_seed(seed)], x.device, x.dtype)
    return float((out1 - out0) / x), float(out0 / z)


@pytest.mark.parametrize("design", ["liyan", "baseline"])
def test_closed_form_matches_the_ddpm_step_of_tuner_solvers(design):
    """Propagate variances through tuner.solver_run's actual DDPM step and compare with the closed form."""
    T = 60
    ab = liyan_check.alpha_bars(T)
    sampler = TunerRule(torch.from_numpy(ab[1:]).clone(), [], name="ddpm", coefficients=design)  # index t-1 = LY t
    targets = {"data": lambda t: 1.0, "empty": lambda t: 1.0 - ab[t]}
    u = {kind: 1.0 for kind in targets}
    for t in range(T, 1, -1):
        for kind, v in targets.items():
            a, c = _affine_step(sampler, 0.7, t - 1, v(t), seed=t)
            u[kind] = a * a * u[kind] + c * c
    closed = liyan_check.reverse_variances(T, design)
    for kind in targets:
        assert closed[kind][1] == pytest.approx(u[kind], rel=1e-9)
        assert closed[kind][0] == pytest.approx(targets[kind](1))


def test_monte_carlo_agrees_on_a_small_case():
    """Sample the actual chain (d=10, k=8) and compare per-coordinate variances with the closed form."""
    T, n = 50, 20000
    ab = liyan_check.alpha_bars(T)
    sampler = TunerRule(torch.from_numpy(ab[1:]).clone(), [], name="ddpm", coefficients="baseline")
    v = torch.tensor([1.0] * 8 + [0.0] * 2, dtype=torch.float64)
    torch.manual_seed(0)
    y = torch.randn(n, 10, dtype=torch.float64)
    for t in range(T, 1, -1):
        vt = v * ab[t] + 1.0 - ab[t]
        eps = y * (1.0 - ab[t]) ** 0.5 / vt
        y = sampler.step(eps, t - 1, y, None, t_prev=t - 2)
    closed = liyan_check.reverse_variances(T, "baseline")
    var = y.var(dim=0)
    assert var[:8].mean().item() == pytest.approx(closed["data"][1], rel=0.03)
    assert var[8:].mean().item() == pytest.approx(closed["empty"][1], rel=0.05)
    assert closed["empty"][1] > 1.5 * closed["empty"][0]  # the baseline over-disperses empty coordinates


def test_cli_json_rows(capsys):
    assert liyan_check.main(["--json", "--T", "100", "--d", "10", "1000"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["T"], r["d"], r["design"]) for r in rows} == {(100, d, s) for d in (10, 1000) for s in ("liyan", "baseline")}
    assert all(set(r) == {"T", "d", "design", "kl"} and r["kl"] >= 0 for r in rows)
    assert liyan_check.main(["--d", "4"]) == 2
