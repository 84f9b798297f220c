"""The tuned ops: the same Functions as the teaching files in ``tinyw2v2/ops/``, computed faster.

One file per op family, each Function named like the reference it replaces and computing the same values (see
``tinyw2v2.ops.dispatch`` and ``tests/test_fast_ops.py``); ``optim.py`` holds the fused optimiser step that
``tinyw2v2.optim.Adam`` hands its work to on a device. This is where device-specific kernels go too, so that
no teaching file needs a branch per device. Why each trick pays: docs/performance.md.

``TUNING`` holds the knobs that choose between code paths inside the tuned ops (cache-block sizes, GEMM
layouts, when a softmax may skip its max-shift). Their defaults were measured on the CPU; tests set them with
``tuning(...)`` to run every path on small inputs::

    from tinyw2v2.ops import fast
    with fast.tuning(conv_layout="batch_major", conv_chunk_elements=1):
        y = F.conv1d(x, w)              # the batch-major GEMM layout, one kernel tap per chunk
"""
from .tuning import TUNING, Tuning, tuning  # noqa: F401

# each module registers its tuned ops with the dispatch
from . import activation, attention, contrastive, conv, cross_entropy, ctc, norm, softmax  # noqa: E402,F401
