"""Gradient checks of conv1d and weight_norm: strides, dilation, groups, odd lengths, a batch of 1, one input
channel, transposed (non-contiguous) inputs, the positional convolution's even kernel with "SamePad" (drop the
last output frame), and the paths that large sizes take (batch-major GEMMs, taps in chunks), forced on."""
from .. import ops
from ..ops import fast
from ..ops.conv import conv1d, weight_norm
from . import Case


def n(*shape):
    return lambda rng: rng.standard_normal(shape)


def inputs(*shapes):
    return lambda rng: tuple(rng.standard_normal(s) for s in shapes)


def T(x):
    """Swap the last two axes: a non-contiguous view."""
    return ops.swapaxes(x, -1, -2)


def same_pad(y):
    """wav2vec 2.0's SamePad for an even kernel: drop the last output frame."""
    return ops.getitem(y, (slice(None), slice(None), slice(None, -1)))


def forced(x, w, b, batch_major=False, min_reduction=None, **kw):
    """conv1d with its large-size code paths forced on at the small sizes of a check (the tuned Conv1d's backward
    takes the paths of its forward): ``batch_major`` the batch-major GEMMs (NumPy), ``min_reduction=m`` the taps
    in chunks of ceil(m / Cg). The reference Conv1d has no such paths."""
    knobs = dict(conv_layout="batch_major") if batch_major else {}
    if min_reduction is not None:
        knobs.update(conv_chunk_elements=1, conv_min_reduction=min_reduction)
    with fast.tuning(**knobs):
        return conv1d(x, w, b, **kw)


CASES = []


def add(op, shapes, fn, make, **options):
    CASES.append(Case(op, shapes, fn, make, "conv", options))


add("conv1d", "(2,4,11)*(6,2,3) s=2 p=1 d=2 g=2 +bias",
    lambda x, w, b: conv1d(x, w, b, stride=2, padding=1, dilation=2, groups=2), inputs((2, 4, 11), (6, 2, 3), (6,)))
add("conv1d", "(1,1,23)*(4,1,10) s=5 (layer 0: batch 1, C_in 1)",
    lambda x, w: conv1d(x, w, stride=5), inputs((1, 1, 23), (4, 1, 10)))
add("conv1d", "(2,3,9)*(5,3,3) s=2 (layers 1-4)", lambda x, w: conv1d(x, w, stride=2), inputs((2, 3, 9), (5, 3, 3)))
add("conv1d", "(2,3,8)*(4,3,2) s=2 (layers 5-6)", lambda x, w: conv1d(x, w, stride=2), inputs((2, 3, 8), (4, 3, 2)))
add("conv1d", "T(2,9,3)*(4,3,3) transposed input, p=1",
    lambda x, w, b: conv1d(T(x), w, b, padding=1), inputs((2, 9, 3), (4, 3, 3), (4,)))
add("conv1d", "(2,4,7)*(4,2,4) p=2 g=2 +bias, SamePad drops last",
    lambda x, w, b: same_pad(conv1d(x, w, b, padding=2, groups=2)), inputs((2, 4, 7), (4, 2, 4), (4,)))
add("conv1d", "(1,6,5)*(6,2,6) p=3 g=3 K>T, SamePad",
    lambda x, w, b: same_pad(conv1d(x, w, b, padding=3, groups=3)), inputs((1, 6, 5), (6, 2, 6), (6,)))
add("conv1d", "(2,3,5)*(4,3,2) p=3 > kernel span", lambda x, w, b: conv1d(x, w, b, padding=3),
    inputs((2, 3, 5), (4, 3, 2), (4,)))
add("conv1d", "(2,3,10)*(2,3,3) 'same' d=2", lambda x, w: conv1d(x, w, padding="same", dilation=2),
    inputs((2, 3, 10), (2, 3, 3)))
add("conv1d", "(3,4,13)*(4,2,3) s=2 g=2 batch-major GEMMs", lambda x, w, b: forced(x, w, b, True, stride=2, groups=2),
    inputs((3, 4, 13), (4, 2, 3), (4,)))
add("conv1d", "(2,2,9)*(3,2,2) s=2 d=3 batch-major, CgK>T'",
    lambda x, w, b: forced(x, w, b, True, stride=2, dilation=3), inputs((2, 2, 9), (3, 2, 2), (3,)))
add("conv1d", "(2,4,6)*(4,2,5) p=2 g=2 taps in chunks 2+2+1, SamePad",
    lambda x, w, b: same_pad(forced(x, w, b, min_reduction=4, padding=2, groups=2)), inputs((2, 4, 6), (4, 2, 5), (4,)))
add("conv1d", "(2,3,11)*(4,3,3) s=2 d=2 one chunk per tap, batch-major",
    lambda x, w, b: forced(x, w, b, True, 1, stride=2, dilation=2), inputs((2, 3, 11), (4, 3, 3), (4,)))

add("weight_norm", "v(4,3,5) g(1,1,5) dim=2", lambda v, g: weight_norm(v, g, 2), inputs((4, 3, 5), (1, 1, 5)))
add("weight_norm", "v(5,3,2) g(5,1,1) dim=0", lambda v, g: weight_norm(v, g, 0), inputs((5, 3, 2), (5, 1, 1)))
add("weight_norm", "v(3,4) g() dim=-1 whole tensor", lambda v, g: weight_norm(v, g, -1), inputs((3, 4), ()))
add("weight_norm", "T(2,5,3) g(1,1,5) dim=2 transposed", lambda v, g: weight_norm(T(v), g, 2),
    inputs((2, 5, 3), (1, 1, 5)))
add("weight_norm", "v(4,2,6) g(6,) dim=2 flat g", lambda v, g: weight_norm(v, g, 2), inputs((4, 2, 6), (6,)))
add("weight_norm", "pos conv: conv1d(x, wn(v,g,2), b) p=2 g=2 SamePad",
    lambda x, v, g, b: same_pad(conv1d(x, weight_norm(v, g, 2), b, padding=2, groups=2)),
    inputs((2, 4, 5), (4, 2, 4), (1, 1, 4), (4,)))
