"""The exercises' checker (exercises/): it passes every solution, reports an untouched stub as "not written yet",
and catches a planted mistake in each exercise with a message that names the stage (forward or backward), the
case's shapes, the worst entry and the hint for that mistake."""
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # exercises/ is a folder of the repository, not part of the installed package
    sys.path.insert(0, str(ROOT))

from exercises import EXERCISES, check  # noqa: E402
from exercises.checking import main  # noqa: E402
from exercises.solutions import attention, contrastive, conv1d, gelu, gumbel_softmax, layer_norm  # noqa: E402
from tinyw2v2.backend import erf  # noqa: E402


def planted(base, **methods):
    """A subclass of a solution's Function with one method replaced by a wrong one."""
    return type(f"Planted{base.__name__}", (base,), methods)


# --- the planted mistakes: one wrong term each -----------------------------------------------------------------


def gelu_without_x_phi(self, g):
    (x,) = self.saved_tensors
    return g * (1 + erf(x / math.sqrt(2))) / 2                  # dy/dx = Phi(x): the x phi(x) term is missing


def layer_norm_without_mean(self, g):
    xhat, rstd, weight = self.saved_tensors
    g2 = g.reshape(xhat.shape)
    dxhat = g2 * weight
    dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))   # - mean(dxhat) is missing
    return dx.reshape(self.shape), (g2 * xhat).sum(axis=0), g2.sum(axis=0)


def attention_without_row_term(self, g):
    q, k, v, p = self.saved_tensors
    dv = p.swapaxes(-1, -2) @ g
    ds = p * (g @ v.swapaxes(-1, -2))                            # dS = P * dP: the softmax's row term is missing
    return (ds @ k) * self.scale, (ds.swapaxes(-1, -2) @ q) * self.scale, dv


def gumbel_identity_backward(self, dy):
    return dy, None                                              # passes dy itself, not the soft gradient


def gumbel_forward_without_noise(self, x, g, tau=1.0, hard=True):
    return gumbel_softmax.GumbelSoftmax.forward(self, x, np.zeros_like(g), tau, hard)   # ignores the noise


def contrastive_without_target(self, g):
    x, y, nx, ny, s, p = self.saved_tensors
    ds = g * p / self.tau                                        # p_c - [c = 0]: the -1 at the positive is missing
    dx = np.einsum("cn,cnd->nd", ds / (nx * ny), y) - x * ((ds * s).sum(axis=0) / nx ** 2)[:, None]
    dy = (ds / (nx * ny))[:, :, None] * x - y * (ds * s / ny ** 2)[:, :, None]
    return dx, dy[0], dy[1:]


def conv1d_col2im_assigns(self, gy):
    cols, W = self.saved_tensors
    B, C, T, K, stride, padding = self.sizes
    O = W.shape[0]
    gY = gy.transpose(1, 0, 2).reshape(O, -1)
    T_out = gy.shape[2]
    dcols = (W.T @ gY).reshape(C, K, B, T_out)
    dxpad = np.zeros((B, C, T + 2 * padding))
    for k in range(K):                                           # = instead of +=: overlapping windows overwrite
        dxpad[:, :, k:k + stride * (T_out - 1) + 1:stride] = dcols[:, k].transpose(1, 0, 2)
    db = gy.sum(axis=(0, 2)) if self.needs_input_grad[2] else None
    return dxpad[:, :, padding:padding + T], (gY @ cols.T).reshape(O, C, K), db


def conv1d_flipped_kernel(self, x, w, bias=None, stride=1, padding=0):
    return conv1d.Conv1d.forward(self, x, w[:, :, ::-1].copy(), bias, stride, padding)   # a convolution, flipped


def ctc_skips_repeats(log_probs, targets, blank=0):
    """The solution's recursion, but a skip is allowed between two equal labels."""
    ext = np.array([blank] + [x for label in targets for x in (int(label), blank)])
    L = len(ext)
    skip = np.zeros(L, dtype=bool)
    skip[2:] = ext[2:] != blank                                  # missing: & (ext[2:] != ext[:-2])
    alpha = np.full(L, -np.inf)
    alpha[0] = log_probs[0, ext[0]]
    if L > 1:
        alpha[1] = log_probs[0, ext[1]]
    for t in range(1, log_probs.shape[0]):
        advance = np.concatenate([[-np.inf], alpha[:-1]])
        jump = np.where(skip, np.concatenate([[-np.inf, -np.inf], alpha[:-2]])[:L], -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, advance), jump) + log_probs[t, ext]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if L > 1 else alpha[-1])


ns = types.SimpleNamespace
PLANTED = {  # id: (exercise, module, stage, a piece of the failing case's label, a piece of the hint)
    "gelu: dy/dx = Phi": ("gelu", ns(Gelu=planted(gelu.Gelu, backward=gelu_without_x_phi)),
                          "backward", "x (10,)", "product rule"),
    "layer_norm: no mean(dxhat)": ("layer_norm", ns(LayerNorm=planted(layer_norm.LayerNorm, backward=layer_norm_without_mean)),
                                   "backward", "x (2, 3, 5)", "did you forget the mean(dxhat) term?"),
    "attention: no softmax row term": ("attention", ns(Attention=planted(attention.Attention, backward=attention_without_row_term)),
                                       "backward", "q (3, 4), k (5, 4), v (5, 2)", "row term is missing"),
    "gumbel_softmax: identity backward": ("gumbel_softmax", ns(GumbelSoftmax=planted(
        gumbel_softmax.GumbelSoftmax, backward=gumbel_identity_backward)), "backward", "x (4, 5)", "straight-through"),
    "gumbel_softmax: noise ignored": ("gumbel_softmax", ns(GumbelSoftmax=planted(
        gumbel_softmax.GumbelSoftmax, forward=gumbel_forward_without_noise)), "forward", "x (4, 5)", "noise g is missing"),
    "contrastive: no -1 at the target": ("contrastive", ns(ContrastiveLoss=planted(
        contrastive.ContrastiveLoss, backward=contrastive_without_target)), "backward", "N = 3 frames", "-1 at the positive"),
    "conv1d: col2im assigns": ("conv1d", ns(Conv1d=planted(conv1d.Conv1d, backward=conv1d_col2im_assigns)),
                               "backward", "x (2, 3, 8), w (4, 3, 3)", "+="),
    "conv1d: flipped kernel": ("conv1d", ns(Conv1d=planted(conv1d.Conv1d, forward=conv1d_flipped_kernel)),
                               "forward", "x (2, 3, 8), w (4, 3, 3)", "cross-correlation"),
    "ctc: skip between repeats": ("ctc", ns(ctc_log_likelihood=ctc_skips_repeats),
                                  "forward", "target (2, 2)", "skip s-2 -> s is not allowed"),
}


@pytest.mark.parametrize("name", list(EXERCISES))
def test_checker_passes_the_solution(name, capsys):
    report = check(name, module="solution")
    assert report, report.message
    assert capsys.readouterr().out.startswith(f"{name}: all {len(EXERCISES[name].cases)} cases pass")


@pytest.mark.parametrize("name", list(EXERCISES))
def test_checker_reports_the_untouched_stub_as_not_written(name):
    if "NotImplementedError" not in (ROOT / "exercises" / f"{name}.py").read_text():
        pytest.skip(f"exercises/{name}.py has been filled in")
    report = check(name, quiet=True)
    assert not report and report.not_written, report.message
    assert report.stage in ("forward", "backward")
    assert f"{name}: not written yet: fill in " in report.message
    assert f"exercises/{name}.py" in report.message and report.case in report.message
    assert "derivation: docs/" in report.message


@pytest.mark.parametrize("key", list(PLANTED))
def test_checker_catches_a_planted_mistake(key):
    name, module, stage, case, hint = PLANTED[key]
    report = check(name, module=module, quiet=True)
    assert not report and not report.not_written
    assert report.stage == stage and case in report.case, report.message
    assert f"{name}: {stage} fails on case \"{report.case}\"" in report.message
    assert "yours " in report.message and "expected " in report.message    # the worst entry, both values
    assert "hint: " in report.message and hint in report.message, report.message


def test_wrong_shapes_name_the_gradient_and_the_fix():
    def no_unpad(self, gy):
        dx, dw, db = conv1d.Conv1d.backward(self, gy)
        p = self.sizes[5]
        return np.pad(dx, ((0, 0), (0, 0), (p, p))), dw, db

    report = check("conv1d", ns(Conv1d=planted(conv1d.Conv1d, backward=no_unpad)), quiet=True)
    assert report.stage == "backward" and "padding 1" in report.case
    assert "gradient of shape (2, 2, 11) for an input of shape (2, 2, 9)" in report.message
    assert "drop the padding" in report.message


def test_a_missing_return_and_a_missing_name_are_explained():
    report = check("layer_norm", ns(LayerNorm=planted(layer_norm.LayerNorm, backward=lambda self, g: None)), quiet=True)
    assert report.stage == "backward" and "forget `return`" in report.message
    report = check("gelu", ns(), quiet=True)
    assert report.stage == "import" and "Gelu not found" in report.message


def test_a_syntax_error_in_the_file_is_reported(tmp_path, monkeypatch):
    (tmp_path / "broken_gelu.py").write_text("def backward(self, g)\n    return g\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    report = check("gelu", module="broken_gelu", quiet=True)
    assert report.stage == "import" and "line 1" in report.message


def test_unknown_exercise_is_refused():
    with pytest.raises(ValueError, match="choose from gelu"):
        check("softmax")


def test_command_line(capsys):
    assert main(["gelu", "ctc", "--solution"]) == 0
    assert "2 of 2 exercises pass" in capsys.readouterr().out
    assert main([]) == 0 and "layer_norm" in capsys.readouterr().out
    if "NotImplementedError" in (ROOT / "exercises" / "gelu.py").read_text():
        assert main(["gelu"]) == 1 and "not written yet" in capsys.readouterr().out


def test_python_dash_m_runs_the_checker():
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "exercises.check", "attention",
                          "--solution"], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("attention: all ")
