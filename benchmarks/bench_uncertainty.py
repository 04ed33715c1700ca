"""How noisy is the proxy FID, and are the stored intervals honest? (issue 12)

1. FID against N (real-vs-real and the 20-step baseline): the small-sample bias that makes a relative FID
   increase depend on the number of images.
2. Calibration of the paired seed-split interval (tuner/uncertainty.py): on 256 held-out images (seed 7),
   the spread of the candidate-minus-baseline FID over 400 random subsets of 64 (corrected for sampling
   without replacement) is the reference; the interval's sd on each disjoint quarter of 64 images, and on
   the study's own 64 images (seed 0), should match it. Candidates: 12 and 8 of the 20 steps.

    nice -n 10 python benchmarks/bench_uncertainty.py
"""

from __future__ import annotations

import statistics

import torch


def main() -> None:
    torch.set_num_threads(1)
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.proxy.data import load_digits_split
    from tuner.proxy.model import load_proxy_pipeline
    from tuner.uncertainty import LEVEL, Frechet, fid_interval

    pipe = load_proxy_pipeline("cpu")
    ctx = ScoringContext(pipe, ImageSet(64, 20, 0))
    ref = ctx.reference.features()
    frechet = Frechet(ref)
    z = statistics.NormalDist().inv_cdf((1 + LEVEL) / 2)

    def features(images):
        with torch.no_grad():
            return ctx.extractor(images).double()

    train, _ = load_digits_split("train")
    print("| N | real-vs-real FID | baseline FID (20 steps, seed 7) | 12 steps | 8 steps |")
    print("|---|---|---|---|---|")
    sets = {}
    for seed, n in ((0, 64), (7, 256)):
        ps = ImageSet(n, 20, seed)
        sets[seed] = {s: features(pipe(ps.classes, ps.seeds, num_inference_steps=s)) for s in (20, 12, 8)}
    for m in (64, 128, 256):
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:m]
        real = float(frechet(features(train[idx])[None])[0])
        f = {s: float(frechet(v[:m][None])[0]) for s, v in sets[7].items()}
        print(f"| {m} | {real:.2f} | {f[20]:.2f} | {f[12]:.2f} ({100 * (f[12] / f[20] - 1):+.1f} %) | "
              f"{f[8]:.2f} ({100 * (f[8] / f[20] - 1):+.1f} %) |")

    print("\n| candidate | subset sd of the difference at N=64 (reference) | interval sd, seed 7 quarters | "
          "interval sd, seed 0 (study set) | study set: difference [90 % interval] |")
    print("|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(1)
    subsets = torch.stack([torch.randperm(256, generator=gen)[:64] for _ in range(400)])
    for s in (12, 8):
        held, base = sets[7][s], sets[7][20]
        truth = float((frechet(held[subsets]) - frechet(base[subsets])).std()) / (1 - 64 / 256) ** 0.5
        quarters = []
        for q in range(4):
            ci = fid_interval(held[q * 64:(q + 1) * 64], base[q * 64:(q + 1) * 64], ref)
            quarters.append((ci["fid_delta_hi"] - ci["fid_delta"]) / z)
        ci = fid_interval(sets[0][s], sets[0][20], ref)
        print(f"| {s} of 20 steps | {truth:.2f} | {', '.join(f'{v:.2f}' for v in quarters)} | "
              f"{(ci['fid_delta_hi'] - ci['fid_delta']) / z:.2f} | {ci['fid_delta']:+.2f} "
              f"[{ci['fid_delta_lo']:+.2f}, {ci['fid_delta_hi']:+.2f}] |")


if __name__ == "__main__":
    main()
