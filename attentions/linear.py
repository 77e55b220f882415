"""Linear Transformer: normalised linear attention with the elu + 1 feature map.

    phi(x) = elu(x) + 1
    out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j) + eps)     (real keys j)

Paper: Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive Transformers with Linear
Attention", ICML 2020 ("LinearTrans" in the LRA and PolaFormer tables). impl=reference writes
the same output with the N x N matrix A_ij = phi(q_i) . phi(k_j) (the reference form, for tests).

Options:
    impl ("fast" | "reference", "fast"): the linear form, or the quadratic reference form.
    eps (float, 1e-6): added to the denominator (the authors' value).

Cost: O(N d^2) time, O(N d + d^2) memory.
"""

from __future__ import annotations


import torch.nn.functional as F

from attentions.base import AttentionBase, LinearFormOptions, linear_attention, quadratic_linear_attention
from attentions.registry import register


def elu_feature(x):
    return F.elu(x) + 1


@register("linear", complexity="O(N d^2) time, O(N d) memory")
class LinearAttention(AttentionBase):
    """Linear Transformer (Katharopoulos et al., 2020): elu + 1 features, normalised linear attention."""

    linear_memory = True

    Options = LinearFormOptions

    def core(self, q, k, v, mask):
        phi_q, phi_k = elu_feature(q), elu_feature(k)
        if self.options.impl == "reference":
            return quadratic_linear_attention(phi_q, phi_k, v, mask, self.options.eps)[0]
        return linear_attention(phi_q, phi_k, v, mask, self.options.eps)
