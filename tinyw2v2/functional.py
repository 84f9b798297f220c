"""``tinyw2v2.functional``: the differentiable building blocks, named like ``torch.nn.functional``.

    import tinyw2v2.functional as F
    y = F.conv1d(x, w, stride=5)

Each function is one ``Function`` with a hand-written backward; the derivations are in ``docs/``.
"""
from .ops.softmax import log_softmax, logsumexp, softmax  # noqa: F401
from .ops import pad, sigmoid, tanh  # noqa: F401

# --- the building blocks: each line imports one op family's public functions -------------------
from .ops.quantize import codevector_lookup, gumbel_noise, gumbel_softmax  # noqa: F401
from .ops.contrastive import (codevector_perplexity, contrastive_logits, contrastive_loss,  # noqa: F401
                              cosine_similarity, diversity_loss, feature_penalty, grad_scale)
from .ops.norm import group_norm, layer_norm  # noqa: F401,E402
from .ops.activation import dropout, dropout_mask, gelu, linear  # noqa: F401,E402
from .ops.conv import conv1d, weight_norm  # noqa: F401,E402
from .ops.attention import scaled_dot_product_attention  # noqa: F401,E402
from .ops.cross_entropy import cross_entropy  # noqa: F401,E402
from .ops.ctc import ctc_loss, ctc_posteriors  # noqa: F401,E402
