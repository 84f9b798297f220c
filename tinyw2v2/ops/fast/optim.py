"""The fused Adam / AdamW step: every parameter in one flat buffer, one kernel for all of them.

``optim.Adam`` is the textbook step, one parameter at a time (docs/training.md). On a GPU its 90 parameter tensors
would cost 14 kernel launches each, so on a device (CuPy or emulated) ``Adam(fused=None)`` hands its clipping and
its step to ``FusedAdam``: ``FlatParameters`` makes every parameter (and its two moments) a view into one flat
buffer, ``norm_kernel`` takes the global gradient norm in one reduction, and ``adamw_kernel``
(``ops/fast/kernels.py``) applies the update, with the clipping coefficient, to every element at once. What
differs per parameter (its step count, hence bias corrections and step size; whether it has a gradient this step)
travels in a small (P, 4) coefficient array made on the host. The arithmetic is the per-tensor step's, in the same
order: without clipping the two are equal bit for bit (``tests/test_kernels.py``).
"""
from __future__ import annotations

import math

import numpy as np

from ... import backend
from .kernels import adamw_kernel, norm_kernel, use_fused


class FusedAdam:
    """The fused step of one ``optim.Adam`` (or ``AdamW``), which passes itself to every call.

    ``flat``: the ``FlatParameters``, made at the first fused call; ``clipped``: (ids of the gradients, flat
    gradient, norm, max_norm) from ``clip_grad_norm_``, which the next ``step`` scales by inside its kernel.
    """

    def __init__(self):
        self.flat = None
        self.clipped = None

    def applies(self, opt) -> bool:
        """``opt.fused`` None: fused on a device (CuPy or emulated) while ``TUNING.fused_kernels`` is on; True /
        False force it. All groups must share betas, eps and eps_mode, and all parameters one device and dtype."""
        params = opt.params
        if opt.fused is False or (opt.fused is None and not use_fused(params[0].data)):
            return False
        same = {(g["betas"], g["eps"], g["eps_mode"]) for g in opt.param_groups}
        kinds = {(backend.device_of(p.data), p.dtype) for p in params}
        if len(same) > 1 or len(kinds) > 1:
            if opt.fused:
                raise ValueError("fused=True needs one device and dtype for all parameters and the same betas, eps "
                                 "and eps_mode in every group")
            return False
        return True

    def _flat_parameters(self, opt) -> "FlatParameters":
        params = opt.params
        if self.flat is None or not self.flat.fits(params):
            self.flat = FlatParameters(params)         # the moments come back in through adopt(state)
        self.flat.adopt(opt.state)
        return self.flat

    def _flat_gradient(self, opt):
        """(ids of the gradients, flat gradient): every ``p.grad`` in one array (zeros where a gradient is None)."""
        flat = self._flat_parameters(opt)
        grads = [p.grad for p in opt.params]
        ids = tuple(id(g) for g in grads)
        if self.clipped is not None and self.clipped[0] == ids:
            return ids, self.clipped[1]
        return ids, flat.gather(grads)

    def clip_grad_norm_(self, opt, max_norm):
        """The global gradient norm (a 0-d device array, no sync); the gradients are not scaled here: the next
        ``step`` multiplies them by min(1, max_norm / (norm + 1e-6)) inside its kernel (so ``p.grad`` stays as
        backward left it)."""
        ids, g = self._flat_gradient(opt)
        xp = backend.get_array_module(g)
        norm = xp.empty(1, dtype=g.dtype)
        norm_kernel()(g, axis=0, out=norm)                # sqrt(sum g^2): one launch
        self.clipped = (ids, g, norm, float(max_norm) if max_norm else math.inf)
        return norm.reshape(())

    def step(self, opt) -> None:
        """One update of every parameter that has a gradient, in one kernel launch."""
        flat = self._flat_parameters(opt)
        ids, g = self._flat_gradient(opt)
        xp = backend.get_array_module(g)
        if self.clipped is not None and self.clipped[0] == ids:
            norm, max_norm = self.clipped[2], self.clipped[3]
        else:
            norm, max_norm = xp.zeros(1, dtype=g.dtype), math.inf   # no clip_grad_norm_ since backward
        self.clipped = None
        group0 = opt.param_groups[0]
        (beta1, beta2), eps, torch_eps = group0["betas"], group0["eps"], group0["eps_mode"] == "torch"
        coef = np.zeros((len(flat.params), 4), dtype=flat.dtype)     # per parameter, made on the host
        coef[:, 1:3] = 1                                             # (rows of parameters without a gradient)
        i = 0
        for group in opt.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is not None:
                    state = opt.state.get(p)
                    if state is None:
                        state = opt.state[p] = flat.state_of(i)
                    state["step"] += 1
                    t = state["step"]
                    bias1, bias2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
                    decay = (1.0 - lr * wd) if opt.decoupled else wd
                    if torch_eps:
                        coef[i] = (1, decay, math.sqrt(bias2), lr / bias1)
                    else:
                        coef[i] = (1, decay, 1, lr * math.sqrt(bias2) / bias1)
                i += 1
        adamw_kernel(opt.decoupled, torch_eps)(g, flat.segment, backend.to_device(coef, flat.device), norm,
                                               max_norm, beta1, beta2, eps, flat.w, flat.m, flat.v)
        opt.steps += 1


class FlatParameters:
    """Every parameter as a view into one flat array ``w`` (and its Adam moments into ``m`` and ``v``), so that one
    kernel updates them all. ``segment`` (int32, per element) numbers the parameter an element belongs to.

    A parameter whose ``.data`` was replaced (a ``load_state_dict``, a move) is copied back in and viewed again at
    the next step (``fits`` / the constructor); optimiser state loaded from a checkpoint, or held by an earlier flat
    buffer, is copied into the moments (``adopt``), so that exact resume holds.
    """

    def __init__(self, params):
        self.params = list(params)
        first = self.params[0].data
        xp = backend.get_array_module(first)
        self.device, self.dtype = backend.device_of(first), first.dtype
        sizes = [int(p.data.size) for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self.offsets[-1])
        self.w = xp.empty(total, dtype=self.dtype)
        self.m = xp.zeros(total, dtype=self.dtype)
        self.v = xp.zeros(total, dtype=self.dtype)
        self.segment = backend.to_device(np.repeat(np.arange(len(sizes), dtype=np.int32), sizes), self.device)
        self._zeros = xp.zeros(max(sizes), dtype=self.dtype)   # stands in for a missing gradient
        self.views, self.moment_views = [], []
        for i, p in enumerate(self.params):
            lo, hi = self.offsets[i], self.offsets[i + 1]
            view = self.w[lo:hi].reshape(p.shape)                  # (n,) -> the parameter's shape
            view[...] = p.data
            p.data = view
            self.views.append(view)
            self.moment_views.append((self.m[lo:hi].reshape(p.shape), self.v[lo:hi].reshape(p.shape)))

    def fits(self, params) -> bool:
        """The same parameters, each still viewing its slice of ``w`` (else the optimiser flattens them again)."""
        return (len(params) == len(self.params) and all(p is q for p, q in zip(params, self.params))
                and all(p.data is v for p, v in zip(params, self.views)))

    def state_of(self, i: int) -> dict:
        """Fresh Adam state of parameter i: its moments are views of ``m`` and ``v`` (zeros until its first update)."""
        m, v = self.moment_views[i]
        return {"step": 0, "exp_avg": m, "exp_avg_sq": v}

    def adopt(self, state: dict) -> None:
        """Make every parameter's state arrays the views of ``m`` and ``v`` again, copying in any that are not
        (state loaded from a checkpoint, or made by the unfused step)."""
        for p, views in zip(self.params, self.moment_views):
            s = state.get(p)
            if s is None:
                continue
            for key, view in zip(("exp_avg", "exp_avg_sq"), views):
                if s[key] is not view:
                    view[...] = s[key]
                    s[key] = view

    def gather(self, grads):
        """All gradients in one flat array (one copy; zeros for a parameter without one)."""
        xp = backend.get_array_module(self.w)
        parts = [self._zeros[:self.offsets[i + 1] - self.offsets[i]] if g is None else g.reshape(-1)
                 for i, g in enumerate(grads)]
        return xp.concatenate(parts)
