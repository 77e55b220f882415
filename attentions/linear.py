"""Linear Transformer: normalised linear attention with the elu + 1 feature map.

    phi(x) = elu(x) + 1
    out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j) + eps)     (real keys j)

Paper: Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive Transformers with Linear
Attention", ICML 2020 ("LinearTrans" in the LRA and PolaFormer tables). impl=reference writes
the same output with the N x N matrix A_ij = phi(q_i) . phi(k_j) (the reference form, for tests).
On CUDA the linear form runs as fused Triton kernels with the feature map inside
(attentions/fused_linear.py: 2 launches forward, 2 backward, instead of ~20 torch ops each way);
`info()` says which path the layer runs, {"kernel": "triton"} or {"kernel": "torch"}.

Options:
    impl ("auto" | "fused" | "fast" | "reference", "auto"): auto = the fused Triton kernels when
        the tensors are on CUDA and triton is installed (float64 excepted), else the torch linear
        form; fused = the kernels, or an error where they cannot run (on the CPU they run only under
        TRITON_INTERPRET=1, for tests); fast = the torch linear form; reference = the quadratic form.
    eps (float, 1e-6): added to the denominator (the authors' value).

Cost: O(N d^2) time, O(N d + d^2) memory.
"""

from __future__ import annotations


import torch.nn.functional as F

from attentions.base import AttentionBase, LinearFormOptions, linear_attention, quadratic_linear_attention
from attentions.fused_linear import fused_linear_attention, kernel_info, use_fused
from attentions.registry import register


def elu_feature(x):
    return F.elu(x) + 1


@register("linear", complexity="O(N d^2) time, O(N d) memory")
class LinearAttention(AttentionBase):
    """Linear Transformer (Katharopoulos et al., 2020): elu + 1 features, normalised linear attention."""

    linear_memory = True

    Options = LinearFormOptions

    def core(self, q, k, v, mask):
        if use_fused(self.options.impl, q):
            return fused_linear_attention(q, k, v, mask, self.options.eps)
        phi_q, phi_k = elu_feature(q), elu_feature(k)
        if self.options.impl == "reference":
            return quadratic_linear_attention(phi_q, phi_k, v, mask, self.options.eps)[0]
        return linear_attention(phi_q, phi_k, v, mask, self.options.eps)

    def info(self) -> dict:
        return kernel_info(self.options.impl, self)
