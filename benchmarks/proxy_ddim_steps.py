"""DDIM FID of the shipped proxy against the step count, with and without x0 clipping (issue 12).

Each variant is CLIP:SPACING:GUIDANCE:STEPS, e.g. 1:leading:1.25:100 (clip on, diffusers 'leading'
spacing, CFG 1.25, 100 steps). 64 images, seeds 0..63, FID in the proxy classifier's feature space.

    nice -n 10 python benchmarks/proxy_ddim_steps.py 1:leading:1.25:20,1:leading:1.25:50,0:leading:1.25:100
"""

from __future__ import annotations

import sys
import time

import torch


def main(variants: str, n_images: int = 64) -> None:
    torch.set_num_threads(1)
    from tuner.evaluators.fidelity import frechet_distance_of_features
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.proxy.model import load_proxy_pipeline
    from tuner.solvers import Solver

    pipe = load_proxy_pipeline("cpu")
    ctx = ScoringContext(pipe, ImageSet(n_images, 20, 0))
    ref = ctx.reference.features()
    print("real-vs-real floor", round(ctx.real_vs_real_fid, 3))
    ps = ImageSet(n_images, 20, 0)
    for variant in variants.split(","):
        clip, spacing, guidance, steps = variant.split(":")
        pipe.scheduler.register_to_config(clip_sample=clip == "1")  # the DDIM rule reads it from the noise schedule
        pipe.solver = Solver("ddim", spacing=spacing)
        t0 = time.time()
        images = pipe(ps.classes, ps.seeds, num_inference_steps=int(steps), guidance_scale=float(guidance))
        with torch.no_grad():
            fid = frechet_distance_of_features(ctx.extractor(images).double(), ref, ctx.extractor)
        print(variant, round(fid, 3), f"{time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
