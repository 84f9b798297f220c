"""The autograd engine: ``Tensor``, ``Function``, ``no_grad`` and the backward pass.

A ``Tensor`` wraps a raw array (NumPy, CuPy or emulated device) in ``.data``. Calling a ``Function``
on tensors runs its ``forward`` on the raw arrays and, when a gradient is needed, records the function
as the output's creator (``_ctx``). ``Tensor.backward`` then walks that graph in reverse topological
order (iteratively: no recursion limit), calls each ``Function.backward`` on raw arrays, reduces every
gradient to its input's shape in one place (``unbroadcast``), accumulates into leaves and frees what
each node saved as soon as it is used.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from . import backend

float32 = np.float32
float64 = np.float64
DEFAULT_DTYPE = np.float32

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    previous = is_grad_enabled()
    _state.grad_enabled = enabled
    try:
        yield
    finally:
        _state.grad_enabled = previous


def no_grad():
    """Context manager: functions called inside record no graph and save nothing for backward."""
    return _grad_mode(False)


def enable_grad():
    return _grad_mode(True)


# ----------------------------------------------------------------------------------------------
# Function


class Function:
    """Base class of every differentiable operation.

    Subclasses implement
        ``forward(self, *arrays, **params) -> array``: works on raw arrays, stores what backward needs
            with ``self.save_for_backward(...)`` (a no-op when no gradient is needed) or as attributes;
            it may return ``(output, *metrics)``: ``apply`` then returns ``(Tensor, *metric Tensors)``, the
            metrics (an accuracy, a count) computed on the way and not differentiated;
        ``backward(self, grad) -> gradient or tuple of gradients``: raw arrays, one per input (``None``
            where ``self.needs_input_grad[i]`` is False). Gradients may be broadcast: the engine reduces them.
    Call through ``MyFunction.apply(*inputs, **params)``. ``recording`` is True when a backward will follow (some
    input needs a gradient): ``apply`` sets it, and a forward keeps what backward needs only then. To run forward
    and backward by hand on arrays, set ``needs_input_grad`` and ``recording`` on an instance first.
    """

    needs_input_grad: tuple = ()
    recording: bool = False
    inputs: tuple | None = None
    saved_tensors: tuple = ()

    def save_for_backward(self, *arrays) -> None:
        if self.recording:
            self.saved_tensors = arrays

    @classmethod
    def apply(cls, *inputs, **params) -> "Tensor":
        """Run ``forward`` on the inputs' arrays and record the graph. An input may be ``None`` (an absent weight
        or bias): forward receives ``None`` there and backward returns ``None`` for it."""
        arrays = [t.data if isinstance(t, Tensor) else t for t in inputs]
        backend.check_same_device([a for a in arrays if a is not None], cls.__name__)
        ref = next((a for a in arrays if backend.is_array(a) and np.issubdtype(a.dtype, np.floating)),
                   next((a for a in arrays if backend.is_array(a)), None))
        tensors = tuple(t if t is None or isinstance(t, Tensor) else _constant(t, ref) for t in inputs)
        fn = cls()
        grad_enabled = is_grad_enabled()
        fn.needs_input_grad = tuple(grad_enabled and t is not None and t.requires_grad for t in tensors)
        fn.recording = any(fn.needs_input_grad)
        out = fn.forward(*(None if t is None else t.data for t in tensors), **params)
        aux = ()
        if isinstance(out, tuple):  # (output, *metrics): the metrics are returned too, without gradient
            out, aux = out[0], tuple(Tensor(_array(a), _copy=False) for a in out[1:])
        result = Tensor(_array(out), requires_grad=fn.recording, _copy=False)
        if fn.recording:
            fn.inputs = tensors
            result._ctx = fn
        return (result, *aux) if aux else result

    def forward(self, *arrays, **params):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def __repr__(self):
        return f"<{type(self).__name__}>"


def _array(a):
    """NumPy reductions return scalars: keep 0-d arrays."""
    return np.asarray(a) if isinstance(a, np.generic) else a


def _constant(value, ref) -> "Tensor":
    """A non-Tensor input: arrays are kept as they are, Python scalars become 0-d arrays like ``ref``."""
    if backend.is_array(value):
        return Tensor(value, _copy=False)
    xp = backend.get_array_module(ref) if ref is not None else np
    dtype = ref.dtype if ref is not None and np.issubdtype(ref.dtype, np.floating) else DEFAULT_DTYPE
    return Tensor(xp.asarray(value, dtype=dtype), _copy=False)


def unbroadcast(grad, shape: tuple):
    """Sum ``grad`` down to ``shape``: over extra leading axes, then over axes that were 1 in ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


# ----------------------------------------------------------------------------------------------
# Tensor


class Tensor:
    """An array with an optional gradient.

    ``Tensor(data, requires_grad=False, dtype=None, device=None)``: floating-point data (Python numbers,
    lists, NumPy float arrays) becomes float32 unless ``dtype`` is given (``dtype=tinyw2v2.float64`` for
    checks); integer and boolean data keep their type. ``device`` is 'cpu', 'cuda' or 'emulated'.
    """

    __array_priority__ = 10000  # so that ``ndarray + Tensor`` calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None, _copy: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        if _copy:
            if not backend.is_array(data):
                data = np.asarray(data)
            if dtype is None and np.issubdtype(data.dtype, np.floating):
                dtype = DEFAULT_DTYPE
            if dtype is not None and data.dtype != dtype:
                data = data.astype(dtype)
            if device is not None:
                data = backend.to_device(data, device)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx: Function | None = None
        self._retain_grad = False
        if self.requires_grad and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"only floating-point tensors can require gradients, got {self.data.dtype}")

    # --- basic properties -------------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: int(self.data.size))
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)
    xp = property(lambda self: backend.get_array_module(self.data))

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device='{self.device}'{grad})"

    # --- conversion ---------------------------------------------------------------------------------
    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data, _copy=False)

    def numpy(self) -> np.ndarray:
        """Explicit copy to a host NumPy array (a sync point on a GPU)."""
        return backend.to_numpy(self.data)

    def item(self) -> float:
        """The value of a one-element tensor as a Python number (a sync point on a GPU)."""
        return self.data.item()

    def __float__(self):
        return float(self.item())

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this non-leaf tensor after backward (for inspecting intermediate gradients)."""
        self._retain_grad = True
        return self

    def zero_grad(self) -> None:
        self.grad = None

    # --- backward ----------------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · grad into every leaf's ``.grad``.

        ``grad`` defaults to 1 for a one-element tensor. The graph's saved arrays are freed as each node
        is used, unless ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (was it made under no_grad?)")
        xp = self.xp
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() needs an explicit grad for a tensor of shape {self.shape}")
            grad = xp.ones(self.data.shape, dtype=self.dtype)
        elif isinstance(grad, Tensor):
            grad = grad.data
        elif not backend.is_array(grad):
            grad = xp.asarray(grad, dtype=self.dtype)
        if tuple(grad.shape) != self.shape:
            raise ValueError(f"grad has shape {tuple(grad.shape)}, expected {self.shape}")
        backend.check_same_device([self.data, grad], "backward")

        order = self._topological_order()
        grads = {id(self): grad}
        handed_out = {id(grad)}        # arrays a leaf already holds as its .grad (or the caller's): never share them
        for node in order:
            g = grads.pop(id(node), None)
            if node._ctx is None:
                if g is not None:
                    node.grad = g if node.grad is None else node.grad + g
                continue
            if node._retain_grad and g is not None:
                node.grad = g if node.grad is None else node.grad + g
            fn = node._ctx
            if fn.inputs is None:
                raise RuntimeError(
                    "backward through a graph a second time: its saved arrays were freed; "
                    "call backward(retain_graph=True) the first time"
                )
            if g is None:
                continue
            input_grads = fn.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(fn.inputs):
                raise RuntimeError(f"{fn!r}.backward returned {len(input_grads)} gradients for {len(fn.inputs)} inputs")
            for inp, needs, gi in zip(fn.inputs, fn.needs_input_grad, input_grads):
                if not needs or gi is None:
                    continue
                gi = _fit_gradient(fn, inp, gi)
                key = id(inp)
                if inp._ctx is None:  # leaf: accumulate right away
                    if inp.grad is None:
                        inp.grad = gi = _own(gi, handed_out)
                        handed_out.add(id(gi))
                    else:
                        inp.grad = inp.grad + gi
                else:
                    grads[key] = gi if key not in grads else grads[key] + gi
            if not retain_graph:
                fn.saved_tensors = ()
                fn.inputs = None
                for attr in getattr(fn, "_free", ()):
                    setattr(fn, attr, None)

    def _topological_order(self) -> list:
        """Non-leaf nodes reachable from self, outputs before inputs (explicit-stack DFS)."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            fn = node._ctx
            if fn is not None and fn.inputs is not None:
                for inp, needs in zip(fn.inputs, fn.needs_input_grad):
                    if needs and id(inp) not in visited and inp._ctx is not None:
                        stack.append((inp, False))
        order.reverse()
        return order

    # The operators and the methods that compute (x + y, x @ w, x[i], x.sum(), x.reshape(...), x.to(dtype), ...)
    # are attached by tinyw2v2/ops/methods.py, one line each onto the op that computes them.


def _own(g, handed_out: set):
    """``g`` itself, or a copy when another leaf (or the caller) holds the same array or it is a read-only view (a
    broadcast upstream), so that every leaf's ``.grad`` is its own writable array."""
    writeable = getattr(getattr(g, "flags", None), "writeable", True)
    return g.copy() if id(g) in handed_out or not writeable else g


def _fit_gradient(fn, inp: Tensor, g):
    """Reduce a (possibly broadcast) gradient to the input's shape and dtype; check it."""
    if isinstance(g, np.generic):
        g = np.asarray(g)
    g = unbroadcast(g, inp.shape)
    if tuple(g.shape) != inp.shape:
        raise RuntimeError(
            f"{fn!r}.backward returned a gradient of shape {tuple(g.shape)} for an input of shape {inp.shape}"
        )
    if g.dtype != inp.dtype:
        g = g.astype(inp.dtype)
    return g


def tensor(data, requires_grad=False, dtype=None, device=None) -> Tensor:
    """Make a Tensor (see ``Tensor``)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)
