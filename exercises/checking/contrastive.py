"""Checks of exercise contrastive: ``ContrastiveLoss`` against ``tinyw2v2.functional.contrastive_loss``."""
import numpy as np

import tinyw2v2.functional as F

from .common import Case, FunctionExercise


def _inputs(N, D, K, tau, near=False, lengths=False):
    def make(rng):
        x, y0, yk = rng.standard_normal((N, D)), rng.standard_normal((N, D)), rng.standard_normal((K, N, D))
        if near:  # the first negative almost equals the positive
            yk[0] = y0 + 0.01 * rng.standard_normal((N, D))
        if lengths:  # norms from 0.01 to 100
            x *= 10.0 ** rng.uniform(-2, 2, (N, 1))
            yk *= 10.0 ** rng.uniform(-2, 2, (K, N, 1))
        return {"x": x, "y0": y0, "yk": yk, "tau": tau}
    return make


def _grads(x, y0, yk, tau, v, target=True, x_norm=True, y_norm=True, y_x_norm=True):
    """The gradients with some terms switched off (the common mistakes)."""
    y = np.concatenate([y0[None], yk])
    nx, ny = np.linalg.norm(x, axis=-1), np.linalg.norm(y, axis=-1)
    s = np.einsum("nd,cnd->cn", x, y) / (nx * ny)
    l = s / tau
    e = np.exp(l - l.max(0))
    p = e / e.sum(0)
    dl = v * p
    if target:
        dl[0] -= v
    ds = dl / tau
    dx = np.einsum("cn,cnd->nd", ds / (nx * ny), y)
    if x_norm:
        dx -= x * ((ds * s).sum(0) / nx ** 2)[:, None]
    dy = (ds / ((nx if y_x_norm else 1) * ny))[:, :, None] * x
    if y_norm:
        dy -= y * (ds * s / ny ** 2)[:, :, None]
    return {"x": dx, "y0": dy[0], "yk": dy[1:]}


class Contrastive(FunctionExercise):
    name = "contrastive"
    title = "contrastive loss (cosine logits, temperature, K negatives): backward"
    needs = ("ContrastiveLoss",)
    docs = 'docs/contrastive.md, section "contrastive_loss(...)", paragraph "Backward"'
    library = "the loss and dx, dy0, dyk against tinyw2v2.functional.contrastive_loss, and gradcheck, in float64"
    grads = ("x", "y0", "yk")
    returns = "(dx, dy0, dyk)"
    shape_hints = {"x": "dx has x's shape (N, D)", "y0": "dy0 has y0's shape (N, D): the c = 0 slice of dy",
                   "yk": "dyk has yk's shape (K, N, D): the c >= 1 slices of dy"}
    cases = [
        Case("N = 3 frames, D = 4, K = 2 negatives, tau = 0.1", _inputs(3, 4, 2, 0.1)),
        Case("one negative: N = 2, D = 3, K = 1, tau = 1", _inputs(2, 3, 1, 1.0)),
        Case("one frame: N = 1, D = 2, K = 5, tau = 0.5", _inputs(1, 2, 5, 0.5)),
        Case("a negative close to the positive: N = 2, D = 4, K = 3, tau = 0.1", _inputs(2, 4, 3, 0.1, near=True)),
        Case("norms from 0.01 to 100: N = 3, D = 3, K = 2, tau = 0.2", _inputs(3, 3, 2, 0.2, lengths=True),
             "the cosine does not depend on the lengths: the norm terms must cancel the scale of x and y_c"),
    ]

    def student(self, module, t):
        return module.ContrastiveLoss.apply(t["x"], t["y0"], t["yk"], temperature=t["tau"])

    def reference(self, t):
        return F.contrastive_loss(t["x"], t["y0"], t["yk"], t["tau"])

    def factors(self, inputs):
        return {"tau": inputs["tau"]}

    def backward_mistakes(self, inputs, v):
        args = (inputs["x"], inputs["y0"], inputs["yk"], inputs["tau"], v)
        wrong = [
            (_grads(*args, target=False), "dl_c = p_c - [c = 0]: the -1 at the positive (the target) is missing"),
            (_grads(*args, x_norm=False), "s_c depends on x through |x| too: the term - (sum_c ds_c s_c) x / |x|^2 is missing"),
            (_grads(*args, y_norm=False), "s_c depends on y_c through |y_c| too: the term - ds_c s_c y_c / |y_c|^2 is missing"),
            (_grads(*args, y_x_norm=False), "dy_c = ds_c (x / (|x| |y_c|) - s_c y_c / |y_c|^2): divide by |x| too"),
        ]
        return {k: [(grads[k], hint) for grads, hint in wrong] for k in self.grads}
