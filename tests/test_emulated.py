"""The emulated device: as strict as CuPy where CuPy is stricter than NumPy, and a counter of what a GPU would pay
(kernel launches, device-to-host syncs; ``backend.count_device_work``, rules in tinyw2v2/_emulated.py); and the real
pretraining loop on it: its syncs per step, exact resume with dropout."""
import operator

import numpy as np
import pytest

from tinyw2v2 import backend, optim


def dev(a):
    return backend.to_device(np.asarray(a), "emulated")


XP = backend.get_array_module(dev(0.0))


# --- the counter --------------------------------------------------------------------------------


def test_a_small_program_gives_known_counts():
    a = dev(np.arange(12, dtype=np.float32).reshape(3, 4))
    idx = dev(np.array([0, 2]))
    with backend.count_device_work() as work:
        b = a * 2.0               # 1: a ufunc with a Python scalar
        b += 1                    # 1: in place (out=)
        b.reshape(4, 3)           # 0: a view
        b.T.reshape(12)           # 1: this reshape must copy
        b.sum(axis=0)             # 1: a reduction
        XP.zeros(3)               # 1: a fill
        XP.empty(3)               # 0: CuPy allocates from its pool, launches nothing
        b @ b.T                   # 1: one GEMM (a transposed 2-d operand needs no copy)
        b[1:, ::2]                # 0: basic indexing is a view
        b[idx]                    # 1: a take
        XP.broadcast_to(b, (2, 3, 4))  # 0: a view
        XP.where(b > 3, b, 0.0)   # 2: the comparison and the three-argument where
    assert (work.launches, work.syncs, work.uploads) == (9, 0, 0), work.table()
    assert work.by_name["multiply"] == 1 and work.by_name["matmul"] == 1


def test_syncs_are_counted_where_cupy_reads_the_device():
    a = dev(np.arange(6.0))
    mask = a > 2.0
    with backend.count_device_work() as work:
        float(a.sum())            # float(): 1
        a[mask]                   # boolean-mask indexing reads the mask count back: 1
        a[mask] = 0.0             # and so does boolean-mask assignment: 1
        XP.nonzero(mask)          # 1
        XP.where(mask)            # one-argument where: 1
        backend.to_numpy(a)       # an explicit host copy: 1
        int(a[2])                 # 1
        bool(mask.any())          # 1
        a.max().item()            # 1
        XP.copyto(a, 1.0, where=mask)  # 0: copyto with a mask does not sync
    assert work.syncs == 9, work.table()
    assert work.syncs_by_name["x[mask]"] == 1 and work.syncs_by_name["x[mask] = v"] == 1
    assert work.syncs_by_name["float()"] == 1


def test_matmul_counts_the_copies_and_batch_pointers_cupy_makes():
    x, w = dev(np.ones((2, 5, 4), np.float32)), dev(np.ones((4, 3), np.float32))
    with backend.count_device_work() as broadcast:
        x @ w                                  # a broadcast batch: 3 x (3 - 2) pointer kernels + 1 GEMM
    with backend.count_device_work() as folded:
        (x.reshape(10, 4) @ w).reshape(2, 5, 3)  # folded to one 2-d GEMM
    with backend.count_device_work() as strided:
        x @ x.swapaxes(1, 2)                    # a >2-d product copies its non-C-contiguous operand
    assert (broadcast.launches, folded.launches, strided.launches) == (4, 1, 2)


def test_einsum_is_counted_as_cupy_runs_it():
    a = dev(np.ones((6, 4), np.float32))
    with backend.count_device_work() as rowdot:
        XP.einsum("nd,nd->n", a, a)             # batch n, contract d: one batched GEMM, no copy
    with backend.count_device_work() as total:
        XP.einsum("nd->n", a)                   # a unary sum
    assert (rowdot.launches, total.launches) == (1, 1)


def test_only_emulated_device_work_is_counted_and_blocks_nest():
    h = np.ones(4)
    with backend.count_device_work() as outer:
        (h * 2).sum()                           # NumPy: not counted
        with backend.count_device_work() as inner:
            dev(h) + 1                          # an upload and an add
        float(dev(h).sum())
    assert (inner.launches, inner.uploads, inner.syncs) == (2, 1, 0)
    assert (outer.launches, outer.uploads, outer.syncs) == (4, 2, 1)
    dev(h) + 1                                  # outside any block: nothing to count into
    assert outer.launches == 4


# --- as strict as CuPy ----------------------------------------------------------------------------


def test_device_arrays_have_no_index():
    n = dev(np.array(3))
    with pytest.raises(TypeError):
        operator.index(n)
    with pytest.raises(TypeError):
        range(n)
    with pytest.raises(TypeError):
        [1, 2, 3, 4][n]
    with backend.count_device_work() as work:
        assert list(range(int(n))) == [0, 1, 2]   # int() is the explicit sync
    assert work.syncs == 1


def test_the_emulated_random_stream_differs_from_numpys():
    a = backend.default_rng(0, "emulated").random(8)
    b = np.random.default_rng(0).random(8)
    assert not np.allclose(backend.to_numpy(a), b)
    again = backend.default_rng(0, "emulated").random(8)        # but it is reproducible on its device
    assert np.array_equal(backend.to_numpy(a), backend.to_numpy(again))
    rng = backend.default_rng(0, "emulated")
    assert backend.to_numpy(rng.random((2, 3), dtype=np.float32)).dtype == np.float32
    for name in ("normal", "choice", "permutation", "shuffle"):   # not in CuPy's Generator
        with pytest.raises(AttributeError):
            getattr(rng, name)


def test_a_boolean_mask_mixed_with_integer_indices_raises():
    a = dev(np.arange(12.0).reshape(3, 4))
    with pytest.raises(IndexError, match="boolean mask mixed with integer-array"):
        a[dev(np.array([True, False, True])), dev(np.array([0, 1]))]
    with pytest.raises(IndexError):
        a[dev(np.array([True, False, True])), dev(np.array([0, 1]))] = 0.0
    a[dev(np.array([True, False, True])), 1:]    # with basic indices it is fine


def test_a_zero_d_integer_index_gives_a_copy_as_on_cupy():
    a = dev(np.arange(6.0).reshape(2, 3))
    row = a[dev(np.array(1))]
    row[0] = -1.0
    assert backend.to_numpy(a)[1, 0] == 3.0


def test_scatter_add_takes_only_the_dtypes_cupy_accepts():
    for dtype in (np.float32, np.float64, np.int32):           # float64 too: CuPy's atomicAdd has it
        t = dev(np.zeros(3, dtype))
        backend.scatter_add(t, dev(np.array([0, 0, 2])), dev(np.ones(3, dtype)))
        assert backend.to_numpy(t).tolist() == [2, 0, 1]
    for dtype in (np.int64, np.bool_):
        with pytest.raises(TypeError, match="scatter_add"):
            backend.scatter_add(dev(np.zeros(3, dtype)), dev(np.array([0, 1])), dev(np.ones(2, dtype)))


def test_numpy_names_cupy_lacks_are_refused():
    for name in ("errstate", "seterr", "nditer", "ma"):
        with pytest.raises(AttributeError, match="CuPy"):
            getattr(XP, name)
    with pytest.raises(AttributeError):
        dev(np.ones(2)).ctypes                  # a host pointer
    with pytest.raises(TypeError, match="host integers"):
        XP.zeros(dev(np.array(3)))              # a shape must be read to the host first


def test_what_numpy_has_and_cupy_lacks_is_refused():
    """The emulated device offers CuPy 14.2's names only (tinyw2v2/_cupy_api.py, read off CuPy itself): in the
    namespace, on arrays, through NumPy functions (__array_function__) and ufuncs and their methods."""
    from tinyw2v2 import _cupy_api

    a = dev(np.arange(6, dtype=np.float32).reshape(2, 3))
    for name in ("insert", "block", "geomspace", "nanquantile", "unstack", "vecdot", "spacing", "histogram_bin_edges"):
        assert hasattr(np, name) and name not in _cupy_api.NAMESPACE
        with pytest.raises(AttributeError, match="has no"):
            getattr(XP, name)
    for name in ("resize", "setflags", "getfield", "to_device", "ctypes"):
        assert hasattr(np.ndarray, name)
        with pytest.raises(AttributeError, match="no ."):
            getattr(a, name)
    with pytest.raises(TypeError, match="cupy.insert"):                  # NumPy functions map to CuPy's
        np.insert(a, 0, 1.0, axis=1)
    with pytest.raises(TypeError, match="cupy.unstack"):
        np.unstack(a)
    with pytest.raises(TypeError, match="cupy.linalg.matrix_norm"):       # ... in their submodule
        np.linalg.matrix_norm(a)
    with pytest.raises(TypeError, match="spacing"):                      # a NumPy ufunc CuPy lacks
        np.spacing(a)
    with pytest.raises(NotImplementedError, match="maximum.reduce"):     # CuPy reduces with add / multiply only
        np.maximum.reduce(a, axis=0)
    with pytest.raises(NotImplementedError, match="multiply.at"):
        np.multiply.at(a, dev(np.array([0])), 2.0)
    # what CuPy has still works
    assert backend.to_numpy(np.add.reduce(a, axis=0)).tolist() == [3, 5, 7]
    assert backend.to_numpy(np.maximum.outer(a[0], a[0])).shape == (3, 3)
    np.maximum.at(a, dev(np.array([0])), 100.0)
    assert float(np.linalg.norm(a)) > 100 and backend.to_numpy(XP.cumsum(a, axis=1)).shape == (2, 3)
    assert float(a.mT.sum()) == float(a.sum())
    assert set(_emulated_generator_methods()) == _cupy_api.GENERATOR


def _emulated_generator_methods():
    from tinyw2v2._emulated import GENERATOR_METHODS

    return GENERATOR_METHODS


def test_the_cupy_name_list_holds_for_the_cupy_installed():
    """On a machine with CuPy (the GPU machines), every name the emulated device allows exists in CuPy."""
    cupy = pytest.importorskip("cupy")
    from tinyw2v2 import _cupy_api

    if cupy.__version__ != _cupy_api.VERSION:
        pytest.skip(f"CuPy {cupy.__version__} here, the list is of {_cupy_api.VERSION}")
    assert _cupy_api.NAMESPACE <= set(dir(cupy))
    assert _cupy_api.NDARRAY <= set(dir(cupy.ndarray))
    assert _cupy_api.GENERATOR <= set(dir(cupy.random.Generator))
    for path, names in _cupy_api.SUBMODULES.items():
        module = cupy
        for part in path.split("."):
            module = getattr(module, part)
        assert names <= set(dir(module)), path


# --- the budgets of one training step ------------------------------------------------------


def test_a_tiny_training_step_meets_the_launch_and_sync_budgets():
    """The second step of the tiny preset (8 x 1 s crops, the pretraining defaults) on the emulated device, phase by
    phase as the training loop runs it (guarded_update), against the GPU budgets: at most 1,000 launches in all,
    clipping and AdamW a handful for all 90 parameter tensors together, GELU 1 kernel forward, LayerNorm and
    GroupNorm 3 forward, and 2 device-to-host reads (the NaN/Inf guard). 793 launches when last counted, 821 with
    the 28 of the metrics the loop keeps on the device (benchmarks/device_work.py, docs/performance.md)."""
    from tinyw2v2.models.wav2vec2 import Wav2Vec2ForPreTraining
    from tinyw2v2.train.pretrain import PretrainArgs, build_config

    args = PretrainArgs(device="emulated")
    model = Wav2Vec2ForPreTraining(build_config(args), seed=0).to("emulated").train()
    opt = optim.AdamW(model.parameters(), lr=args.lr, betas=tuple(args.betas), eps=args.adam_eps,
                      weight_decay=args.weight_decay)
    x = (0.1 * np.random.default_rng(0).standard_normal((8, 16000))).astype(np.float32)
    counts = {}
    for step in range(2):                       # the second step is counted: AdamW's state exists by then
        model.manual_seed([0, step, 1])
        mask, negatives = model.sample_targets(8, model.num_frames(16000))
        with backend.count_device_work() as forward:
            out = model(x, mask_time_indices=mask, sampled_negative_indices=negatives)
            loss = out.loss * (1.0 / out.num_masked)
        with backend.count_device_work() as backward:
            opt.zero_grad()
            loss.backward()
        with backend.count_device_work() as clip:
            norm = opt.clip_grad_norm_(args.clip_norm)
        with backend.count_device_work() as guard:
            assert np.isfinite(float(loss)) and np.isfinite(float(norm))
        with backend.count_device_work() as adamw:
            opt.step()
        counts = {"forward": forward, "backward": backward, "clip": clip, "guard": guard, "adamw": adamw}
    total = sum(w.launches for w in counts.values())
    assert total <= 1000, {k: w.launches for k, w in counts.items()}
    assert counts["clip"].launches <= 4 and counts["adamw"].launches <= 4, (counts["clip"].table(5),
                                                                             counts["adamw"].table(5))
    fwd = counts["forward"].by_name
    assert fwd["tinyw2v2_gelu_none_d"] == 12 and "erf" not in " ".join(fwd)          # 7 convs, the positional conv, 4 FFNs
    assert fwd["tinyw2v2_norm_rstd"] == fwd["tinyw2v2_norm_affine"] == fwd["np.mean"] == 11  # 1 GN + 10 LN
    assert counts["guard"].syncs == 2                                                 # float(loss), float(norm)
    assert sum(w.syncs for w in counts.values()) == 2, {k: w.syncs_by_name for k, w in counts.items()}


def test_a_logged_line_reads_the_device_once():
    """The interval means of ~10 metrics kept on the device come back in one transfer per logged line."""
    from tinyw2v2.train.common import IntervalMeans

    m = IntervalMeans()
    for step in range(3):
        m.add({f"metric{i}": backend.to_device(np.array(step + i, np.float32), "emulated") for i in range(10)}
              | {"lr": 1e-3}, maxima=("metric0",))
    with backend.count_device_work() as work:
        means = m.pop()
    assert work.syncs == 1, work.syncs_by_name
    assert means["metric3"] == 4.0 and means["metric0_batch_max"] == 2.0 and means["lr"] == 1e-3


# --- the real training loop on the emulated device --------------------------------------------------


def _small_run():
    """The small corpus, config and run arguments of tests/test_pretrain.py."""
    import test_pretrain

    return test_pretrain


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tinyw2v2.data import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, num_speakers=3, utterances_per_speaker=6, seed=0, heldout_speakers=1)
    return root


def test_the_real_pretraining_loop_reads_the_device_twice_a_step_and_once_more_per_logged_line(corpus, tmp_path,
                                                                                                monkeypatch):
    """tinyw2v2.train.pretrain.pretrain itself, not a copy of its step: the syncs between the starts of two steps
    (counted where the loop draws the step's batch) are the guard's 2, plus 1 on a step that writes a logged line.
    The first interval (set-up, the step-0 evaluation) and the last (the final evaluation and checkpoint) are left
    out: they are not per step."""
    from tinyw2v2.train import pretrain as loop

    steps, log_every = 7, 3
    at_step_start = []
    draw = loop.BatchSampler.__call__

    def counted_draw(self, step):
        at_step_start.append((step, work.syncs, work.launches))
        return draw(self, step)

    monkeypatch.setattr(loop.BatchSampler, "__call__", counted_draw)
    args = _small_run().args_for(corpus, tmp_path / "run", device="emulated", steps=steps, log_every=log_every,
                                 eval_every=100, checkpoint_every=100)
    with backend.count_device_work() as work:
        result = loop.pretrain(args)
    assert result["metrics"]["step"] == steps
    assert [s for s, _, _ in at_step_start] == list(range(steps))
    per_step = {s + 1: (syncs1 - syncs0, launches1 - launches0)            # step s+1 runs between draws s and s+1
                for (s, syncs0, launches0), (_, syncs1, launches1) in zip(at_step_start, at_step_start[1:])}
    for step, (syncs, launches) in per_step.items():          # steps 1 .. steps-1, each ended by the next draw
        logged = step % log_every == 0
        assert syncs <= 2 + logged, (step, syncs, work.syncs_by_name)
        assert syncs >= 2                                     # the guard's float(loss), float(norm) are counted
        assert launches <= 1000, (step, launches)
    assert sum(s for s, _ in per_step.values()) == 2 * (steps - 1) + (steps - 1) // log_every


def test_exact_resume_on_the_emulated_device_with_dropout(corpus, tmp_path):
    """Dropout on (so the counter-based device stream is drawn at every step), stopped at step 3 and resumed: the
    metrics and the weights equal the uninterrupted run's bit for bit."""
    from tinyw2v2 import nn
    from tinyw2v2.train.pretrain import pretrain, read_metrics

    small = _small_run()
    dropout = {"hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1, "feat_proj_dropout": 0.1}

    def args(out, **kw):
        a = small.args_for(corpus, tmp_path / out, device="emulated", steps=6, log_every=1, eval_every=3,
                           checkpoint_every=100, **kw)
        a.overrides.update(dropout)
        return a

    pretrain(args("full"))
    pretrain(args("part", stop_at=3))
    assert read_metrics(tmp_path / "part" / "metrics.jsonl")[-1]["step"] == 3
    pretrain(args("part", resume=True))
    full = small.strip_time(read_metrics(tmp_path / "full" / "metrics.jsonl"))
    assert small.strip_time(read_metrics(tmp_path / "part" / "metrics.jsonl")) == full
    assert [r["step"] for r in full] == list(range(7))
    a, meta = nn.load_arrays(tmp_path / "full" / "checkpoint.npz")
    b, _ = nn.load_arrays(tmp_path / "part" / "checkpoint.npz")
    assert meta["config"]["hidden_dropout"] == 0.1 and a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    pretrain(args("other", seed=1))                           # and the draws matter: another seed, other numbers
    assert small.strip_time(read_metrics(tmp_path / "other" / "metrics.jsonl"))[1:] != full[1:]
