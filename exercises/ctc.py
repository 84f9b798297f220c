"""Exercise 7: the CTC forward (alpha) recursion for one utterance, in log space.

Given log_probs (T, C) (log y_t(c) for each frame t and class c), a target l = (l_1 .. l_S) of labels that are
never ``blank``, return log p(l | x): the log of the sum, over every frame-by-frame path that collapses to l
(merge repeats, then drop blanks), of the product of its frame probabilities.

The recursion runs over the blank-extended labels l' = (blank, l_1, blank, l_2, ..., l_S, blank), L' = 2S + 1
states: between two frames a walk stays, advances by one state, or skips a blank (s-2 -> s) when allowed.
docs/ctc.md, sections 1 ("Alignments and the lattice") and 2 ("The forward variable alpha"), derive it.
Products of hundreds of probabilities underflow: keep alpha as log alpha and add with a logsumexp.

Return a float; -inf when no path exists (a result below -1e29 counts as -inf, for a finite log zero).

Check it:  python -m exercises.check ctc
"""
import numpy as np


def ctc_log_likelihood(log_probs, targets, blank=0):
    """log p(targets | x) for log_probs (T, C) (a NumPy array), targets a sequence of ints, by the alpha recursion."""
    # TODO: the extended labels, alpha at t = 0, the recursion over t, then the two final states
    raise NotImplementedError("fill in ctc_log_likelihood")
