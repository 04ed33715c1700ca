"""Reproducible training of the shipped proxy weights (`tuner proxy train`).

Fixed seeds, CPU, single process. Writes fp16 safetensors (a few MB) and `proxy_info.json` with the
run's settings, held-out classifier accuracy and CPU time.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tuner.proxy.classifier import DigitClassifier
from tuner.proxy.data import DATASET_ID, NUM_CLASSES, load_digits_split
from tuner.proxy.model import (ASSETS, DEFAULT_GUIDANCE, MODEL_ID, NULL_CLASS, UNET_CONFIG, ClassEncoder,
                               build_scheduler, build_unet)


def _shift(x: torch.Tensor, gen: torch.Generator, max_px: int = 1) -> torch.Tensor:
    """Random translation by up to max_px pixels (augmentation for the classifier)."""
    dx, dy = (int(v) for v in torch.randint(-max_px, max_px + 1, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def train_classifier(epochs: int = 40, seed: int = 0, progress: bool = True) -> tuple[DigitClassifier, float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = load_digits_split("train")
    xh, yh = load_digits_split("heldout")
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in tqdm(range(epochs), desc="classifier", disable=not progress):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(_shift(x[idx], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xh).argmax(1) == yh).float().mean().item()
    return model, acc


def train_unet(iters: int = 2000, batch: int = 48, seed: int = 0, p_uncond: float = 0.1, progress: bool = True):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = load_digits_split("train")
    x = x * 2 - 1
    unet, encoder = build_unet(), ClassEncoder()
    sched = build_scheduler()
    abar = sched.alphas_cumprod.float()
    params = list(unet.parameters()) + list(encoder.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    lr_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=iters, pct_start=0.05)
    ema_unet, ema_enc = copy.deepcopy(unet), copy.deepcopy(encoder)
    ema_params = list(ema_unet.parameters()) + list(ema_enc.parameters())
    bar = tqdm(range(iters), desc="proxy unet", disable=not progress)
    for it in bar:
        idx = torch.randint(0, len(y), (batch,), generator=gen)
        x0, cls = x[idx], y[idx].clone()
        cls[torch.rand(batch, generator=gen) < p_uncond] = NULL_CLASS
        t = torch.randint(0, 1000, (batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, encoder_hidden_states=encoder(cls)).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        decay = min(0.999, (1 + it) / (10 + it))
        with torch.no_grad():
            for pe, p in zip(ema_params, params):
                pe.lerp_(p, 1 - decay)
        if it % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return ema_unet.eval(), ema_enc.eval()


def train_all(out_dir: Path = ASSETS, iters: int = 2000, classifier_epochs: int = 40, seed: int = 0,
              progress: bool = True) -> dict:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.process_time()
    clf, acc = train_classifier(classifier_epochs, seed, progress)
    t_clf = time.process_time() - t0
    save_file({k: v.half().contiguous() for k, v in clf.state_dict().items()}, str(out_dir / "digits_classifier.safetensors"))
    t1 = time.process_time()
    unet, enc = train_unet(iters, seed=seed, progress=progress)
    t_unet = time.process_time() - t1
    state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"encoder.{k}": v for k, v in enc.state_dict().items()})
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(out_dir / "proxy_unet.safetensors"))
    info = {
        "model_id": MODEL_ID, "dataset": DATASET_ID, "seed": seed, "unet_iters": iters,
        "classifier_epochs": classifier_epochs, "classifier_heldout_accuracy": round(acc, 4),
        "cpu_seconds_classifier": round(t_clf, 1), "cpu_seconds_unet": round(t_unet, 1),
        "torch_threads": torch.get_num_threads(), "guidance_scale": DEFAULT_GUIDANCE,
        "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()},
        "num_classes": NUM_CLASSES, "weights_dtype": "float16",
        "ddim_clip_sample": bool(build_scheduler().config.clip_sample),  # sampling setting the weights were measured with
    }
    (out_dir / "proxy_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


if __name__ == "__main__":
    print(json.dumps(train_all(), indent=2))
