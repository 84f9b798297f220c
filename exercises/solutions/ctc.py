"""Solution of exercise 7: the CTC alpha recursion in log space, one frame at a time over all states."""
import numpy as np


def ctc_log_likelihood(log_probs, targets, blank=0):
    """log p(targets | x) for log_probs (T, C) (a NumPy array), targets a sequence of ints, by the alpha recursion."""
    T = log_probs.shape[0]
    ext = [blank]                                       # l' = (b, l_1, b, l_2, ..., l_S, b)
    for label in targets:
        ext += [int(label), blank]
    ext = np.array(ext)
    L = len(ext)
    # skip s-2 -> s: into a label that differs from the label before the blank
    skip = np.zeros(L, dtype=bool)
    skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])

    alpha = np.full(L, -np.inf)                         # log alpha_0: start in state 0 or 1
    alpha[0] = log_probs[0, ext[0]]
    if L > 1:
        alpha[1] = log_probs[0, ext[1]]
    for t in range(1, T):
        stay = alpha
        advance = np.concatenate([[-np.inf], alpha[:-1]])               # from s - 1
        jump = np.concatenate([[-np.inf, -np.inf], alpha[:-2]])[:L]     # from s - 2
        jump = np.where(skip, jump, -np.inf)
        alpha = np.logaddexp(np.logaddexp(stay, advance), jump) + log_probs[t, ext]
    # end in the last blank or the last label
    return float(np.logaddexp(alpha[-1], alpha[-2]) if L > 1 else alpha[-1])
