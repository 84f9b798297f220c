"""Gradient checking: hand-written backwards against central finite differences.

``gradcheck(fn, *inputs)`` works on float64 copies of the inputs (on their own device), draws a seeded
random upstream gradient v, and compares the analytic gradient of  L(x) = sum(v * fn(x))  with

    dL/dx_i  ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)                      (``mode="full"``)
    <dL/dx, u> ~ (L(x + eps u) - L(x - eps u)) / (2 eps)  for random unit u      (``mode="fast"``)

passing when |analytic - numeric| <= atol + rtol * |numeric|. A random v (never a plain sum) is what
exposes softmax and normalisation bugs: their gradients along the all-ones direction are often zero.
It also checks that a second backward gives the same gradients, that a zero upstream gives zero
gradients, and the shape and dtype of every gradient.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """Raised when hand-written gradients disagree with finite differences (or fail a sanity check)."""


def _differentiable(x) -> bool:
    if isinstance(x, Tensor):
        return x.requires_grad
    return backend.is_array(x) and np.issubdtype(x.dtype, np.floating)


def _float64_copy(a):
    xp = backend.get_array_module(a)
    return xp.array(a, dtype=np.float64, copy=True, order="C")


def gradcheck(fn, *inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              mode: str = "auto", max_full: int = 400, n_directions: int = 3, seed: int = 0,
              check_reentrant: bool = True) -> bool:
    """Check the gradients of ``fn(*inputs)`` against finite differences; True or ``GradcheckError``.

    Differentiated inputs: Tensors with ``requires_grad=True`` and raw floating-point arrays. Other
    inputs (integer arrays, masks, Python values, Tensors without requires_grad) are passed unchanged,
    except that floating constants are also made float64. ``fn`` returns a Tensor or a tuple of Tensors.
    ``mode``: "full" (every element), "fast" (``n_directions`` random directions) or "auto" (full when
    the differentiated inputs have at most ``max_full`` elements in all).
    """
    # a stream of its own: seeded like the inputs' generator, the upstream v would equal an input
    rng = np.random.default_rng([seed, 7919])
    wrt = [i for i, x in enumerate(inputs) if _differentiable(x)]
    if not wrt:
        raise ValueError("gradcheck: no input to differentiate (give Tensors with requires_grad=True or float arrays)")
    base = []
    for x in inputs:
        data = x.data if isinstance(x, Tensor) else x
        if backend.is_array(data) and np.issubdtype(data.dtype, np.floating):
            data = _float64_copy(data)
        base.append(data)
    names = [f"input {i}" for i in range(len(inputs))]

    def make_inputs(arrays, grad=True):
        return [Tensor(a, requires_grad=grad and i in wrt, _copy=False) if i in wrt or isinstance(inputs[i], Tensor)
                else a for i, a in enumerate(arrays)]

    def outputs_of(out):
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o for o in outs if isinstance(o, Tensor)]

    # seeded random upstream gradients, one per output; zero where an output is not finite
    with no_grad():
        outs0 = outputs_of(fn(*make_inputs(base, grad=False)))
    vs = []
    for o in outs0:
        xp = backend.get_array_module(o.data)
        v = xp.asarray(rng.standard_normal(o.shape))
        vs.append(xp.where(xp.isfinite(o.data), v, 0.0))

    def loss(arrays) -> float:
        with no_grad():
            outs = outputs_of(fn(*make_inputs(arrays, grad=False)))
        total = 0.0
        for o, v in zip(outs, vs):
            xp = backend.get_array_module(o.data)
            finite = xp.isfinite(o.data)
            total += float((xp.where(finite, o.data, 0.0) * v).sum())  # sync point: fine in a check
        return total

    def analytic(upstream_scale=1.0):
        tensors = make_inputs([_float64_copy(b) if i in wrt else b for i, b in enumerate(base)])
        outs = outputs_of(fn(*tensors))
        if not outs or not any(o.requires_grad for o in outs):
            raise GradcheckError("gradcheck: fn's output does not depend on any differentiated input")
        root = None
        for o, v in zip(outs, vs):
            if not o.requires_grad:
                continue
            xp = backend.get_array_module(o.data)
            term = (o.masked_fill(~xp.isfinite(o.data), 0.0) * (v * upstream_scale)).sum()  # sum(v * out)
            root = term if root is None else root + term
        root.backward()
        grads = []
        for i in wrt:
            t = tensors[i]
            g = t.grad
            if g is None:
                g = backend.get_array_module(t.data).zeros(t.shape)
            if tuple(g.shape) != t.shape:
                raise GradcheckError(f"{names[i]}: gradient has shape {tuple(g.shape)}, input has {t.shape}")
            if g.dtype != t.dtype:
                raise GradcheckError(f"{names[i]}: gradient has dtype {g.dtype}, input has {t.dtype}")
            grads.append(g)
        return grads

    grads = analytic()
    host_grads = [backend.to_numpy(g) for g in grads]

    total = sum(int(base[i].size) for i in wrt)
    if mode == "auto":
        mode = "full" if total <= max_full else "fast"

    if mode == "full":
        for k, i in enumerate(wrt):
            flat = base[i].reshape(-1)  # a view: base copies are contiguous
            numeric = np.zeros(flat.size)
            for j in range(flat.size):
                old = float(flat[j])
                if not np.isfinite(old):
                    continue  # perturbing +-inf changes nothing: the numeric derivative is 0
                flat[j] = old + eps
                plus = loss(base)
                flat[j] = old - eps
                minus = loss(base)
                flat[j] = old
                numeric[j] = (plus - minus) / (2 * eps)
            _compare(host_grads[k].reshape(-1), numeric, atol, rtol, names[i], base[i].shape)
    elif mode == "fast":
        for d in range(n_directions):
            directions = []
            for i in wrt:
                xp = backend.get_array_module(base[i])
                u = rng.standard_normal(base[i].shape)
                u[~np.isfinite(backend.to_numpy(base[i]))] = 0.0
                directions.append(xp.asarray(u))
            norm = np.sqrt(sum(float((u * u).sum()) for u in directions))
            directions = [u / norm for u in directions]
            shifted = list(base)
            for sign, store in ((1, "plus"), (-1, "minus")):
                for k, i in enumerate(wrt):
                    shifted[i] = base[i] + sign * eps * directions[k]
                if store == "plus":
                    plus = loss(shifted)
                else:
                    minus = loss(shifted)
            numeric = (plus - minus) / (2 * eps)
            xpg = [backend.get_array_module(g) for g in grads]
            exact = sum(float((g * u).sum()) for g, u, _ in zip(grads, directions, xpg))
            _compare(np.array([exact]), np.array([numeric]), atol, rtol, f"random direction {d}", (1,))
    else:
        raise ValueError(f"gradcheck: mode must be 'auto', 'full' or 'fast', not {mode!r}")

    if check_reentrant:
        again = [backend.to_numpy(g) for g in analytic()]
        for k, i in enumerate(wrt):
            if not np.allclose(again[k], host_grads[k], rtol=1e-10, atol=1e-12, equal_nan=True):
                raise GradcheckError(f"{names[i]}: a second backward gave different gradients (not reentrant)")
    zero = analytic(upstream_scale=0.0)
    for k, i in enumerate(wrt):
        z = backend.to_numpy(zero[k])
        if np.any(z != 0):
            raise GradcheckError(f"{names[i]}: a zero upstream gradient gave a non-zero gradient "
                                 f"(max |g| = {np.abs(z).max():.3g})")
    return True


def _compare(analytic, numeric, atol, rtol, name, shape):
    err = np.abs(analytic - numeric)
    bad = ~(err <= atol + rtol * np.abs(numeric))  # NaN counts as bad
    if bad.any():
        score = np.where(np.isnan(err), np.inf, err - rtol * np.abs(numeric))
        j = int(np.argmax(score))
        index = np.unravel_index(j, shape) if len(shape) else ()
        raise GradcheckError(
            f"gradcheck failed for {name} at index {tuple(int(i) for i in index)}: "
            f"analytic {analytic[j]:.8g}, numeric {numeric[j]:.8g} "
            f"(|diff| {err[j]:.3g} > atol {atol:g} + rtol {rtol:g} * |numeric|; {int(bad.sum())} of {bad.size} bad)"
        )
