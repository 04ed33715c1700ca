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
from functools import lru_cache

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
    # the slot count from a tensor's shape, not the int `num_slots`: torch.compile can then treat a changing
    # count (CA-ToMe) as a dynamic size instead of recompiling for every value
    summed = x.new_zeros(B, plan.counts.shape[1], C).scatter_add_(1, index, x)
    return summed / plan.counts.to(x.dtype)


def unmerge(y: torch.Tensor, plan: MergePlan) -> torch.Tensor:
    """[B, M, C] -> [B, N, C]: every token takes the value of its slot (merged src copy their dst)."""
    return y.gather(1, plan.assign.unsqueeze(-1).expand(-1, -1, y.shape[-1]))


# --- choosing dst tokens -------------------------------------------------------------------------------
# Planning runs before every merged block of every step, on small tensors at the proxy's 256 tokens, so
# its cost is mostly the number of tensor ops: the cell grid and the top-left split are cached, dst
# indices come from arithmetic on the cell corners, and the fixed-ratio plan has its own short builder.
@lru_cache(maxsize=64)
def _cell_corners(h: int, w: int, sx: int, sy: int) -> torch.Tensor:
    """[hc*wc] token index of the top-left corner of every complete sy×sx cell, ascending (CPU)."""
    rows = torch.arange(h // sy).unsqueeze(1) * (sy * w)
    return (rows + torch.arange(w // sx).unsqueeze(0) * sx).flatten()


def dst_tokens(h: int, w: int, sx: int, sy: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[hc*wc] ascending token index of the dst of every complete cell: its top-left corner, or a random
    position drawn from `generator` (one draw of shape (hc, wc) per call, tomesd's order). CPU tensor."""
    corners = _cell_corners(h, w, sx, sy)
    if generator is None:
        return corners
    offset = torch.randint(sy * sx, (h // sy, w // sx), generator=generator, device=generator.device)
    offset = offset.cpu().flatten()
    return corners + torch.div(offset, sx, rounding_mode="floor") * w + offset % sx


@lru_cache(maxsize=64)
def _top_left_split(h: int, w: int, sx: int, sy: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _src_of(dst_tokens(h, w, sx, sy), h * w, device)


def _src_of(dst: torch.Tensor, num_tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    is_src = torch.ones(num_tokens, dtype=torch.bool).scatter_(0, dst, False)
    return is_src.nonzero().flatten().to(device), dst.to(device)


def _split(num_tokens: int, h: int, w: int, sx: int, sy: int, generator, device):
    """(src token indices, dst token indices), both ascending, on `device`."""
    if h * w != num_tokens:
        raise ValueError(f"{num_tokens} tokens do not form a {h}x{w} grid")
    if generator is None:
        return _top_left_split(h, w, sx, sy, str(device))
    return _src_of(dst_tokens(h, w, sx, sy, generator), num_tokens, device)


def _best_dst_raw(metric: torch.Tensor, src_tok: torch.Tensor, dst_tok: torch.Tensor):
    with torch.no_grad():
        m = metric / metric.norm(dim=-1, keepdim=True)
        scores = m.index_select(1, src_tok) @ m.index_select(1, dst_tok).transpose(-1, -2)
        return scores.max(dim=-1)


def best_dst(metric: torch.Tensor, src_tok: torch.Tensor, dst_tok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of every src to its most similar dst: (similarity [B, Ns], dst index [B, Ns] into
    `dst_tok`). Similarity is clamped to <= 1 so a threshold above 1 can never merge."""
    sim, idx = _best_dst_raw(metric, src_tok, dst_tok)
    return sim.clamp(max=1.0), idx


def plan_from_selection(selected: torch.Tensor, best_idx: torch.Tensor, src_tok: torch.Tensor,
                        dst_tok: torch.Tensor, num_tokens: int) -> MergePlan | None:
    """Build the index tensors once for a [B, Ns] bool selection of src to merge into their best dst.
    Returns None when no image merges anything (the caller then leaves the tensors untouched)."""
    B, dev = selected.shape[0], selected.device
    kept_src = (~selected).sum(1)
    kept = kept_src + len(dst_tok)
    lo, hi = torch.aminmax(kept)
    lo, hi = int(lo), int(hi)
    if lo == num_tokens:
        return None
    keep = torch.ones(B, num_tokens, dtype=torch.bool, device=dev).index_copy_(1, src_tok, ~selected)
    partner = torch.full((B, num_tokens), -1, dtype=torch.long, device=dev).index_copy_(
        1, src_tok, torch.where(selected, dst_tok.take(best_idx), -1))
    slot = keep.cumsum(1) - 1  # slot of every kept token, original order
    assign = torch.where(keep, slot, slot.gather(1, partner.clamp(min=0)))
    counts = torch.zeros(B, hi, device=dev).scatter_add_(1, assign, torch.ones(B, num_tokens, device=dev))
    key_mask = None
    if lo < hi:
        padded = torch.arange(hi, device=dev).unsqueeze(0) >= kept.unsqueeze(1)
        key_mask = torch.zeros(B, 1, hi, device=dev).masked_fill_(padded.unsqueeze(1), torch.finfo(torch.float32).min)
    return MergePlan(assign, counts.clamp_(min=1).unsqueeze(-1), hi, key_mask, partner, num_tokens - kept)


def _plan_fixed_count(chosen: torch.Tensor, best_idx: torch.Tensor, src_tok: torch.Tensor, dst_tok: torch.Tensor,
                      num_tokens: int) -> MergePlan:
    """The same plan for `chosen` [B, r] (src positions to merge, r the same for every image): no padding,
    M = N - r slots, fewer ops than the general builder."""
    B, r = chosen.shape
    dev = chosen.device
    merged_tok = src_tok.take(chosen)  # [B, r] token ids
    partner_tok = dst_tok.take(best_idx.gather(1, chosen))  # [B, r] their dst
    keep = torch.ones(B, num_tokens, dtype=torch.bool, device=dev).scatter_(1, merged_tok, False)
    slot = keep.cumsum(1) - 1
    partner_slot = slot.gather(1, partner_tok)
    assign = slot.scatter_(1, merged_tok, partner_slot)
    counts = torch.ones(B, num_tokens - r, device=dev).scatter_add_(1, partner_slot, torch.ones(B, r, device=dev))
    partner = torch.full((B, num_tokens), -1, dtype=torch.long, device=dev).scatter_(1, merged_tok, partner_tok)
    return MergePlan(assign, counts.unsqueeze(-1), num_tokens - r, None, partner,
                     torch.full((B,), r, dtype=torch.long, device=dev))


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
    sim, idx = _best_dst_raw(metric, src_tok, dst_tok)  # unclamped, like tomesd's ranking
    return _plan_fixed_count(sim.topk(r, dim=-1).indices, idx, src_tok, dst_tok, N)


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
