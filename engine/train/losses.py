"""Losses of CUT / FastCUT: least-squares GAN and PatchNCE.

Papers:
- T. Park, A. A. Efros, R. Zhang, J.-Y. Zhu, "Contrastive Learning for Unpaired Image-to-Image Translation",
  ECCV 2020 (PatchNCE, eq. 2-5).
- X. Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017 (the GAN objective CUT uses).

PatchNCE, for one layer and one image, with P sampled positions: q_i is the (unit-length, projected) feature of
the translated image at position i, k_j that of the input image at position j. The positive of q_i is k_i, its
negatives are k_j for the other positions j != i of the *same* image. With temperature τ,

    loss_i = -log( exp(q_i·k_i / τ) / (exp(q_i·k_i / τ) + Σ_{j≠i} exp(q_i·k_j / τ)) )

i.e. cross-entropy over the logits [q_i·k_i, q_i·k_j (j≠i)] / τ with the positive as class 0. Keys are detached
(gradients flow through q only). As in the official implementation the self-similarities q_i·k_i inside the
negative block are replaced by -10 before dividing by τ, which gives them weight exp(-10/τ) ≈ 6e-63: excluded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_FILL = -10.0


def lsgan_loss(pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Mean squared distance of the discriminator's scores to 1 (real) or 0 (fake), in float32."""
    pred = pred.float()
    target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
    return F.mse_loss(pred, target)


def patch_nce(q: torch.Tensor, k: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Per-patch PatchNCE loss. ``q``, ``k``: (N, P, D) unit vectors (row i of ``k`` is the positive of row i of
    ``q``; the other rows of the same image are its negatives). Returns (N, P) losses, float32."""
    if q.shape != k.shape or q.dim() != 3:
        raise ValueError(f"q and k must both be (N, P, D); got {tuple(q.shape)} and {tuple(k.shape)}")
    q = q.float()
    k = k.detach().float()
    n, p, _ = q.shape
    l_pos = (q * k).sum(-1, keepdim=True)                      # (N, P, 1)
    l_neg = torch.bmm(q, k.transpose(1, 2))                     # (N, P, P)
    eye = torch.eye(p, dtype=torch.bool, device=q.device)[None]
    l_neg = l_neg.masked_fill(eye, NEG_FILL)
    logits = torch.cat([l_pos, l_neg], dim=2) / tau             # (N, P, 1 + P)
    target = torch.zeros(n * p, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.reshape(n * p, p + 1), target, reduction="none").reshape(n, p)
