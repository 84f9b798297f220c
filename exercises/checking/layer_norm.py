"""Checks of exercise layer_norm: ``LayerNorm`` against ``tinyw2v2.functional.layer_norm``."""
import numpy as np

import tinyw2v2.functional as F

from .common import Case, FunctionExercise


def _inputs(*shape, scale=1.0, shift=0.0, eps=1e-5):
    def make(rng):
        return {"x": shift + scale * rng.standard_normal(shape), "weight": rng.standard_normal(shape[-1]),
                "bias": rng.standard_normal(shape[-1]), "eps": eps}
    return make


class LayerNormExercise(FunctionExercise):
    name = "layer_norm"
    title = "LayerNorm over the last axis: backward"
    needs = ("LayerNorm",)
    docs = 'docs/norm.md, section "Backward"'
    library = "forward and dx, dweight, dbias against tinyw2v2.functional.layer_norm, and gradcheck, in float64"
    grads = ("x", "weight", "bias")
    returns = "(dx, dweight, dbias)"
    shape_hints = {"x": "dx has x's shape: reshape the (M, N) result back to self.shape",
                   "weight": "dweight has weight's shape (N,): sum over the rows",
                   "bias": "dbias has bias's shape (N,): sum over the rows"}
    cases = [
        Case("x (2, 3, 5), weight and bias (5,)", _inputs(2, 3, 5)),
        Case("x (1, 7): one row, odd N", _inputs(1, 7, shift=-3.0)),
        Case("x (4, 1): one-element rows (var = 0, so xhat = 0, y = bias, dx = 0)", _inputs(4, 1),
             "with N = 1, xhat = 0 and dx must be exactly rstd (dxhat - dxhat - 0) = 0"),
        Case("x (3, 6) with variance ~ eps = 1e-3", _inputs(3, 6, scale=0.03, eps=1e-3),
             "eps sits inside the square root: rstd = 1 / sqrt(var + eps); keep using the saved rstd"),
        Case("x (2, 4) with mean 100", _inputs(2, 4, shift=100.0)),
    ]

    def student(self, module, t):
        return module.LayerNorm.apply(t["x"], t["weight"], t["bias"], eps=t["eps"])

    def reference(self, t):
        return F.layer_norm(t["x"], t["x"].shape[-1], t["weight"], t["bias"], t["eps"])

    def backward_mistakes(self, inputs, v):
        x, w, eps = inputs["x"], inputs["weight"], inputs["eps"]
        N = x.shape[-1]
        x2, g = x.reshape(-1, N), v.reshape(-1, N)
        mu = x2.mean(1, keepdims=True)
        rstd = 1 / np.sqrt(((x2 - mu) ** 2).mean(1, keepdims=True) + eps)
        xhat = (x2 - mu) * rstd
        d = g * w
        m1, m2 = d.mean(1, keepdims=True), (d * xhat).mean(1, keepdims=True)
        s1, s2 = d.sum(1, keepdims=True), (d * xhat).sum(1, keepdims=True)
        gm1, gm2 = g.mean(1, keepdims=True), (g * xhat).mean(1, keepdims=True)

        def dx(a):
            return a.reshape(x.shape)

        return {
            "x": [
                (dx(rstd * (d - xhat * m2)), "dx is off by a constant along each row: did you forget the mean(dxhat) term?"),
                (dx(rstd * (d - m1)), "did you forget the - xhat * mean(dxhat * xhat) term (the path through rstd)?"),
                (dx(rstd * d), "dx = rstd * dxhat is only the direct path: mu and rstd depend on x too"),
                (dx(d - m1 - xhat * m2), "the factor rstd in front is missing: dx = rstd (dxhat - m1 - xhat m2)"),
                (dx(rstd * (g - gm1 - xhat * gm2)), "dxhat is g * weight, not g"),
                (dx(rstd * (d - s1 - xhat * s2)), "m1 and m2 are means over the row (divide by N), not sums"),
                (dx(rstd * (d - m1 + xhat * m2)), "the xhat * mean(dxhat * xhat) term is subtracted, not added"),
            ],
            "weight": [
                ((g * x2).sum(0), "dweight = sum over rows of g * xhat (the normalised x, not x)"),
                (g.sum(0), "that is dbias: dweight = sum over rows of g * xhat"),
                ((g * xhat * w).sum(0), "dweight = sum over rows of g * xhat, without a factor weight"),
            ],
            "bias": [((g * xhat).sum(0), "that is dweight: dbias = sum over rows of g")],
        }
