"""Li & Yan (arXiv 2405.14861) exact check: DDPM coefficient designs on low-dimensional Gaussian data.

Setup (as in the paper's experiment): data X_0 ~ N(0, I_k) embedded in R^d (first k coordinates have
variance 1, the other d-k are 0), the exact score, Ho et al.'s linear schedule scaled to T steps:
β_t = (1000/T)·linspace(1e-4, 0.02, T), α_t = 1-β_t, ᾱ_t = Π_{s≤t} α_s (t = 1..T, ᾱ_0 = 1).

Forward marginals: X_t = √ᾱ_t X_0 + √(1-ᾱ_t) W ~ N(0, diag(v_t)), with v_t = 1 on the k data
coordinates and v_t = 1-ᾱ_t on the d-k empty ones. The exact score is s_t(x) = -x / v_t.

Reverse chain: Y_T ~ N(0, I_d); for t = T, ..., 2:  Y_{t-1} = (Y_t + η_t s_t(Y_t) + σ_t Z) / √α_t,
with (α_t, η_t, σ_t²) from `tuner.solvers.ddpm_coefficients` ('baseline': η = σ² = 1-α_t;
'liyan': η* = 1-α_t, σ*² = (1-α_t)(α_t-ᾱ_t)/(1-ᾱ_t)). Each step is linear in Y_t plus independent
Gaussian noise, so Y_t stays N(0, diag(u_t)) and the variance propagates exactly per coordinate:
    u_{t-1} = ((1 - η_t / v_t)² u_t + σ_t²) / α_t.

Reported: KL(q_1 ‖ p_1), where q_1 = law(X_1) = N(0, diag(1 [k times], β_1 [d-k times])) is the forward
marginal at t = 1 (the last step of the chain; X_0 itself is singular) and p_1 = law(Y_1) =
N(0, diag(u_1)). For diagonal Gaussians KL = Σ_i ½ (v_i/u_i - 1 - ln(v_i/u_i)), computed with log1p so
tiny errors do not cancel away. Only two coordinate types exist, so any d costs the same.

Usage:  python benchmarks/liyan_check.py [--json] [--k 8] [--d 10 100 1000] [--T 100 200 500 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from tuner.solvers import ddpm_coefficients

DESIGNS = ("liyan", "baseline")
DEFAULT_T = (100, 200, 500, 1000)
DEFAULT_D = (10, 100, 1000)


def alpha_bars(T: int) -> np.ndarray:
    """ᾱ_t for t = 0..T (index t; ᾱ_0 = 1), Ho et al.'s linear β scaled by 1000/T."""
    betas = (1000.0 / T) * np.linspace(1e-4, 0.02, T, dtype=np.float64)
    return np.concatenate([[1.0], np.cumprod(1.0 - betas)])


def reverse_variances(T: int, design: str) -> dict[str, tuple[float, float]]:
    """{coordinate type: (v_1, u_1)}: target variance of q_1 and variance of p_1, for the data
    coordinates ('data', v_t = 1) and the empty ones ('empty', v_t = 1-ᾱ_t)."""
    ab = alpha_bars(T)
    target = {"data": lambda t: 1.0, "empty": lambda t: 1.0 - ab[t]}
    u = {kind: 1.0 for kind in target}  # Y_T ~ N(0, I)
    for t in range(T, 1, -1):
        alpha, eta, var = ddpm_coefficients(float(ab[t]), float(ab[t - 1]), design)
        for kind, v in target.items():
            u[kind] = ((1.0 - eta / v(t)) ** 2 * u[kind] + var) / alpha
    return {kind: (v(1), u[kind]) for kind, v in target.items()}


def gaussian_kl_1d(v: float, u: float) -> float:
    """KL(N(0, v) ‖ N(0, u))."""
    delta = v / u - 1.0
    return 0.5 * (delta - math.log1p(delta))


def kl(T: int, d: int, design: str, k: int = 8) -> float:
    """KL(q_1 ‖ p_1) for data N(0, I_k) in R^d."""
    if not (1 <= k <= d):
        raise ValueError(f"need 1 <= k <= d, got k={k}, d={d}")
    var = reverse_variances(T, design)
    return k * gaussian_kl_1d(*var["data"]) + (d - k) * gaussian_kl_1d(*var["empty"])


def table(Ts=DEFAULT_T, ds=DEFAULT_D, k: int = 8) -> list[dict]:
    return [{"T": T, "d": d, "design": design, "kl": kl(T, d, design, k)}
            for T in Ts for design in DESIGNS for d in ds]


def format_table(rows: list[dict]) -> str:
    ds = sorted({r["d"] for r in rows})
    Ts = sorted({r["T"] for r in rows})
    lookup = {(r["T"], r["d"], r["design"]): r["kl"] for r in rows}
    head = "| T | design | " + " | ".join(f"KL d={d}" for d in ds) + f" | KL(d={ds[-1]}) / KL(d={ds[0]}) |"
    lines = [head, "|" + "---|" * (len(ds) + 3)]
    for T in Ts:
        for design in DESIGNS:
            vals = [lookup[(T, d, design)] for d in ds]
            lines.append(f"| {T} | {design} | " + " | ".join(f"{v:.3e}" for v in vals)
                         + f" | {vals[-1] / vals[0]:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print a list of {T, d, design, kl} rows")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--d", type=int, nargs="+", default=list(DEFAULT_D))
    ap.add_argument("--T", type=int, nargs="+", default=list(DEFAULT_T))
    args = ap.parse_args(argv)
    if any(d < args.k for d in args.d) or args.k < 1 or any(T < 2 for T in args.T):
        print("error: need 1 <= k <= d and T >= 2", file=sys.stderr)
        return 2
    rows = table(args.T, args.d, args.k)
    print(json.dumps(rows) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
