"""Checks of exercise ctc: ``ctc_log_likelihood`` against -``tinyw2v2.functional.ctc_loss`` (reduction "none").

The hints come from running the recursion with one rule changed (a skip between repeats allowed, no skips, a walk
that must start in state 0 ...): when yours equals such a variant on a case, that rule is the one to look at.
"""
import numpy as np

import tinyw2v2 as tw
import tinyw2v2.functional as F

from .common import Case, Exercise, Failure

IMPOSSIBLE = -1e29   # below this, a log-likelihood means p = 0


def _inputs(T, C, targets, blank=0):
    def make(rng):
        z = rng.standard_normal((T, C))
        labels = targets(rng) if callable(targets) else targets
        return {"log_probs": z - np.log(np.exp(z).sum(-1, keepdims=True)), "targets": list(labels), "blank": blank}
    return make


def _long_target(rng):
    labels = list(rng.integers(1, 6, 30))
    labels[5] = labels[4]   # at least one repeat
    return labels


def _variant(log_probs, targets, blank, repeat_skip=False, no_skip=False, skip_blanks=False, start_in_0=False,
             end_in_last=False):
    """The alpha recursion with one rule changed (all False: the right one)."""
    ext = np.array([blank] + [x for label in targets for x in (int(label), blank)])
    L = len(ext)
    skip = np.zeros(L, dtype=bool)
    if not no_skip:
        skip[2:] = True if skip_blanks else (ext[2:] != blank) & ((ext[2:] != ext[:-2]) | repeat_skip)
    alpha = np.full(L, -np.inf)
    alpha[0] = log_probs[0, ext[0]]
    if L > 1 and not start_in_0:
        alpha[1] = log_probs[0, ext[1]]
    with np.errstate(invalid="ignore"):
        for t in range(1, log_probs.shape[0]):
            prev1 = np.concatenate([[-np.inf], alpha[:-1]])
            prev2 = np.where(skip, np.concatenate([[-np.inf, -np.inf], alpha[:-2]])[:L], -np.inf)
            alpha = np.logaddexp(np.logaddexp(alpha, prev1), prev2) + log_probs[t, ext]
    return float(alpha[-1] if L == 1 or end_in_last else np.logaddexp(alpha[-1], alpha[-2]))


VARIANTS = [
    (dict(repeat_skip=True), "between two equal labels (a repeat) the skip s-2 -> s is not allowed: it would merge "
                             "them into one; they need a blank in between"),
    (dict(no_skip=True), "the skip s-2 -> s over a blank is allowed into a label that differs from l'[s-2]"),
    (dict(skip_blanks=True), "never skip into a blank (or between equal labels): skip[s] = l'[s] != blank and "
                             "l'[s] != l'[s-2]"),
    (dict(start_in_0=True), "a walk may start in state 1 as well (the first label, no leading blank)"),
    (dict(end_in_last=True), "a walk may end in state L'-2 as well (the last label, no trailing blank)"),
]


def _same(a, r):
    if a <= IMPOSSIBLE and r <= IMPOSSIBLE:
        return True
    return bool(np.isfinite(a) and abs(a - r) <= 1e-9 * max(1.0, abs(r)))


class CTC(Exercise):
    name = "ctc"
    title = "CTC: the alpha recursion, log p(l | x) for one utterance (forward only)"
    needs = ("ctc_log_likelihood",)
    docs = 'docs/ctc.md, sections "1. Alignments and the lattice" and "2. The forward variable α (alpha)"'
    library = "log p(l | x) against -tinyw2v2.functional.ctc_loss, in float64"
    cases = [
        Case("T = 6, C = 4, target (1, 2)", _inputs(6, 4, [1, 2])),
        Case("a repeated label: T = 6, C = 3, target (2, 2)", _inputs(6, 3, [2, 2]),
             "a skip between equal labels is not allowed: (2, 2) needs a blank between the two 2s"),
        Case("T = 1, C = 3, target (2,): the only path is (2)", _inputs(1, 3, [2]),
             "with one frame the walk starts and ends in state 1: start in state 0 or 1, end in L'-1 or L'-2"),
        Case("empty target: T = 4, C = 3 (the only path is all blanks)", _inputs(4, 3, []),
             "with no labels, l' = (blank,): L' = 1 state, and p is the product of the blank's probabilities"),
        Case("blank is the last class: T = 7, C = 5, blank = 4, target (0, 1, 0)", _inputs(7, 5, [0, 1, 0], blank=4),
             "use the blank argument, not 0: here class 0 is a label and class 4 the blank"),
        Case("one alignment: T = 3, C = 4, target (1, 2, 3) (no room for a blank)", _inputs(3, 4, [1, 2, 3]),
             "with T = S the only path is the target itself: it needs the skips between different labels"),
        Case("impossible: T = 2, target (1, 1) needs 3 frames (answer -inf)", _inputs(2, 3, [1, 1]),
             "no walk reaches a final state: return -inf (log 0), and never NaN"),
        Case("a long utterance: T = 600, C = 6, 30 labels with a repeat", _inputs(600, 6, _long_target),
             "p is about e^-950 here, below the smallest float64 (e^-745): keep log alpha and combine with "
             "logaddexp / logsumexp"),
    ]

    def reference(self, inputs):
        lp, targets, blank = inputs["log_probs"], inputs["targets"], inputs["blank"]
        loss = F.ctc_loss(tw.Tensor(lp, dtype=tw.float64), np.array(targets, dtype=np.int64), [lp.shape[0]],
                          [len(targets)], blank=blank, reduction="none").item()
        return -loss

    def run(self, module):
        for i, case in enumerate(self.cases):
            inputs = case.make(np.random.default_rng(i))
            args = (inputs["log_probs"].copy(), list(inputs["targets"]), inputs["blank"])
            result = self.call("forward", case, inputs, lambda a=args: module.ctc_log_likelihood(*a))
            if result is None:
                raise Failure("forward", case.label, "ctc_log_likelihood returned None",
                              "return log p as a float (did you forget `return`?)")
            try:
                mine = float(result.item() if hasattr(result, "item") else result)
            except (TypeError, ValueError):
                raise Failure("forward", case.label, f"ctc_log_likelihood returned {type(result).__name__}, "
                              "not a number", "return log p as a float") from None
            expected = self.reference(inputs)
            if _same(mine, expected):
                continue
            shown = "-inf" if expected <= IMPOSSIBLE else f"{expected:.10g}"
            what = f"log p(l | x): yours {mine:.10g}, expected {shown}"
            raise Failure("forward", case.label, what, self.hint(inputs, mine, expected) or case.hint)

    def hint(self, inputs, mine, expected):
        if np.isnan(mine):
            return ("NaN: a logsumexp whose entries are all -inf subtracts max = -inf from -inf; use np.logaddexp, "
                    "or shift by 0 when the max is -inf")
        lp, targets, blank = inputs["log_probs"], inputs["targets"], inputs["blank"]
        if mine <= IMPOSSIBLE < expected and lp.shape[0] >= 100:
            return ("yours is -inf but p > 0: over hundreds of frames the probabilities underflow; keep log alpha "
                    "and combine with logaddexp / logsumexp")
        for flags, text in VARIANTS:
            wrong = _variant(lp, targets, blank, **flags)
            if _same(mine, wrong) and not _same(expected, wrong):
                return text
        if blank != 0 and _same(mine, _variant(lp, targets, 0)):
            return "use the blank argument, not 0"
        if mine > 0:
            return "a log-probability is at most 0 (the log_probs are normalised): some paths are counted twice"
        return ""
