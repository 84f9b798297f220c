"""Checks of exercise attention: ``Attention`` against ``tinyw2v2.functional.scaled_dot_product_attention``."""
import math

import numpy as np

import tinyw2v2.functional as F

from .common import Case, FunctionExercise, reduce_to


def _qkv(q, k, v, scale=None, spread=1.0):
    def make(rng):
        return {"q": spread * rng.standard_normal(q), "k": spread * rng.standard_normal(k),
                "v": rng.standard_normal(v), "scale": scale}
    return make


def T(a):
    return np.swapaxes(a, -1, -2)


class Attention(FunctionExercise):
    name = "attention"
    title = "scaled dot-product attention: backward"
    needs = ("Attention",)
    docs = 'docs/attention.md, section "Backward"'
    library = "forward and dq, dk, dv against tinyw2v2.functional.scaled_dot_product_attention, and gradcheck, in float64"
    grads = ("q", "k", "v")
    returns = "(dq, dk, dv)"
    shape_hints = {"q": "dq has q's shape (..., Tq, D): dQ = scale dS K",
                   "k": "dk has k's shape (..., Tk, D): dK = scale dS^T Q (dS transposed)",
                   "v": "dv has v's shape (..., Tk, Dv): dV = P^T G (P transposed)"}
    cases = [
        Case("one head: q (3, 4), k (5, 4), v (5, 2)", _qkv((3, 4), (5, 4), (5, 2))),
        Case("batched (B, H) = (2, 3): q (2, 3, 4, 3), k (2, 3, 5, 3), v (2, 3, 5, 2)",
             _qkv((2, 3, 4, 3), (2, 3, 5, 3), (2, 3, 5, 2)),
             "with leading axes, a.T reverses every axis: transpose the last two with a.swapaxes(-1, -2)"),
        Case("square, scale = 2.5: q (4, 3), k (4, 3), v (4, 3)", _qkv((4, 3), (4, 3), (4, 3), scale=2.5),
             "with Tq = Tk every transpose fits the shapes: check which of P, dS is transposed where"),
        Case("one query: q (1, 4), k (6, 4), v (6, 3)", _qkv((1, 4), (6, 4), (6, 3))),
        Case("one key: q (3, 2), k (1, 2), v (1, 4) (P = 1, so dq = dk = 0)", _qkv((3, 2), (1, 2), (1, 4)),
             "with one key, P = 1 whatever S is: dS, dq and dk are 0"),
        Case("k and v shared over the batch: q (2, 3, 2), k (4, 2), v (4, 2)", _qkv((2, 3, 2), (4, 2), (4, 2)),
             "k and v broadcast over q's leading axis: return their gradients in the broadcast shape, "
             "the engine sums them (use swapaxes(-1, -2), not .T)"),
        Case("large scores (|S| ~ 30): q (3, 4), k (3, 4), v (3, 2)", _qkv((3, 4), (3, 4), (3, 2), spread=4.0)),
    ]

    def student(self, module, t):
        return module.Attention.apply(t["q"], t["k"], t["v"], scale=t["scale"])

    def reference(self, t):
        return F.scaled_dot_product_attention(t["q"], t["k"], t["v"], scale=t["scale"])

    def factors(self, inputs):
        return {"scale": self._scale(inputs)}

    def _scale(self, inputs):
        return 1 / math.sqrt(inputs["q"].shape[-1]) if inputs["scale"] is None else inputs["scale"]

    def backward_mistakes(self, inputs, v):
        q, k, val, scale = inputs["q"], inputs["k"], inputs["v"], self._scale(inputs)
        s = (q @ T(k)) * scale
        e = np.exp(s - s.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        dp = v @ T(val)

        def dqk(ds):
            return ds @ k * scale, T(ds) @ q * scale

        no_row = dqk(p * dp)
        unweighted = dqk(p * (dp - dp.sum(-1, keepdims=True)))
        mean_row = dqk(p * (dp - dp.mean(-1, keepdims=True)))
        row = "dS = P * (dP - rowsum(dP * P)): the softmax's row term is missing"
        weight = "the softmax's row term is rowsum(dP * P), weighted by P, not the plain row sum or mean of dP"
        out = {"q": [(no_row[0], row), (unweighted[0], weight), (mean_row[0], weight)],
               "k": [(no_row[1], row), (unweighted[1], weight), (mean_row[1], weight)], "v": []}
        if q.shape[-2] == k.shape[-2]:  # square: a missing transpose still fits the shapes
            right = p * (dp - (dp * p).sum(-1, keepdims=True))
            out["k"].append((right @ q * scale, "dK = scale dS^T Q: dS is transposed"))
            out["v"].append((p @ v, "dV = P^T G: P is transposed"))
        return {name: [(reduce_to(a, inputs[name].shape), hint) for a, hint in pairs] for name, pairs in out.items()}
