"""``tinyw2v2.optim``: Adam / AdamW, gradient-norm clipping and learning-rate schedules.

    opt = optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    sched = optim.PolynomialDecay(peak_lr=5e-4, warmup_steps=32_000, total_steps=400_000)
    for step in range(total):                # step = number of updates already done (fairseq's num_updates)
        sched.set_lr(opt, step)              # the lr this update uses
        loss = model(batch); loss.backward()
        norm = optim.clip_grad_norm_(model.parameters(), max_norm)   # a 0-d device array, no sync
        opt.step(); opt.zero_grad()

Every update runs on the raw arrays of the parameters with the array module of each parameter
(``backend.get_array_module``): nothing is copied to the host, no Python float is read back from the device.
The maths, the eps placements of torch and fairseq, and the schedules are in docs/training.md.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend
from .ops.fast.optim import FusedAdam
from .tensor import Tensor

__all__ = ["Optimizer", "Adam", "AdamW", "clip_grad_norm_", "Schedule", "Constant", "PolynomialDecay",
           "LinearWarmupDecay", "TriStage"]


# ----------------------------------------------------------------------------------------------
# Optimiser base


class Optimizer:
    """Holds parameter groups and per-parameter state; subclasses implement ``_update(p, grad, state, group)``.

    ``params``: an iterable of Parameters, or of dicts ``{"params": [...], **overrides}`` (torch's parameter
    groups, e.g. a group with ``weight_decay=0``). ``state[p]`` is a dict per parameter, created at its first
    update. ``steps`` counts calls to ``step()``.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = []
        seen = set()
        for group in params:
            group = dict(group)
            group["params"] = list(group["params"])
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"optimizer can only optimise Tensors/Parameters, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one parameter group (or twice)")
                seen.add(id(p))
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            self.param_groups.append(group)
        self.state: dict = {}
        self.steps = 0

    @property
    def params(self) -> list:
        return [p for g in self.param_groups for p in g["params"]]

    # --- learning rate ----------------------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        """Set the learning rate of every parameter group (what the schedules call)."""
        for g in self.param_groups:
            g["lr"] = float(lr)

    def get_lr(self) -> float:
        return self.param_groups[0]["lr"]

    lr = property(get_lr, set_lr)

    # --- stepping ---------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (default) or zero the gradient of every parameter."""
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def step(self) -> None:
        """One update of every parameter that has a gradient (parameters with ``grad is None`` are skipped)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if backend.device_of(p.grad) != backend.device_of(p.data):
                    raise TypeError(f"parameter on {p.device} has a gradient on {backend.device_of(p.grad)}")
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = self._init_state(p)
                self._update(p, p.grad, state, group)
        self.steps += 1

    def clip_grad_norm_(self, max_norm, norm_type: float = 2.0):
        """``clip_grad_norm_(self.params, max_norm, norm_type)``; an optimiser with a fused step (``Adam(fused=...)``)
        folds the scaling into that step instead."""
        return clip_grad_norm_(self.params, max_norm, norm_type)

    def _init_state(self, p) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _update(self, p, grad, state, group) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- state ------------------------------------------------------------------------------------
    ARRAY_KEYS: tuple = ()

    def state_dict(self) -> dict:
        """``{"state": {index: {...}}, "param_groups": [{hyper-parameters, "params": [indices]}], "steps": n}``.

        Parameters are numbered in group order, as torch does; the arrays are the live state (not copies).
        """
        index = {id(p): i for i, p in enumerate(self.params)}
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        return {"state": state, "param_groups": groups, "steps": self.steps}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a ``state_dict()``: hyper-parameters, step counts and moments (copied onto each parameter's
        device and dtype with explicit transfers), so that training resumes exactly."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"the state dict has {len(groups)} parameter groups, this optimizer "
                             f"{len(self.param_groups)}")
        params = self.params
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("a parameter group of the state dict has a different number of parameters")
        new_state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            s = dict(s)
            for key in self.ARRAY_KEYS:
                a = s[key]
                a = a.data if isinstance(a, Tensor) else a
                if tuple(a.shape) != p.shape:
                    raise ValueError(f"optimizer state {key!r} of parameter {i} has shape {tuple(a.shape)}, "
                                     f"the parameter has shape {p.shape}")
                s[key] = backend.to_device(a, p.device).astype(p.dtype)  # explicit transfer; astype copies
            s["step"] = int(s["step"])
            new_state[p] = s
        for saved, group in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = tuple(value) if isinstance(value, list) else value
        self.state = new_state
        self.steps = int(state_dict.get("steps", 0))

    def save(self, path) -> None:
        """Write ``state_dict()`` to an .npz file atomically (``tinyw2v2.io.flatten_optimizer``)."""
        from .io import flatten_optimizer, save_arrays

        arrays, meta = flatten_optimizer(self)
        save_arrays(path, arrays, meta)

    def load(self, path) -> None:
        """Read a file written by ``save`` into this optimizer (whose parameters must match)."""
        from .io import CheckpointError, load_arrays, unflatten_optimizer

        arrays, meta = load_arrays(path)
        if not isinstance(meta, dict) or "param_groups" not in meta:
            raise CheckpointError(f"{path!r} is not an optimizer checkpoint (no optimizer metadata)")
        self.load_state_dict(unflatten_optimizer(arrays, meta))


# ----------------------------------------------------------------------------------------------
# Adam / AdamW


class Adam(Optimizer):
    """Adam (Kingma & Ba), torch semantics by default.

    Per parameter, with g the gradient, t the parameter's step count (1 at its first update):
        g  <- g + weight_decay * p                      (L2 penalty; only in ``Adam``, not ``AdamW``)
        m  <- beta1 m + (1 - beta1) g
        v  <- beta2 v + (1 - beta2) g^2
        eps_mode="torch":   p <- p - lr/(1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
        eps_mode="fairseq": p <- p - lr sqrt(1 - beta2^t)/(1 - beta1^t) * m / (sqrt(v) + eps)
    The two differ only in where eps sits: fairseq adds it to sqrt(v) before the bias correction, which in torch's
    terms is an eps of eps / sqrt(1 - beta2^t) (larger in the first updates). fairseq's ``adam`` optimizer is
    ``AdamW(..., eps_mode="fairseq")`` (its weight decay is decoupled). The moments live on the parameter's
    device in its dtype. ``fused``: None (default) hands clipping and step to the fused step of
    ``ops/fast/optim.py`` on a device (CuPy or emulated), the same arithmetic in one kernel; True / False force it.
    """

    ARRAY_KEYS = ("exp_avg", "exp_avg_sq")
    decoupled = False               # AdamW: weight decay decoupled from the gradient

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 eps_mode: str = "torch", fused: bool | None = None):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr ({lr}), eps ({eps}) and weight_decay ({weight_decay}) must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if eps_mode not in ("torch", "fairseq"):
            raise ValueError(f"eps_mode must be 'torch' or 'fairseq', got {eps_mode!r}")
        super().__init__(params, dict(lr=float(lr), betas=tuple(betas), eps=float(eps),
                                      weight_decay=float(weight_decay), eps_mode=eps_mode))
        self.fused = fused
        self.fused_step = FusedAdam()   # on a device: every parameter in one flat buffer, one kernel (ops/fast/optim.py)

    def clip_grad_norm_(self, max_norm, norm_type: float = 2.0):
        if norm_type == 2.0 and self.fused_step.applies(self):   # fused: the scaling happens inside the next step
            return self.fused_step.clip_grad_norm_(self, max_norm)
        return super().clip_grad_norm_(max_norm, norm_type)

    def step(self) -> None:
        if self.fused_step.applies(self):
            return self.fused_step.step(self)
        super().step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        self.fused_step.clipped = None              # a norm taken before belongs to the old gradients

    def _init_state(self, p) -> dict:
        xp = backend.get_array_module(p.data)
        return {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}

    def _update(self, p, grad, state, group) -> None:
        xp = backend.get_array_module(p.data)
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        state["step"] += 1
        t = state["step"]
        m, v, w = state["exp_avg"], state["exp_avg_sq"], p.data
        if wd != 0.0:
            if self.decoupled:
                w *= 1.0 - lr * wd                      # p <- p (1 - lr wd), before the Adam step
            else:
                grad = grad + wd * w                    # L2: a fresh array, p.grad is left as it was
        m *= beta1
        m += (1.0 - beta1) * grad                       # m <- beta1 m + (1 - beta1) g
        tmp = xp.multiply(grad, grad)                   # g^2 (one scratch array, reused below)
        tmp *= 1.0 - beta2
        v *= beta2
        v += tmp                                        # v <- beta2 v + (1 - beta2) g^2
        bias1, bias2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        denom = xp.sqrt(v, out=tmp)
        if group["eps_mode"] == "torch":
            denom /= math.sqrt(bias2)
            denom += eps                                # sqrt(v_hat) + eps
            step_size = lr / bias1
        else:
            denom += eps                                # sqrt(v) + eps, then the bias correction
            step_size = lr * math.sqrt(bias2) / bias1
        update = xp.divide(m, denom, out=denom)         # m / denom
        update *= step_size
        w -= update                                     # in place: the Parameter keeps its array


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p <- p (1 - lr wd), then the Adam step.

    torch.optim.AdamW's semantics (default weight_decay 0.01 as in torch); ``eps_mode="fairseq"`` gives fairseq's
    ``adam`` optimizer, the one wav2vec 2.0 was trained with.
    """

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 eps_mode: str = "torch", fused: bool | None = None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, eps_mode=eps_mode,
                         fused=fused)


# ----------------------------------------------------------------------------------------------
# Gradient clipping


def clip_grad_norm_(parameters, max_norm, norm_type: float = 2.0, error_if_nonfinite: bool = False):
    """Scale all gradients together so that their joint norm is at most ``max_norm``; return the norm before.

    total = (sum_i ||g_i||_p^p)^(1/p) over the parameters that have a gradient (p = inf: max |g|);
    coef = min(1, max_norm / (total + 1e-6)); every g_i <- g_i * coef (as torch.nn.utils.clip_grad_norm_; here
    ``p.grad`` is replaced by a new array rather than scaled in place, because the engine may share one gradient
    array between leaves).
    ``max_norm`` None or 0 only measures (fairseq's ``clip_norm=0``).

    Returns the total norm as a **0-d array on the gradients' device** (dtype of the gradients), so that clipping
    costs no host sync; ``float(norm)`` reads it (a sync point on a GPU: do it only when logging).
    ``error_if_nonfinite=True`` reads it every call (a sync) and raises on inf/nan.
    """
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return np.zeros((), dtype=np.float32)
    backend.check_same_device(grads, "clip_grad_norm_")
    xp = backend.get_array_module(*grads)
    norm_type = float(norm_type)
    if norm_type == math.inf:
        parts = xp.stack([xp.max(xp.abs(g)) for g in grads])
        total = xp.max(parts)
    elif norm_type == 2.0:
        parts = xp.stack([xp.sum(g * g) for g in grads])           # sum of squares per gradient
        total = xp.sqrt(xp.sum(parts))
    else:
        parts = xp.stack([xp.sum(xp.abs(g) ** norm_type) for g in grads])
        total = xp.sum(parts) ** (1.0 / norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is non-finite ({float(total)})")
    total = xp.asarray(total)
    if max_norm:
        coef = xp.minimum(float(max_norm) / (total + 1e-6), 1.0)  # 0-d, on the device
        for p in parameters:
            if p.grad is not None:
                # a new array, not ``*=``: the engine may hand the same gradient array (or views of one)
                # to several leaves, which an in-place scaling would scale more than once
                p.grad = p.grad * coef.astype(p.grad.dtype)
    return total


# ----------------------------------------------------------------------------------------------
# Learning-rate schedules


class Schedule:
    """A learning rate as a function of ``step``, the number of updates already done (fairseq's ``num_updates``).

    ``schedule(step)`` is the lr that update number ``step + 1`` uses; ``schedule.set_lr(optimizer, step)`` sets
    it on every parameter group and returns it. Call it before each ``optimizer.step()`` with step = 0, 1, ...
    This is exactly fairseq's timing (its trainer calls ``step_update(0)`` before the first update and
    ``step_update(n)`` after the n-th) and transformers' (``LambdaLR`` starts at lambda(0)).
    """

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_lr(self, optimizer: Optimizer, step: int) -> float:
        lr = self(step)
        optimizer.set_lr(lr)
        return lr


class Constant(Schedule):
    def __init__(self, lr: float):
        self.lr = float(lr)

    def __call__(self, step: int) -> float:
        return self.lr


class PolynomialDecay(Schedule):
    """fairseq ``polynomial_decay``: linear warm-up from 0, then polynomial decay to ``end_lr``.

        step <= W (W > 0):  lr = peak * step / W
        step >= T:          lr = end_lr
        otherwise:          lr = (peak - end_lr) * (1 - (step - W) / (T - W)) ** power + end_lr
    wav2vec 2.0 BASE: peak 5e-4, W = 32,000, T = 400,000, power 1, end_lr 0.
    """

    def __init__(self, peak_lr: float, warmup_steps: int, total_steps: int, end_lr: float = 0.0, power: float = 1.0):
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        self.peak_lr, self.end_lr, self.power = float(peak_lr), float(end_lr), float(power)
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)

    def __call__(self, step: int) -> float:
        W, T = self.warmup_steps, self.total_steps
        if W > 0 and step <= W:
            return self.peak_lr * step / W
        if step >= T:
            return self.end_lr
        remaining = 1.0 - (step - W) / (T - W)
        return (self.peak_lr - self.end_lr) * remaining ** self.power + self.end_lr


class LinearWarmupDecay(PolynomialDecay):
    """Linear warm-up from 0 to ``peak_lr`` over W steps, then linear decay to 0 at T (``PolynomialDecay`` with
    power 1 and end_lr 0; equal to transformers' ``get_linear_schedule_with_warmup`` at every step)."""

    def __init__(self, peak_lr: float, warmup_steps: int, total_steps: int):
        super().__init__(peak_lr, warmup_steps, total_steps, end_lr=0.0, power=1.0)


class TriStage(Schedule):
    """fairseq ``tri_stage``: linear warm-up, hold, exponential decay, then constant.

        init = init_lr_scale * peak, final = final_lr_scale * peak, W, H, D the stage lengths
        step < W:              lr = init + (peak - init) / W * step
        step < W + H:          lr = peak
        step <= W + H + D:     lr = peak * exp(log(final_lr_scale) / D * (step - W - H))
        afterwards:            lr = final
    Stage lengths come either as ``warmup_steps, hold_steps, decay_steps`` or as ``phase_ratio`` (three fractions
    summing to 1) of ``max_update`` (each ``int(max_update * ratio)``, as fairseq). wav2vec 2.0 base_100h:
    peak 3e-5, phase_ratio (0.1, 0.4, 0.5), max_update 80,000, final_lr_scale 0.05, init_lr_scale 0.01.
    """

    def __init__(self, peak_lr: float, warmup_steps: int | None = None, hold_steps: int | None = None,
                 decay_steps: int | None = None, init_lr_scale: float = 0.01, final_lr_scale: float = 0.01,
                 phase_ratio=None, max_update: int | None = None):
        if phase_ratio is not None:
            if max_update is None or max_update <= 0:
                raise ValueError("phase_ratio needs max_update > 0")
            if abs(sum(phase_ratio) - 1.0) > 1e-6:
                raise ValueError(f"phase ratios must add up to 1, got {phase_ratio}")
            warmup_steps, hold_steps, decay_steps = (int(max_update * r) for r in phase_ratio)
        if warmup_steps is None or hold_steps is None or decay_steps is None:
            raise ValueError("give warmup_steps, hold_steps and decay_steps, or phase_ratio and max_update")
        if decay_steps <= 0 or not 0.0 < final_lr_scale:
            raise ValueError("decay_steps must be > 0 and final_lr_scale > 0")
        self.peak_lr = float(peak_lr)
        self.init_lr = init_lr_scale * self.peak_lr
        self.final_lr = final_lr_scale * self.peak_lr
        self.warmup_steps, self.hold_steps, self.decay_steps = int(warmup_steps), int(hold_steps), int(decay_steps)
        self.warmup_rate = (self.peak_lr - self.init_lr) / self.warmup_steps if self.warmup_steps else 0.0
        self.decay_factor = -math.log(final_lr_scale) / self.decay_steps

    def __call__(self, step: int) -> float:
        W, H, D = self.warmup_steps, self.hold_steps, self.decay_steps
        if step < W:
            return self.init_lr + self.warmup_rate * step
        if step < W + H:
            return self.peak_lr
        if step <= W + H + D:
            return self.peak_lr * math.exp(-self.decay_factor * (step - W - H))
        return self.final_lr
