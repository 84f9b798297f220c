"""Operations that move values around without changing them: reshape, transpose, indexing,
concatenate, stack, pad. Each backward routes g back to where the values came from."""
from __future__ import annotations

from .. import backend
from ..backend import get_array_module
from ..tensor import Function, Tensor


class Reshape(Function):
    """y = x viewed with another shape;  dx = g reshaped back."""

    def forward(self, x, shape):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, g):
        return g.reshape(self.shape)


class Transpose(Function):
    """y = x with axes permuted;  dx = g with the inverse permutation."""

    def forward(self, x, axes=None):
        self.axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(a % x.ndim for a in axes)
        return x.transpose(self.axes)

    def backward(self, g):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return g.transpose(inverse)


def _is_advanced(index) -> bool:
    """True when an index uses integer arrays (which may repeat): then backward must scatter-add."""
    parts = index if isinstance(index, tuple) else (index,)
    for p in parts:
        if isinstance(p, list) or (backend.is_array(p) and p.dtype != bool):
            return True
    return False


class GetItem(Function):
    """y = x[index] (slices, integer arrays, boolean masks);  dx = zeros with g scatter-added at index."""

    def forward(self, x, index):
        self.index, self.shape, self.dtype = index, x.shape, x.dtype
        return x[index]

    def backward(self, g):
        xp = get_array_module(g)
        dx = xp.zeros(self.shape, dtype=self.dtype)
        if _is_advanced(self.index):
            backend.scatter_add(dx, self.index, g)  # repeated indices accumulate
        else:
            dx[self.index] = g  # slices and boolean masks never repeat a position
        return dx


class Concatenate(Function):
    """y = [x_1, ..., x_n] joined along ``axis``;  dx_i = the slice of g that x_i filled."""

    def forward(self, *xs, axis=0):
        self.axis = axis % xs[0].ndim
        self.sizes = [x.shape[self.axis] for x in xs]
        return get_array_module(*xs).concatenate(xs, axis=self.axis)

    def backward(self, g):
        grads, start = [], 0
        for n, needs in zip(self.sizes, self.needs_input_grad):
            index = [slice(None)] * g.ndim
            index[self.axis] = slice(start, start + n)
            grads.append(g[tuple(index)] if needs else None)
            start += n
        return tuple(grads)


class Stack(Function):
    """y = x_1, ..., x_n stacked along a new ``axis``;  dx_i = g taken at position i of that axis."""

    def forward(self, *xs, axis=0):
        self.axis = axis % (xs[0].ndim + 1)
        return get_array_module(*xs).stack(xs, axis=self.axis)

    def backward(self, g):
        xp = get_array_module(g)
        return tuple(xp.take(g, i, axis=self.axis) if needs else None
                     for i, needs in enumerate(self.needs_input_grad))


class Pad(Function):
    """y = x padded with a constant; ``pad_width`` as in NumPy: ((before, after), ...) per axis;
    dx = the centre slice of g."""

    def forward(self, x, pad_width, value=0.0):
        self.slices = tuple(slice(b, b + n) for (b, _), n in zip(pad_width, x.shape))
        return get_array_module(x).pad(x, pad_width, mode="constant", constant_values=value)

    def backward(self, g):
        return g[self.slices]


def _data(index):
    """Tensors inside an index become their arrays (indices are never differentiated)."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(_data(i) for i in index)
    return index


def reshape(x, shape):
    return Reshape.apply(x, shape=tuple(shape) if not isinstance(shape, int) else (shape,))


def transpose(x, axes=None):
    return Transpose.apply(x, axes=axes)


permute = transpose


def swapaxes(x, a, b):
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return Transpose.apply(x, axes=tuple(axes))


def getitem(x, index):
    return GetItem.apply(x, index=_data(index))


def concatenate(xs, axis=0):
    return Concatenate.apply(*xs, axis=axis)


def stack(xs, axis=0):
    return Stack.apply(*xs, axis=axis)


def pad(x, pad_width, value=0.0):
    """Constant padding. ``pad_width``: an int, or one (before, after) pair per axis (NumPy's form)."""
    ndim = x.ndim
    if isinstance(pad_width, int):
        pad_width = ((pad_width, pad_width),) * ndim
    pad_width = tuple((int(b), int(a)) for b, a in pad_width)
    if len(pad_width) != ndim:
        raise ValueError(f"pad: {len(pad_width)} (before, after) pairs given for {ndim} axes")
    return Pad.apply(x, pad_width=pad_width, value=value)
