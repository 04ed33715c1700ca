"""Speed of the DiT methods (diffusers' cache hooks as tuner methods) at PixArt-α's real size, on the CPU.

A random-weight `PixArtTransformer2DModel` with PixArt-α's width and depth (1152 wide = 16 heads x 72,
28 blocks, patch 2, 4096-d captions of 120 tokens) at 512 px (64x64 latents: 1,024 image tokens) and, with
`--px 1024`, 4,096 tokens. It runs inside a real `PixArtAlphaPipeline` (DPM-Solver++, the pipeline's own
loop) fed with caption embeddings, no CFG (guidance 1) and latents out, so the time measured is the
transformer's. The weights are random: speed only (an adaptive cache such as First Block Cache decides on
random features, so its skip rate here says nothing about a trained model; the table reports it).
One process, one thread, every candidate timed interleaved with the baseline (A B A B ...), ratios of medians.

    flock /tmp/tuner-timing.lock nice -n 0 python benchmarks/bench_dit_scale.py --steps 8 --write
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results" / "dit_scale_speed.json"
HEADING = "## DiT pipelines at PixArt-α's size (speed only, issue 22)"
CAPTION_TOKENS = 120

CANDIDATES = {
    "fbcache threshold 0.1": {"fbcache": {"threshold": 0.1}},
    "pab self every 2nd, cross every 2nd, t in [100, 800]": {"pab": {"self_skip": 2, "cross_skip": 2}},
    "pab self every 3rd, cross every 3rd, t in [0, 1000]": {"pab": {"self_skip": 3, "cross_skip": 3, "t_low": 0,
                                                                    "t_high": 1000}},
    "taylorseer interval 2, warm-up 2, order 1": {"taylorseer": {"interval": 2, "warmup": 2}},
    "taylorseer interval 4, warm-up 2, order 1": {"taylorseer": {"interval": 4, "warmup": 2}},
    # MagCache skips by the model's magnitude ratios; random weights have none worth measuring, so it runs on
    # the ratios diffusers publishes for Flux (its speed is then the schedule those ratios give)
    "magcache threshold 0.06, K 3, Flux's published ratios": {"magcache": {"threshold": 0.06, "max_skip_steps": 3}},
    "dit_tome ratio 0.5 (tuner's DiT token merging)": {"dit_tome": {"ratio": 0.5}},
    "dit_tome ratio 0.3 (tuner's DiT token merging)": {"dit_tome": {"ratio": 0.3}},
}


def _with_flux_ratios(config: dict) -> dict:
    from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

    if "magcache" in config:
        return {"magcache": {**config["magcache"], "mag_ratios": [round(float(r), 5) for r in FLUX_MAG_RATIOS]}}
    return config


def build_pipeline():
    """PixArt-α's transformer at full size, random weights, in a PixArtAlphaPipeline without text encoder."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=64, num_layers=28, patch_size=2, attention_head_dim=72, num_attention_heads=16,
        caption_channels=4096, in_channels=4, out_channels=8, cross_attention_dim=1152, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6).eval()
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    return PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())


def run(steps: int, px: int, repeats: int, only: list[str] | None = None) -> dict:
    from tuner.apply_config import apply
    from tuner.evaluators.latency import interleaved_medians

    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, CAPTION_TOKENS, 4096, generator=g)
    mask = torch.ones(1, CAPTION_TOKENS, dtype=torch.long)
    calls = {"n": 0}
    count_calls = pipe.transformer.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))

    def generate():
        pipe(prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt=None, guidance_scale=1.0,
             num_inference_steps=steps, height=px, width=px, output_type="latent", use_resolution_binning=False,
             generator=torch.Generator().manual_seed(0))

    names = [n for n in CANDIDATES if not only or any(n.startswith(o) for o in only)]
    fns = {"baseline": generate, **{name: generate for name in names}}
    contexts = {name: (lambda c=_with_flux_ratios(CANDIDATES[name]): apply(pipe, c)) for name in names}
    t0 = time.perf_counter()
    med = interleaved_medians(fns, repeats=repeats, warmup=0, contexts=contexts)
    count_calls.remove()
    rows = {name: {"speedup": med["baseline"] / med[name], "seconds_per_image": med[name],
                   "config": CANDIDATES[name]} for name in names}
    return {"px": px, "only": only, "image_tokens": (px // 16) ** 2, "width": 1152, "depth": 28, "steps": steps,
            "repeats": repeats, "threads": torch.get_num_threads(), "baseline_seconds_per_image": med["baseline"],
            "transformer_calls": calls["n"], "wall_seconds": time.perf_counter() - t0, "torch": torch.__version__,
            "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
            "machine": platform.processor() or platform.machine(), "rows": rows}


def write_md(results: list[dict]) -> None:
    from md_sections import write_section

    d = results[0]
    lines = [HEADING, "",
             f"A random-weight `PixArtTransformer2DModel` with PixArt-α's width and depth ({d['width']} wide, "
             f"{d['depth']} blocks, patch 2, {CAPTION_TOKENS} caption tokens of 4096-d) inside a real "
             "`PixArtAlphaPipeline` (DPM-Solver++, its own loop, caption embeddings in, latents out, no CFG), "
             f"one image per call, {d['threads']} thread, every candidate interleaved with the baseline in one run "
             "(steps and repeats per run below). Weights are random: speed only. The cache methods are diffusers' "
             "own hooks, applied and removed through tuner (`tuner.apply`); `dit_tome` is tuner's token merging on "
             "the blocks' self-attention.", ""]
    for d in results:
        only = f" --only {' '.join(repr(o) for o in d['only'])}" if d.get("only") else ""
        lines += [f"`flock /tmp/tuner-timing.lock nice -n 0 python benchmarks/bench_dit_scale.py --px {d['px']} "
                  f"--steps {d['steps']} --repeats {d['repeats']}{only} --write` ({d['wall_seconds'] / 60:.0f} min; "
                  f"load average {'/'.join(d['loadavg_at_end'])} at the end; ratios are interleaved)", "",
                  f"{d['px']} px ({d['image_tokens']:,} image tokens), {d['steps']} steps, median of {d['repeats']}: "
                  f"baseline {d['baseline_seconds_per_image']:.1f} s/image.", "", "| config | speedup | s/image |", "|---|---|---|"]
        for name, r in d["rows"].items():
            lines.append(f"| {name} | {r['speedup']:.2f}× | {r['seconds_per_image']:.1f} |")
        lines.append("")
    lines += ["PAB and TaylorSeer skip by schedule, token merging by ratio, and MagCache by the magnitude ratios it "
              "is given (here Flux's published ones: at 4 steps its retention window and K leave nothing to skip, "
              "1.00x), so these speedups are properties of the setting and carry to trained weights; First Block "
              "Cache skips when the first block's residual barely changes, which on random weights is arbitrary "
              "(its row is not a prediction for a trained PixArt). Single-sample rows (median of 1) are "
              "indications only: the baseline is timed once, at the start, and the load changes while the other "
              "candidates run (dit_tome 0.5 at 1024 px: 0.86x as the last of a one-sample run at load 2.7-3.7, "
              "1.48x as the median of 3 interleaved rounds; at 512 px 0.65x and 1.78x). Quote the median-of-3 "
              "rows: token merging of half the image tokens before every self-attention gives 1.48x at 4,096 "
              "tokens and 1.78x at 1,024 tokens, where the diffusers hooks give 1.2-1.6x at the settings above. "
              "The 512 px runs shared the 2 cores with other jobs (load 7-11); the 1024 px runs with one other "
              "job (load 3)."]
    write_section(HEADING, "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--px", type=int, default=512)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--only", nargs="*", default=None, help="candidates whose name starts with one of these")
    p.add_argument("--write", action="store_true", help="save results and update BENCHMARKS.md")
    p.add_argument("--render", action="store_true", help="only rewrite the BENCHMARKS.md section from saved results")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.render:
        write_md([saved[k] for k in sorted(saved)])
        return
    torch.set_num_threads(1)
    data = run(args.steps, args.px, args.repeats, args.only)
    print(json.dumps({k: v for k, v in data.items() if k != "rows"}, indent=1))
    for name, r in data["rows"].items():
        print(f"{name:55s} {r['speedup']:.2f}x  {r['seconds_per_image']:.1f} s/image")
    if args.write:
        saved[f"{args.px}" + (f" {' '.join(args.only)}" if args.only else "")] = data
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
        write_md([saved[k] for k in sorted(saved)])


if __name__ == "__main__":
    main()
