"""Per-layer quantization sensitivity, measured once per study, and the mixed-precision configs it suggests.

Sensitivity of a layer at b bits = the relative squared error of the U-Net's output, sum (y_q - y)^2 /
sum y^2, when that layer alone has b-bit weights and 8-bit inputs (every other layer in float), over U-Net
calls recorded on the baseline trajectory (`SENSITIVITY_IMAGES` images, `SENSITIVITY_CALLS` steps spread
over it). It is cheap (one U-Net forward per layer, bit-width and recorded step, no image generation) and
it ranks layers well enough to order the search's genes, keep the sensitive ones at high precision and
seed the search with greedy mixed configurations (`greedy_bits`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

SENSITIVITY_IMAGES = 2
SENSITIVITY_CALLS = 4
SENSITIVITY_ACT_BITS = 8


def record_calls(pipe, steps: int, seed: int, n_images: int = SENSITIVITY_IMAGES,
                 calls: int = SENSITIVITY_CALLS) -> list:
    """(args, kwargs) of `calls` U-Net forwards spread over one baseline run of `n_images` images."""
    seen: list = []

    def hook(module, args, kwargs):
        seen.append((tuple(a.clone() if torch.is_tensor(a) else a for a in args),
                     {k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}))

    seeds = [seed + i for i in range(n_images)]
    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            _baseline_run(pipe, seeds, steps)
    finally:
        handle.remove()
    picks = sorted({round(i * (len(seen) - 1) / max(calls - 1, 1)) for i in range(calls)})
    return [seen[i] for i in picks]


def _baseline_run(pipe, seeds: list[int], steps: int) -> None:
    """One baseline generation: the proxy on digit classes with its step overrides and solver put back to
    the baseline's; a user model (tuner.models, whose methods act through hooks) on the shipped prompts."""
    if getattr(pipe, "kind", "proxy") != "proxy":
        from tuner.models.prompts import read_prompts

        prompts = read_prompts(None)
        pipe([prompts[i % len(prompts)] for i in range(len(seeds))], seeds, num_inference_steps=steps)
        return
    classes = [(3 + 7 * i) % 10 for i in range(len(seeds))]
    saved = (pipe.timesteps_override, pipe.steps_override, pipe.solver)
    pipe.timesteps_override, pipe.steps_override, pipe.solver = None, None, pipe.baseline_solver
    try:
        pipe(classes, seeds, num_inference_steps=steps)
    finally:
        pipe.timesteps_override, pipe.steps_override, pipe.solver = saved


def _output(unet, args, kwargs) -> torch.Tensor:
    out = unet(*args, **kwargs)
    return out[0] if isinstance(out, tuple) else out.sample


def layer_sensitivity(pipe, layers: Sequence[str], bits: Sequence[int], steps: int, seed: int,
                      quantize_one: Callable[[str, int, int], object]) -> dict[str, dict[str, float]]:
    """{layer: {str(b): relative output error}} for each of `layers` and each b < 32 in `bits`;
    `quantize_one(layer, w_bits, a_bits)` applies quantization to that layer alone and returns a handle."""
    calls = record_calls(pipe, steps, seed)
    with torch.no_grad():
        ref = [_output(pipe.unet, a, k) for a, k in calls]
    norm = sum(float(r.double().pow(2).sum()) for r in ref) or 1.0
    out: dict[str, dict[str, float]] = {}
    for layer in layers:
        out[layer] = {}
        for b in sorted(b for b in bits if b < 32):
            handle = quantize_one(layer, b, SENSITIVITY_ACT_BITS)
            try:
                with torch.no_grad():
                    err = sum(float((_output(pipe.unet, a, k) - r).double().pow(2).sum()) for (a, k), r in zip(calls, ref))
            finally:
                handle.remove()
            out[layer][str(b)] = err / norm
    return out


def group_sensitivity(sens: dict[str, dict[str, float]], layers: Sequence[str], bits: int) -> float:
    """A group's sensitivity at `bits`: the sum over its layers (errors of small perturbations add up)."""
    return sum(sens.get(layer, {}).get(str(bits), 0.0) for layer in layers)


def greedy_bits(groups: dict[str, list[str]], sens: dict, params: dict[str, int], choices: Sequence[int],
                target_avg: float, start: int = 8, fixed: dict[str, int] | None = None) -> dict[str, int]:
    """Weight bits per group with a parameter-weighted average <= target_avg: every group starts at
    `start` bits (those in `fixed` stay at theirs) and the cheapest step down (least added sensitivity
    per weight bit saved) is taken until the average is reached (or nothing can go lower)."""
    lower = sorted(b for b in choices if b < start)
    fixed = fixed or {}
    bits = {g: fixed.get(g, start) for g in groups}
    size = {g: sum(params.get(layer, 0) for layer in layers) for g, layers in groups.items()}
    total = sum(size.values()) or 1

    def avg() -> float:
        return sum(bits[g] * size[g] for g in groups) / total

    while avg() > target_avg:
        moves = []
        for g, layers in groups.items():
            below = [b for b in lower if b < bits[g]]
            if not below or not size[g] or g in fixed:
                continue
            b = below[-1]
            cost = group_sensitivity(sens, layers, b) - (group_sensitivity(sens, layers, bits[g]) if bits[g] < start else 0.0)
            moves.append((cost / ((bits[g] - b) * size[g]), g, b))
        if not moves:
            break
        _, g, b = min(moves)
        bits[g] = b
    return bits


def average_weight_bits(bits: dict[str, int], groups: dict[str, list[str]], params: dict[str, int]) -> float:
    total = sum(params.get(layer, 0) for layers in groups.values() for layer in layers) or 1
    return sum(bits[g] * params.get(layer, 0) for g, layers in groups.items() for layer in layers) / total
