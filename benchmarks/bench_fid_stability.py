"""Which FID feature layer / estimator ranks configs stably at a study's image count? (issue 10, item 3)

Measured on the embedded proxy (16 px digits U-Net) with its own trained feature extractor, the digit
classifier (tuner/proxy/classifier.py): the offline analog of Inception on a user's model, which cannot be
measured here (no Inception weights, no SD checkpoint). Configs span quality: a 20-step DDIM baseline, the
steps ladder 12/8/6/4, ToMe r=0.3/0.5, DeepCache N=3 and W6A6, each applied with `tuner.apply`.

Truth: each config's FID at --truth-n images (its own seeds), in the classifier's final 32-d features (what
the proxy study uses), against the held-out digits ("to real", the proxy study's objective) and against the
baseline's images on the same seeds ("to baseline", a user model's objective). Small N: --sets disjoint seed
sets of --set-n images (and their halves, 2x as many sets of half the size); every config sees the same seeds
in a set (common random numbers, as in a study). On each set each estimator ranks the configs; reported: the
mean Kendall tau to the truth ranking, to the same estimator's own ranking at --truth-n, and the share of sets
whose best and worst config is the truth's.

Feature layers of the classifier (torch-fidelity's Inception offers 64/192/768/2048 pooled features; same
idea): block1/2/3 = the SiLU output of conv 1/2/3 average-pooled over space (16/32/64-d), final = the
penultimate 32-d layer (the study's), logits = the 10 class logits, and block2 map = conv 2's 32x8x8
feature map unpooled (2,048-d: the d >> N regime of Inception's final layer at a few dozen images).

    nice -n 19 python benchmarks/bench_fid_stability.py [--write]

Generated images are cached (`$TUNER_CACHE_DIR/bench_fid_stability/`), so a second run only re-scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from md_sections import write_section  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SECTION = "## FID estimator stability at small N (issue 10)"
STEPS = 20  # the default study's baseline: DDIM, 20 steps
TRUTH_SEED, SETS_SEED = 5_000_000, 6_000_000  # apart from every proxy set, calibration and the study's seeds
LAYERS = {"block1": "block1 (16-d)", "block2": "block2 (32-d)", "block3": "block3 (64-d)",
          "final": "final (32-d, study's)", "logits": "logits (10-d)", "block2map": "block2 map (2048-d)"}


def configs() -> dict[str, dict]:
    from tuner.methods.timesteps import uniform_timesteps

    out = {"baseline (20 steps)": {}}
    out.update({f"{k} steps": {"timesteps": {"timesteps": uniform_timesteps(k)}} for k in (12, 8, 6, 4)})
    out.update({"ToMe r=0.3": {"tome": {"ratio": 0.3}}, "ToMe r=0.5": {"tome": {"ratio": 0.5}},
                "DeepCache N=3": {"deepcache": {"interval": 3, "branch": 0}},
                "W6A6": {"quant": {"weight_bits": 6, "act_bits": 6}}})
    return out


def generate_all(names_methods: dict[str, dict], truth_n: int, n_sets: int, set_n: int, cache: Path) -> dict:
    """{config: {"truth": [truth_n,...], "sets": [n_sets, set_n, ...]}} images, cached per config."""
    from tuner.apply_config import apply
    from tuner.config import AccelConfig
    from tuner.methods.quant import calibrate
    from tuner.proxy.model import load_proxy_pipeline

    pipe = load_proxy_pipeline("cpu")
    calibrated = False
    truth_seeds = [TRUTH_SEED + i for i in range(truth_n)]
    truth_classes = [i % 10 for i in range(truth_n)]
    set_seeds = [[SETS_SEED + 10_000 * k + j for j in range(set_n)] for k in range(n_sets)]
    set_classes = [j % 10 for j in range(set_n)]  # as a study's proxy set: balanced classes in order
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, methods in names_methods.items():
        key = json.dumps({"m": methods, "steps": STEPS, "truth": truth_n, "sets": n_sets, "n": set_n}, sort_keys=True)
        path = cache / ("".join(c if c.isalnum() else "_" for c in name) + f"-{truth_n}-{n_sets}x{set_n}.pt")
        if path.is_file():
            stored = torch.load(path, weights_only=False)
            if stored.get("key") == key:
                out[name] = stored
                continue
        if "quant" in methods and not calibrated:
            calibrate(pipe)  # activation ranges on the default calibration images, as a study does
            calibrated = True
        t0 = time.time()
        handle = apply(pipe, AccelConfig.from_dict({"schema_version": 2, "methods": methods}))
        try:
            with torch.no_grad():
                truth = torch.cat([pipe(truth_classes[i:i + 128], truth_seeds[i:i + 128], num_inference_steps=STEPS)
                                   for i in range(0, truth_n, 128)])
                sets = torch.stack([pipe(set_classes, s, num_inference_steps=STEPS) for s in set_seeds])
        finally:
            handle.remove()
        stored = {"key": key, "truth": truth.float(), "sets": sets.float()}
        torch.save(stored, path)
        out[name] = stored
        print(f"{name}: generated {truth_n + n_sets * set_n} images in {time.time() - t0:.0f} s", file=sys.stderr)
    return out


def layer_features(classifier, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every feature layer of the digit classifier for float images in [0, 1], [N, 1, 16, 16]."""
    from tuner.proxy.classifier import ClassifierFeatures

    trunk = classifier.trunk  # conv, SiLU, conv, SiLU, conv, SiLU, pool, flatten, linear, SiLU
    with torch.no_grad():
        x = images.float() * 2 - 1
        out = {}
        for i, module in enumerate(trunk):
            x = module(x)
            if i == 1:
                out["block1"] = x.mean((2, 3))
            elif i == 3:
                out["block2"], out["block2map"] = x.mean((2, 3)), x.flatten(1)
            elif i == 5:
                out["block3"] = x.mean((2, 3))
        out["final"] = x
        out["logits"] = classifier.head(x)
        assert torch.allclose(x, ClassifierFeatures(classifier)(images)), "final layer differs from the study's"
    return {k: v.double() for k, v in out.items()}


def kid(a: torch.Tensor, b: torch.Tensor) -> float:
    """KID: unbiased MMD² with the cubic polynomial kernel (x·y/d + 1)³ of torchmetrics/the KID paper, on
    the full sets (torchmetrics averages random subsets of 50; same expectation, less spread)."""
    d = a.shape[1]
    kxx, kyy, kxy = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
    n, m = len(a), len(b)
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                 - 2 * kxy.mean())


def score(feats: dict, base_feats: dict, images, base_images, real: dict) -> dict:
    """Every estimator on one set of one config (lower is better for all: PSNR/SSIM are negated)."""
    from tuner.evaluators.fidelity import frechet_distance
    from tuner.evaluators.pairwise import pairwise

    out = {}
    for layer in LAYERS:
        out[f"fid_real/{layer}"] = frechet_distance(feats[layer], real[layer])
        out[f"fid_base/{layer}"] = frechet_distance(feats[layer], base_feats[layer])
    for layer in ("final", "block2map"):
        out[f"kid_real/{layer}"] = kid(feats[layer], real[layer])
        out[f"kid_base/{layer}"] = kid(feats[layer], base_feats[layer])
    pw = pairwise(images, base_images)
    out["neg_psnr"], out["neg_ssim"] = -pw["psnr"], -pw["ssim"]
    return out


def kendall(x: list[float], y: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(x, y).statistic)


ESTIMATORS_REAL = [(f"fid_real/{k}", f"FID to real, {v}") for k, v in LAYERS.items()] + [
    ("kid_real/final", "KID to real, final (32-d)"), ("kid_real/block2map", "KID to real, block2 map (2048-d)"),
    ("neg_psnr", "PSNR to baseline (per seed)"), ("neg_ssim", "SSIM to baseline (per seed)")]
ESTIMATORS_BASE = [(f"fid_base/{k}", f"FID to baseline, {v}") for k, v in LAYERS.items()] + [
    ("kid_base/final", "KID to baseline, final (32-d)"), ("kid_base/block2map", "KID to baseline, block2 map (2048-d)"),
    ("neg_psnr", "PSNR to baseline (per seed)"), ("neg_ssim", "SSIM to baseline (per seed)")]


def rank_stats(est: str, names: list[str], per_set: list[dict], truth: dict, truth_key: str) -> dict:
    """Mean Kendall tau of one estimator's per-set ranking to the truth and to its own truth-N ranking, and
    the share of sets that get the truth's best and worst config."""
    t = [truth[c][truth_key] for c in names]
    own = [truth[c][est] for c in names]
    best, worst = names[min(range(len(t)), key=t.__getitem__)], names[max(range(len(t)), key=t.__getitem__)]
    taus, own_taus, b_ok, w_ok = [], [], 0, 0
    for s in per_set:
        v = [s[c][est] for c in names]
        taus.append(kendall(v, t))
        own_taus.append(kendall(v, own))
        b_ok += names[min(range(len(v)), key=v.__getitem__)] == best
        w_ok += names[max(range(len(v)), key=v.__getitem__)] == worst
    mean = sum(taus) / len(taus)
    sd = (sum((x - mean) ** 2 for x in taus) / max(1, len(taus) - 1)) ** 0.5
    return {"tau": mean, "tau_sd": sd, "tau_min": min(taus), "own_tau": sum(own_taus) / len(own_taus),
            "best": b_ok / len(per_set), "worst": w_ok / len(per_set), "sets": len(per_set),
            "truth_tau_own": kendall(own, t)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--truth-n", type=int, default=512, help="images per config for the truth ranking")
    ap.add_argument("--sets", type=int, default=8, help="disjoint small seed sets")
    ap.add_argument("--set-n", type=int, default=64, help="images per small set (its halves give 2x sets of half)")
    ap.add_argument("--write", action="store_true", help="write the section to BENCHMARKS.md")
    args = ap.parse_args()
    if args.truth_n < 16 or args.sets < 2 or args.set_n < 8 or args.set_n % 2:
        ap.error("need --truth-n >= 16, --sets >= 2 and an even --set-n >= 8")
    torch.set_num_threads(1)

    from tuner.evaluators.fidelity import cache_dir
    from tuner.proxy.classifier import load_classifier
    from tuner.proxy.data import load_digits_split
    from tuner.uncertainty import fid_interval

    cfgs = configs()
    names = list(cfgs)
    base_name = names[0]
    images = generate_all(cfgs, args.truth_n, args.sets, args.set_n, cache_dir() / "bench_fid_stability")
    classifier = load_classifier()
    real = layer_features(classifier, load_digits_split("heldout")[0])
    feats = {c: {"truth": layer_features(classifier, images[c]["truth"]),
                 "sets": [layer_features(classifier, s) for s in images[c]["sets"]]} for c in names}

    truth = {c: score(feats[c]["truth"], feats[base_name]["truth"], images[c]["truth"], images[base_name]["truth"], real)
             for c in names}
    for c in names:  # the paired interval of the truth's FID change (is the truth ordering itself resolved?)
        ci = fid_interval(feats[c]["truth"]["final"], feats[base_name]["truth"]["final"], real["final"])
        truth[c]["delta"], truth[c]["delta_lo"], truth[c]["delta_hi"] = ci["fid_delta"], ci["fid_delta_lo"], ci["fid_delta_hi"]
    h = args.set_n // 2
    per_n: dict[int, list[dict]] = {args.set_n: [], h: []}
    for k in range(args.sets):
        for n, parts in ((args.set_n, [slice(0, args.set_n)]), (h, [slice(0, h), slice(h, args.set_n)])):
            for part in parts:
                sub = {c: {layer: f[part] for layer, f in feats[c]["sets"][k].items()} for c in names}
                per_n[n].append({c: score(sub[c], sub[base_name], images[c]["sets"][k][part],
                                          images[base_name]["sets"][k][part], real) for c in names})

    candidates = names[1:]  # FID to baseline: the baseline itself is 0 by construction
    stats = {"real": {n: {e: rank_stats(e, names, sets, truth, "fid_real/final") for e, _ in ESTIMATORS_REAL}
                      for n, sets in per_n.items()},
             "base": {n: {e: rank_stats(e, candidates, sets, truth, "fid_base/final") for e, _ in ESTIMATORS_BASE}
                      for n, sets in per_n.items()}}
    # the paired difference (candidate - baseline, same seeds): its spread across sets vs the FID's own
    paired = {}
    for n, sets in per_n.items():
        for c in candidates:
            f = torch.tensor([s[c]["fid_real/final"] for s in sets])
            d = f - torch.tensor([s[base_name]["fid_real/final"] for s in sets])
            sign = sum((float(x) > 0) == (truth[c]["delta"] > 0) for x in d) / len(d)
            paired.setdefault(c, {})[n] = {"fid_mean": float(f.mean()), "fid_sd": float(f.std()),
                                           "delta_mean": float(d.mean()), "delta_sd": float(d.std()), "sign": sign}

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fid_stability.json").write_text(json.dumps(
        {"args": vars(args), "truth": truth, "stats": stats, "paired": paired}, indent=1))

    ns = sorted(per_n)
    lines = [f"Truth at N={args.truth_n} per config (final 32-d features unless noted; FID change = candidate minus "
             f"baseline on the same seeds, [90 % paired interval]):", "",
             "| config | FID to real | FID change [90 %] | FID to baseline | FID to real, block1 (16-d) | "
             "FID to real, block2 map (2048-d) | PSNR | SSIM |", "|---|---|---|---|---|---|---|---|"]
    for c in names:
        t = truth[c]
        lines.append(f"| {c} | {t['fid_real/final']:.2f} | {t['delta']:+.2f} [{t['delta_lo']:+.2f}, {t['delta_hi']:+.2f}] "
                     f"| {t['fid_base/final']:.2f} | {t['fid_real/block1']:.3f} | {t['fid_real/block2map']:.2f} "
                     f"| {-t['neg_psnr']:.1f} | {-t['neg_ssim']:.3f} |")
    for target, ests, what, count in (
            ("real", ESTIMATORS_REAL, "FID to real (the proxy study's objective)", len(names)),
            ("base", ESTIMATORS_BASE, "FID to baseline (a user model's objective; baseline left out)", len(candidates))):
        lines += ["", f"Ranking {count} configs; truth = {what} at N={args.truth_n}, final layer. Per estimator and N: "
                  "mean Kendall tau to the truth (min over sets), mean tau to the same estimator's own ranking at "
                  f"N={args.truth_n}, share of sets with the truth's best / worst config ({', '.join(f'{len(per_n[n])} sets at N={n}' for n in ns)}):",
                  "", "| estimator | own N=%d tau to truth | " % args.truth_n
                  + " | ".join(f"N={n}: tau (min) | N={n}: own tau | N={n}: best / worst" for n in ns) + " |",
                  "|---|---|" + "---|---|---|" * len(ns)]
        for e, label in ests:
            cells = [f"{stats[target][ns[0]][e]['truth_tau_own']:.2f}"]
            for n in ns:
                s = stats[target][n][e]
                cells += [f"{s['tau']:.2f} ({s['tau_min']:.2f})", f"{s['own_tau']:.2f}",
                          f"{s['best']:.0%} / {s['worst']:.0%}"]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Paired FID change (final layer, to real) vs the FID itself across sets: mean ± sd, and the share of "
              "sets where the change has the truth's sign:", "",
              "| config | truth change | " + " | ".join(f"N={n}: FID | N={n}: change | N={n}: sign right" for n in ns) + " |",
              "|---|---|" + "---|---|---|" * len(ns)]
    for c in candidates:
        cells = []
        for n in ns:
            p = paired[c][n]
            cells += [f"{p['fid_mean']:.2f} ± {p['fid_sd']:.2f}", f"{p['delta_mean']:+.2f} ± {p['delta_sd']:.2f}",
                      f"{p['sign']:.0%}"]
        lines.append(f"| {c} | {truth[c]['delta']:+.2f} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        command = "nice -n 19 python benchmarks/bench_fid_stability.py " + " ".join(sys.argv[1:])
        text = (f"{SECTION}\n\nCommand: `{command}` (1 thread). The offline analog: the proxy's own trained "
                "feature extractor (digit classifier) in place of Inception; see the reading below.\n\n" + table + "\n")
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
