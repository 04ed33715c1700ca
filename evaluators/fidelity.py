"""FID and KID (torchmetrics) in a chosen feature space, against reference features cached on disk.

The reference side is computed once per (dataset, extractor, image size) and stored as a feature
matrix; the FID sums and KID features of torchmetrics are filled from it, so no reference image is
pushed through the extractor again.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchmetrics.image.kid import KernelInceptionDistance

from tuner.errors import TunerError


def cache_dir() -> Path:
    return Path(os.environ.get("TUNER_CACHE_DIR", Path.home() / ".cache" / "tuner"))


def module_fingerprint(module: nn.Module) -> str:
    """Hash of the extractor's weights: a retrained extractor never reuses stale statistics."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class ReferenceFeatures:
    """Features of the real images, computed once and cached at `<cache>/ref_stats/<key>.pt`."""

    def __init__(self, extractor: nn.Module, dataset_id: str, image_size: int,
                 load_images: Callable[[], torch.Tensor], directory: Path | None = None):
        self.extractor = extractor
        self.key = f"{dataset_id}-{image_size}px-{type(extractor).__name__}-{module_fingerprint(extractor)}"
        self.path = Path(directory or cache_dir() / "ref_stats") / f"{self.key}.pt"
        self._load_images = load_images
        self.computed = 0  # how many times features were computed here (tests check the cache)
        self._features: torch.Tensor | None = None

    def features(self) -> torch.Tensor:
        if self._features is None:
            self._features = self._load_cached()
        if self._features is None:
            with torch.no_grad():
                self._features = self.extractor(self._load_images()).double().cpu()
            self.computed += 1
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(self._features, tmp)
            os.replace(tmp, self.path)  # atomic: a concurrent study never reads half a file
        return self._features

    def _load_cached(self) -> torch.Tensor | None:
        """The cached features, or None when absent or unreadable (a cache is recomputed, never fatal)."""
        if not self.path.is_file():
            return None
        try:
            feats = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # truncated or foreign file: torch raises several types here
            return None
        return feats if isinstance(feats, torch.Tensor) and feats.ndim == 2 else None


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID between two feature matrices [n, d] and [m, d], with sample covariances (divided by n-1, as in
    torchmetrics, whose value this is). Computed in the samples' space: the non-zero eigenvalues of Σa·Σb
    are the squared singular values of Ac·Bcᵀ / √((n-1)(m-1)) (Ac, Bc: centred features), so tr √(Σa·Σb) is
    that n×m matrix's nuclear norm. Exact, and O(n·m·d) instead of an eigen-decomposition of a d×d product
    (2048² for Inception: seconds per trial on a CPU, and noisy when n << d makes Σ singular)."""
    a, b = a.double().cpu(), b.double().cpu()
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least 2 feature vectors on each side")
    ac, bc = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    traces = ac.square().sum() / na + bc.square().sum() / nb
    cross = torch.linalg.matrix_norm(ac @ bc.T, ord="nuc") / (na * nb) ** 0.5
    return float(mean_term + traces - 2 * cross)


def fid_kid(images: torch.Tensor, extractor: nn.Module, ref: torch.Tensor, kid_subset: int = 50) -> dict:
    """images: float in [0, 1], [N, C, H, W]. Returns {'fid', 'kid', 'kid_std'}. The images go through the
    extractor once; FID and torchmetrics' KID are computed from those features."""
    images = images.float().cpu()
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or Inf")
    with torch.no_grad():
        feats = extractor(images).double()
    subset = max(2, min(kid_subset, len(feats), len(ref)))
    with warnings.catch_warnings():  # "will save all extracted features": intended, the sets are small
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=extractor, normalize=True, subset_size=subset,
                                      reset_real_features=False)
        kid.real_features.append(ref.float())
        kid.fake_features.append(feats.float())  # filled directly: "compute before update" is intended
        torch.manual_seed(0)  # KID draws random subsets: the same draw for every candidate
        kid_mean, kid_std = kid.compute()
    return {"fid": frechet_distance(feats, ref), "kid": float(kid_mean), "kid_std": float(kid_std)}


def frechet_distance_of_features(a: torch.Tensor, b: torch.Tensor, extractor: nn.Module | None = None) -> float:
    """FID between two feature matrices (e.g. real vs real at the same N)."""
    return frechet_distance(a, b)


def class_accuracy(images: torch.Tensor, classes: torch.Tensor, classifier: nn.Module) -> float:
    with torch.no_grad():
        pred = classifier(images.float().cpu()).argmax(1)
    return float((pred == torch.as_tensor(classes)).float().mean())


def cached_inception_weights() -> Path | None:
    """torch-fidelity's Inception file in the torch hub cache, where its own download puts it."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    path = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]
    return path if path.is_file() else None


def _download_tensors(url: str) -> dict:
    """torch-fidelity's own Inception file, downloaded into torch's hub cache and read as plain tensors."""
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, progress=False)
    except Exception as e:
        raise TunerError(f"Inception weights could not be downloaded or read ({type(e).__name__}); pass "
                         "--inception-weights PATH") from None


class InceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3 (the network of the original FID code) from a local weights file.

    Without a file, torch-fidelity downloads and caches its own when the machine is online; offline that
    is a one-line error saying what to pass."""

    def __init__(self, weights_path: str | Path | None, allow_download: bool = False):
        super().__init__()
        if not weights_path and allow_download:
            weights_path = cached_inception_weights()  # downloaded earlier: no network needed
        if not weights_path:
            if not allow_download:
                raise TunerError("Inception FID asked for but no weights file given (--inception-weights PATH)")
            from tuner.models.source import is_online

            if not is_online("github.com"):
                raise TunerError("Inception FID needs torch-fidelity's weights and the machine is offline: pass "
                                 "[evaluator] inception_weights = PATH (or --inception-weights) to "
                                 "weights-inception-2015-12-05-6726825d.pth")
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

        from tuner.weights import as_buffer, load_tensors

        if weights_path:  # read as plain tensors here: torch-fidelity's own torch.load would unpickle code
            state = load_tensors(weights_path, "Inception weights")
        else:
            state = _download_tensors(URL_INCEPTION_V3)
        try:  # torch-fidelity reads the verified tensors back from memory, never the user's file
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                   feature_extractor_weights_path=as_buffer(state))
        except Exception as e:
            where = weights_path or "torch-fidelity's download"
            raise TunerError(f"Inception weights at {where} could not be loaded: {type(e).__name__}") from None
        self.net.eval()
        self.num_features = 2048

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features on the CPU, computed on the device the network is on (ScoringContext moves it to the
        model's)."""
        if images.dtype != torch.uint8:
            images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        device = next(self.net.parameters()).device
        return self.net(images.to(device))[0].reshape(len(images), -1).cpu()
