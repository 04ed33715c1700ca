"""Token merging, tensor math only (no hooks, no state): bipartite soft matching over sx×sy stride cells.

A matching produces a `MergePlan`: for every image b and token n, `assign[b, n]` is the slot of the merged
sequence that token n goes to. Kept tokens (every dst and every unmerged src) get their own slot, in their
original order; a merged src shares the slot of its dst. Then

    merge(x)   = per-slot mean of the tokens assigned to it   (scatter_add / count)
    unmerge(y) = y gathered back at `assign`                   (every token reads its slot)

which is ToMe's "mean merge, copy back" for both the fixed-ratio matching (ToMe: the r most similar src of
every image) and the threshold matching (CA-ToMe: every src whose best cosine similarity is >= t).

Per-image merge counts: with a threshold, images of one batch keep different numbers of tokens. All images
are padded to the largest kept count M of the batch (so an image never merges a pair below t, unlike the
public CA-ToMe code, which forces the batch-maximum merge count on every image); the padded slots hold
zeros and `key_mask` (additive, [B, 1, M]) hides them as keys of self-attention. Padded queries compute
values that no token reads back, and per-token layers (cross-attention, MLP) need no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MergePlan:
    assign: torch.Tensor  # [B, N] int64: slot of each token in the merged sequence
    counts: torch.Tensor  # [B, M, 1] float32: tokens per slot, padding slots clamped to 1 (they hold zeros)
    num_slots: int  # M: merged sequence length (largest kept count in the batch)
    key_mask: torch.Tensor | None  # [B, 1, M] float32 additive mask of padding slots; None if none padded
    partner: torch.Tensor  # [B, N] int64: dst token of each merged src, -1 for kept tokens
    n_merged: torch.Tensor  # [B] int64: tokens merged away per image

    @property
    def batch_size(self) -> int:
        return self.assign.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.assign.shape[1]

    def pairs(self, b: int) -> torch.Tensor:
        """Merged (src, dst) token pairs of image b, as an [P, 2] int64 tensor sorted by src."""
        src = (self.partner[b] >= 0).nonzero().flatten()
        return torch.stack([src, self.partner[b, src]], dim=1)


def merge(x: torch.Tensor, plan: MergePlan) -> torch.Tensor:
    """[B, N, C] -> [B, M, C]: mean of the tokens of every slot."""
    B, _, C = x.shape
    index = plan.assign.unsqueeze(-1).expand(-1, -1, C)
    summed = x.new_zeros(B, plan.num_slots, C).scatter_add_(1, index, x)
    return summed / plan.counts.to(x.dtype)


def unmerge(y: torch.Tensor, plan: MergePlan) -> torch.Tensor:
    """[B, M, C] -> [B, N, C]: every token takes the value of its slot (merged src copy their dst)."""
    return y.gather(1, plan.assign.unsqueeze(-1).expand(-1, -1, y.shape[-1]))


# --- choosing dst tokens -------------------------------------------------------------------------------
def dst_token_mask(h: int, w: int, sx: int, sy: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """[h*w] bool, True for dst tokens: one per complete sy×sx cell, at its top-left corner, or at a random
    position drawn from `generator` (always a CPU generator, so the draw is the same on every device).
    Tokens outside complete cells (h or w not divisible by the stride) are src, as in tomesd."""
    hc, wc = h // sy, w // sx
    if generator is None:
        offset = torch.zeros(hc, wc, dtype=torch.long)
    else:
        offset = torch.randint(sy * sx, (hc, wc), generator=generator, device=generator.device).cpu()
    rows = torch.arange(hc).unsqueeze(1) * sy + offset // sx
    cols = torch.arange(wc).unsqueeze(0) * sx + offset % sx
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[rows.flatten(), cols.flatten()] = True
    return mask.flatten().to(device)


def best_dst(metric: torch.Tensor, src_tok: torch.Tensor, dst_tok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of every src to its most similar dst: (similarity [B, Ns], dst index [B, Ns] into
    `dst_tok`). Similarity is clamped to <= 1 so a threshold above 1 can never merge."""
    with torch.no_grad():
        m = metric / metric.norm(dim=-1, keepdim=True)
        scores = m[:, src_tok] @ m[:, dst_tok].transpose(-1, -2)
        sim, idx = scores.max(dim=-1)
    return sim.clamp(max=1.0), idx


def plan_from_selection(selected: torch.Tensor, best_idx: torch.Tensor, src_tok: torch.Tensor,
                        dst_tok: torch.Tensor, num_tokens: int) -> MergePlan | None:
    """Build the index tensors once for a [B, Ns] bool selection of src to merge into their best dst.
    Returns None when no image merges anything (the caller then leaves the tensors untouched)."""
    if not bool(selected.any()):
        return None
    B, dev = selected.shape[0], selected.device
    keep = torch.ones(B, num_tokens, dtype=torch.bool, device=dev)
    keep[:, src_tok] = ~selected
    partner = torch.full((B, num_tokens), -1, dtype=torch.long, device=dev)
    partner[:, src_tok] = torch.where(selected, dst_tok[best_idx], -1)
    slot = keep.long().cumsum(1) - 1  # slot of every kept token, original order
    assign = torch.where(keep, slot, slot.gather(1, partner.clamp(min=0)))
    kept = keep.sum(1)
    num_slots = int(kept.max())
    counts = torch.zeros(B, num_slots, device=dev).scatter_add_(1, assign, torch.ones(B, num_tokens, device=dev))
    key_mask = None
    if int(kept.min()) < num_slots:
        padded = torch.arange(num_slots, device=dev).unsqueeze(0) >= kept.unsqueeze(1)
        key_mask = torch.zeros(B, 1, num_slots, device=dev).masked_fill_(padded.unsqueeze(1), torch.finfo(torch.float32).min)
    return MergePlan(assign, counts.clamp_(min=1).unsqueeze(-1), num_slots, key_mask, partner,
                     num_tokens - kept)


def _split(num_tokens: int, h: int, w: int, sx: int, sy: int, generator, device):
    if h * w != num_tokens:
        raise ValueError(f"{num_tokens} tokens do not form a {h}x{w} grid")
    dst = dst_token_mask(h, w, sx, sy, generator, device)
    return (~dst).nonzero().flatten(), dst.nonzero().flatten()


def match_ratio(metric: torch.Tensor, h: int, w: int, sx: int = 2, sy: int = 2, ratio: float = 0.5,
                generator: torch.Generator | None = None) -> MergePlan | None:
    """ToMe: every image merges its r = int(N * ratio) most similar src (capped at the number of src)."""
    B, N, _ = metric.shape
    r = int(N * ratio)
    if r <= 0:
        return None
    src_tok, dst_tok = _split(N, h, w, sx, sy, generator, metric.device)
    r = min(r, len(src_tok))
    if r <= 0:
        return None
    sim, idx = best_dst(metric, src_tok, dst_tok)
    chosen = sim.topk(r, dim=-1).indices
    selected = torch.zeros_like(sim, dtype=torch.bool).scatter_(1, chosen, True)
    return plan_from_selection(selected, idx, src_tok, dst_tok, N)


def match_threshold(metric: torch.Tensor, h: int, w: int, sx: int = 2, sy: int = 2,
                    threshold: float = 0.7) -> MergePlan | None:
    """CA-ToMe: each image merges exactly its own src whose best cosine similarity is >= threshold
    (top-left dst in every cell). Counts differ per image; see the module docstring for the padding."""
    B, N, _ = metric.shape
    src_tok, dst_tok = _split(N, h, w, sx, sy, None, metric.device)
    if len(src_tok) == 0 or threshold > 1.0:
        return None
    sim, idx = best_dst(metric, src_tok, dst_tok)
    return plan_from_selection(sim >= threshold, idx, src_tok, dst_tok, N)
