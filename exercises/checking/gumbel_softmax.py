"""Checks of exercise gumbel_softmax: ``GumbelSoftmax`` against ``tinyw2v2.functional.gumbel_softmax``.

The hard mode's gradient is not the derivative of its forward, so its gradcheck differentiates
f(x) = ST(x) - stop(ST(x)) + stop(soft(x)): the value is soft(x) (the one-hots cancel exactly) and the analytic
gradient flows only through your straight-through backward (as in tinyw2v2/checks/quantize.py).
"""
import numpy as np

import tinyw2v2.functional as F

from .common import Case, FunctionExercise


def _inputs(*shape, tau=1.0, hard=True, spread=1.0):
    def make(rng):
        return {"x": spread * rng.standard_normal(shape),
                "g": -np.log(-np.log(rng.uniform(1e-6, 1 - 1e-6, shape))), "tau": tau, "hard": hard}
    return make


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _onehot(s):
    return (np.arange(s.shape[-1]) == s.argmax(-1)[..., None]).astype(float)


class GumbelSoftmaxExercise(FunctionExercise):
    name = "gumbel_softmax"
    title = "Gumbel softmax, straight-through: forward and backward"
    needs = ("GumbelSoftmax",)
    docs = 'docs/quantize.md, section "gumbel_softmax(...)", paragraph "Backward"'
    library = "forward and dx against tinyw2v2.functional.gumbel_softmax, and gradcheck, in float64"
    grads = ("x",)
    returns = "(dx, None): None for the noise g"
    cases = [
        Case("hard, x (4, 5), tau = 1", _inputs(4, 5)),
        Case("hard, x (2, 3, 4), tau = 0.5", _inputs(2, 3, 4, tau=0.5)),
        Case("soft (hard=False), x (3, 6), tau = 2", _inputs(3, 6, tau=2.0, hard=False),
             "with hard=False the output is s itself"),
        Case("hard, V = 1: x (3, 1) (s = 1, so y = 1 and dx = 0)", _inputs(3, 1),
             "with one entry per row, s = 1 whatever x is: the gradient is 0"),
        Case("hard, large logits: x (2, 6) ~ 50 N(0, 1), tau = 0.1", _inputs(2, 6, tau=0.1, spread=50.0),
             "z reaches thousands here: subtract the row max before exp, or exp overflows to inf (and inf/inf = NaN)"),
    ]

    def student(self, module, t):
        return module.GumbelSoftmax.apply(t["x"], t["g"], tau=t["tau"], hard=t["hard"])

    def reference(self, t):
        return F.gumbel_softmax(t["x"], t["tau"], hard=t["hard"], noise=t["g"])

    def gradcheck_target(self, module, t):
        y = self.student(module, t)
        if not t["hard"]:
            return y
        soft = F.gumbel_softmax(t["x"], t["tau"], hard=False, noise=t["g"])
        return y - y.detach() + soft.detach()

    def factors(self, inputs):
        return {"tau": inputs["tau"]}

    def forward_mistakes(self, inputs):
        x, g, tau, hard = inputs["x"], inputs["g"], inputs["tau"], inputs["hard"]
        pick = _onehot if hard else (lambda s: s)
        out = [(pick(_softmax(x / tau)), "the noise g is missing: z = (x + g) / tau"),
               (pick(_softmax(x + g)), "divide by the temperature: z = (x + g) / tau"),
               (pick(_softmax(x)), "z = (x + g) / tau: both the noise and the temperature are missing")]
        if hard:
            out.append((_softmax((x + g) / tau), "with hard=True return the one-hot of argmax s, not s"))
        else:
            out.append((_onehot(_softmax((x + g) / tau)), "with hard=False return s itself, not the one-hot"))
        return out

    def backward_mistakes(self, inputs, v):
        x, g, tau = inputs["x"], inputs["g"], inputs["tau"]
        s = _softmax((x + g) / tau)
        y = _onehot(s)
        return {"x": [
            (v, "straight-through does not pass dy unchanged: it passes the soft relaxation's gradient "
                "(the softmax backward, then / tau)"),
            (v / tau, "straight-through passes the soft relaxation's gradient: the softmax backward is missing"),
            (s * v / tau, "the softmax's backward has the row term: s * (dy - sum_j dy_j s_j)"),
            (y * (v - (v * y).sum(-1, keepdims=True)) / tau,
             "the backward uses the soft s, not the one-hot y: save s in forward"),
        ]}
