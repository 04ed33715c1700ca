"""The public packages a user would pick instead, beside tuner's versions: tomesd vs `tome`, DeepCache's
`DeepCacheSDHelper` vs `deepcache`, on the same pipeline and seeds, in one run with the baseline interleaved.

Needs the optional peers: `pip install 'tuner[bench]'` (tomesd, DeepCache). One thread, CPU:

    nice -n 5 python benchmarks/bench_peers.py --part proxy     # the proxy: 16 images x 20 DDIM steps
    nice -n 5 python benchmarks/bench_peers.py --part sd64      # 4,096 tokens: tiny random SD-1.5-pattern U-Net
    python benchmarks/bench_peers.py --write-md                 # BENCHMARKS.md section from the JSON results

For every variant: speedup (median seconds of the baseline / of the variant, all timed round-robin in the
same run), MSE of its images to the baseline's, and for tuner's rows the max abs difference to the peer's
images. The peers run on our `ProxyPipeline` unchanged: DeepCacheSDHelper only reads `pipe.unet` and
`pipe.scheduler.timesteps`, tomesd patches `pipe.unet`. tomesd's dst generator is a fork of the global
RNG that it never reseeds; we give it a generator seeded like tuner's (seed 0, reseeded every call) so both
draw the same dst tokens. At sd64 the "images" are the 64x64x4 latents (speed only; random weights).
Results: benchmarks/results/peers_<part>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from contextlib import contextmanager
from pathlib import Path

import torch

from md_sections import write_section  # benchmarks/ is on sys.path when a script runs

RESULTS = Path(__file__).resolve().parent / "results"
SECTION = "## Peers: tomesd and DeepCache beside tuner"


# --- the pipelines ------------------------------------------------------------------------------------
def proxy_pipeline():
    from tuner.proxy.model import load_proxy_pipeline

    return load_proxy_pipeline("cpu")


def sd64_pipeline():
    """SD-1.5's U-Net pattern (4 levels, 2 resnets per level, cross-attention at the first 3) at 64x64x4
    latents, narrow channels and random weights, inside our pipeline with a class encoder. One attention
    head of width 32, so softmax vs matmul work is close to SD's (8 heads of width 40)."""
    from diffusers import UNet2DConditionModel

    from tuner.pipeline import ProxyPipeline
    from tuner.proxy.model import CROSS_DIM, ClassEncoder, build_scheduler

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM, attention_head_dim=1, norm_num_groups=16)
    return ProxyPipeline(unet.eval(), ClassEncoder().eval(), build_scheduler(), guidance_scale=2.0)


# --- the variants: name -> context manager factory -------------------------------------------------------
@contextmanager
def tomesd_patch(pipe, ratio: float):
    import tomesd

    tomesd.apply_patch(pipe.unet, ratio=ratio)
    args = pipe.unet._tome_info["args"]

    def reseed(module, a):  # runs before tomesd's own size hook; tuner's ToMe reseeds per call too
        if pipe.step_context.step == 0:  # first forward of a call (the step context has counted it)
            args["generator"] = torch.Generator().manual_seed(0)

    handle = pipe.unet.register_forward_pre_hook(reseed)
    try:
        yield
    finally:
        handle.remove()
        tomesd.remove_patch(pipe.unet)


@contextmanager
def deepcache_helper(pipe, interval: int, branch: int):
    from DeepCache import DeepCacheSDHelper

    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=branch)
    helper.enable()
    try:
        yield
    finally:
        helper.disable()


def tuner_config(pipe, methods: dict):
    from tuner.apply_config import apply
    from tuner.config import AccelConfig

    cfg = AccelConfig.from_dict({"schema_version": 2, "methods": methods})
    return lambda: apply(pipe, cfg)


def variants(pipe, part: str) -> dict:
    """name -> (context factory, peer name or None)."""
    out = {
        "tomesd r=0.5": (lambda: tomesd_patch(pipe, 0.5), None),
        "tuner tome r=0.5": (tuner_config(pipe, {"tome": {"ratio": 0.5}}), "tomesd r=0.5"),
    }
    for n in ((2, 3, 5) if part == "proxy" else (3, 5)):
        out[f"DeepCache N={n} b=0"] = (lambda n=n: deepcache_helper(pipe, n, 0), None)
        out[f"tuner deepcache N={n} b=0"] = (tuner_config(pipe, {"deepcache": {"interval": n, "branch": 0, "cut": "layer"}}),
                                             f"DeepCache N={n} b=0")
    if part == "proxy":  # the old block cut, and the layer id it equals (block b = layer id 3b + L)
        out["tuner deepcache N=3 block b=0"] = (
            tuner_config(pipe, {"deepcache": {"interval": 3, "branch": 0, "cut": "block"}}), None)
        out["tuner deepcache N=3 b=1 (= block b=0)"] = (
            tuner_config(pipe, {"deepcache": {"interval": 3, "branch": 1, "cut": "layer"}}), None)
    return out


# --- the run ------------------------------------------------------------------------------------------
def run(part: str, n_images: int, steps: int, rounds: int) -> dict:
    from tuner.evaluators.latency import interleaved_medians

    torch.set_num_threads(1)
    pipe = proxy_pipeline() if part == "proxy" else sd64_pipeline()
    classes = [i % 10 for i in range(n_images)]
    seeds = list(range(n_images))
    box: dict = {}

    def generate():
        box["images"] = pipe(classes, seeds, num_inference_steps=steps)

    vs = variants(pipe, part)
    images = {}
    generate()  # warm-up + baseline images
    images["baseline"] = box["images"]
    for name, (ctx, _) in vs.items():  # one untimed pass each: warm-up + images
        with ctx():
            generate()
        images[name] = box["images"]
    fns = {"baseline": generate, **{name: generate for name in vs}}
    med = interleaved_medians(fns, rounds, warmup=0, contexts={name: ctx for name, (ctx, _) in vs.items()})
    base = images["baseline"]
    rows = {}
    for name, (_, peer) in vs.items():
        row = {"seconds": round(med[name], 4), "speedup": round(med["baseline"] / med[name], 3),
               "mse_to_baseline": float(((images[name] - base) ** 2).mean())}
        if peer is not None:
            row["peer"] = peer
            row["max_abs_diff_to_peer"] = float((images[name] - images[peer]).abs().max())
            row["speedup_vs_peer"] = round(med[peer] / med[name], 3)
        rows[name] = row
    return {"part": part, "n_images": n_images, "steps": steps, "rounds": rounds, "threads": 1,
            "baseline_seconds": round(med["baseline"], 4), "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__, "rows": rows}


def write_md() -> None:
    lines = [SECTION, "",
             "tomesd 0.1.3 and DeepCache 0.1.1 (`DeepCacheSDHelper`) beside tuner's `tome` and `deepcache`, on the "
             "same pipeline and seeds, one run each part, baseline interleaved, one thread, under `nice -n 5` on "
             "the shared 2-core machine. Speedup = median baseline seconds / median variant seconds; "
             "\"x peer\" = the peer's median / tuner's median (> 1: tuner faster). Commands:", "",
             "    pip install 'tuner[bench]'", "    nice -n 5 python benchmarks/bench_peers.py --part proxy",
             "    nice -n 5 python benchmarks/bench_peers.py --part sd64", "    python benchmarks/bench_peers.py --write-md", ""]
    for part, title in (("proxy", "Proxy (16 px, 256 tokens at D1/U1)"),
                        ("sd64", "4,096 tokens (tiny random SD-1.5-pattern U-Net, 64x64x4 latents; speed only)")):
        path = RESULTS / f"peers_{part}.json"
        if not path.is_file():
            continue
        d = json.loads(path.read_text())
        lines += [f"### {title}: {d['n_images']} images x {d['steps']} DDIM steps, {d['rounds']} rounds, "
                  f"baseline {d['baseline_seconds']:.2f} s per call", "",
                  "| variant | speedup | MSE to baseline | x peer | max abs diff to peer |", "|---|---|---|---|---|"]
        for name, r in d["rows"].items():
            vs_peer = f"{r['speedup_vs_peer']:.2f}" if "speedup_vs_peer" in r else ""
            diff = f"{r['max_abs_diff_to_peer']:.1e}" if "max_abs_diff_to_peer" in r else ""
            lines.append(f"| {name} | {r['speedup']:.2f}x | {r['mse_to_baseline']:.2e} | {vs_peer} | {diff} |")
        lines.append("")
    lines += [
        "Reading: tuner's `deepcache` (default `cut = \"layer\"`) gives exactly DeepCache's images (max abs diff 0), and "
        "its speed is the peer's within this machine's noise (both skip the same modules; ours hooks only the cut "
        "ones). At N=3 its branch 0 gives about 2.0x where the old block-level branch 0 gives 1.3x; that block branch's "
        "images are those of "
        "layer id 1 (block branch b = layer id 3b + L, L resnets per down block; same images, same speed above), "
        "so the block cut adds no point to the search space; it stays only so that schema_version 1 configs keep "
        "their meaning. tuner's `tome` merges the same tokens as tomesd (differences are float summation order) "
        "at the peer's speed or better: its plans are built with fewer tensor ops and its merge/unmerge is one "
        "scatter-add and one gather where tomesd gathers, scatter-reduces, concatenates and scatters three times.",
        ""]
    write_section(SECTION, "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("proxy", "sd64"))
    ap.add_argument("--n-images", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write-md", action="store_true")
    args = ap.parse_args()
    if args.part:
        defaults = {"proxy": (16, 20), "sd64": (1, 5)}[args.part]
        result = run(args.part, args.n_images or defaults[0], args.steps or defaults[1], args.rounds)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"peers_{args.part}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    if args.write_md:
        write_md()


if __name__ == "__main__":
    main()
