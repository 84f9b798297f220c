"""How well discrete codes line up with phones: the measures of the HuBERT paper (Hsu et al., 2021, §IV-E).

Given, for every frame, a phone label y in {0..P-1} and a code z in {0..Z-1} (in wav2vec 2.0, the quantiser's
G codebook choices combined into one code id), with joint distribution p(y, z) estimated by counting:

    phone purity   = E_z [ max_y p(y | z) ]      how pure each code is (a code should mean one phone)
    cluster purity = E_y [ max_z p(z | y) ]      how concentrated each phone is (a phone should get one code)
    PNMI           = I(y; z) / H(y)              phone-normalised mutual information: the share of the
                                                  uncertainty about the phone that the code removes

Many codes make phone purity easy (one code per frame is perfectly pure), so read it next to cluster
purity and the number of codes in use; PNMI is the single number to compare. The chance level comes
from the same codes against shuffled phone labels.
"""
from __future__ import annotations

import numpy as np


def cooccurrence(phones, codes, num_phones: int | None = None, num_codes: int | None = None) -> np.ndarray:
    """Counts (P, Z): how often phone y and code z label the same frame. Inputs: 1-D int arrays."""
    phones, codes = np.asarray(phones, dtype=np.int64).ravel(), np.asarray(codes, dtype=np.int64).ravel()
    if phones.shape != codes.shape:
        raise ValueError(f"phones ({phones.size}) and codes ({codes.size}) must label the same frames")
    P = int(num_phones or phones.max() + 1)
    Z = int(num_codes or codes.max() + 1)
    counts = np.zeros((P, Z), dtype=np.int64)
    np.add.at(counts, (phones, codes), 1)
    return counts


def purity_and_pnmi(counts: np.ndarray) -> dict:
    """Phone purity, cluster purity and PNMI from a (P, Z) co-occurrence count matrix."""
    joint = counts / counts.sum()                       # p(y, z)
    p_y, p_z = joint.sum(1), joint.sum(0)               # marginals
    phone_purity = joint.max(0).sum()                   # sum_z p(z) max_y p(y|z) = sum_z max_y p(y, z)
    cluster_purity = joint.max(1).sum()                 # sum_y max_z p(y, z)
    nz = joint > 0
    mutual = (joint[nz] * np.log(joint[nz] / np.outer(p_y, p_z)[nz])).sum()
    h_y = -(p_y[p_y > 0] * np.log(p_y[p_y > 0])).sum()
    return {"phone_purity": float(phone_purity), "cluster_purity": float(cluster_purity),
            "pnmi": float(mutual / h_y) if h_y > 0 else 0.0, "codes_used": int((p_z > 0).sum())}


def code_phone_scores(phones, codes, num_phones=None, num_codes=None, shuffles: int = 3, seed: int = 0) -> dict:
    """The three measures, plus ``chance_pnmi``: the mean PNMI of the same codes against shuffled phones."""
    phones, codes = np.asarray(phones).ravel(), np.asarray(codes).ravel()
    scores = purity_and_pnmi(cooccurrence(phones, codes, num_phones, num_codes))
    rng = np.random.default_rng(seed)
    chance = [purity_and_pnmi(cooccurrence(rng.permutation(phones), codes, num_phones, num_codes))["pnmi"]
              for _ in range(shuffles)]
    scores["chance_pnmi"] = float(np.mean(chance))
    return scores


def plot_cooccurrence(counts: np.ndarray, phone_names=None, ax=None, title=None, max_codes: int = 64):
    """Image of p(code | phone) for the most used codes, codes sorted by their most likely phone."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    used = np.argsort(-counts.sum(0))[:max_codes]
    sub = counts[:, used]
    order = np.lexsort((-sub.max(0), sub.argmax(0)))   # group codes by dominant phone
    sub = sub[:, order]
    cond = sub / np.maximum(sub.sum(1, keepdims=True), 1)  # p(z | y), rows = phones
    image = ax.imshow(cond, aspect="auto", cmap="magma", interpolation="nearest", vmin=0.0)
    ax.figure.colorbar(image, ax=ax, label="p(code | phone)", fraction=0.04, pad=0.02)
    ax.set_xlabel(f"code (top {len(used)} by use, grouped by dominant phone)")
    ax.set_ylabel("phone")
    if phone_names is not None:
        ax.set_yticks(range(len(phone_names)))
        ax.set_yticklabels(phone_names, fontsize=7)
    if title:
        ax.set_title(title)
    return ax
