"""Data parallelism under ``mpiexec -n 2`` on the CPU (tests/distributed_worker.py is what the ranks run): one update of
two ranks is one update of the whole batch, two ranks are one process with --accumulate 2 bit for bit, the replicas
stay identical, resume is exact, an unreadable file on one rank, a rank that dies. Without mpi4py and an mpiexec
the MPI tests skip; the tests of a run of one process always run."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyw2v2 import nn
from tinyw2v2.data import generate_corpus
from tinyw2v2.train.distributed import DataParallel, launched_rank, launched_size
from tinyw2v2.train.finetune import FinetuneArgs, finetune
from tinyw2v2.train.pretrain import PretrainArgs, pretrain, read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_worker import finetuning_args, pretraining_args

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def mpi_usable() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return MPIEXEC is not None


needs_mpi = pytest.mark.skipif(not mpi_usable(), reason="needs mpi4py and mpiexec (pip install 'tinyw2v2[distributed]')")


def two_ranks(*argv, expect: int | None = 0, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """``mpiexec -n 2 python tests/distributed_worker.py ARGV``, one BLAS thread per rank."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        env.pop(name, None)
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(WORKER), *map(str, argv)], env=env, check=False,
                          capture_output=True, text=True, timeout=timeout)
    if expect is not None:
        assert done.returncode == expect, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, num_speakers=3, utterances_per_speaker=6, seed=0, heldout_speakers=1)
    return root


def arrays(path):
    return nn.load_arrays(path)[0]


def assert_same_checkpoint(a, b):
    a, b = arrays(a), arrays(b)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def assert_same_dumps(a, b):
    a, b = np.load(a), np.load(b)
    assert a.files == b.files
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


# --- a run of one process ----------------------------------------------------------------------------------------


def test_one_process_is_a_world_of_one_whose_micro_batch_is_the_whole_batch():
    assert launched_size() == 1 and launched_rank() == 0
    one = DataParallel()
    x = np.arange(12).reshape(6, 2)
    assert one.main and one.micro_batches == 1 and list(one.shards()) == [0]
    (j, rows), = one.share(x)
    assert j == 0 and rows is x
    assert one.seed(3, 7, 0) == [3, 7, 1]              # the draws of a single process, as before data parallelism
    assert one.sum(5) == 5 and one.max(2.5) == 2.5
    four = DataParallel(accumulate=4)
    assert [j for j, _ in four.share(x)] == [0, 1, 2, 3] and four.seed(3, 7, 2) == [3, 7, 1, 2]
    assert [len(r) for _, r in four.share(x)] == [2, 2, 1, 1]
    with pytest.raises(Exception, match="--accumulate must be at least 1"):
        DataParallel(accumulate=0)


def test_accumulation_averages_over_the_masked_frames_of_all_micro_batches(corpus, tmp_path):
    """--accumulate 2 runs, logs the update's batch and resumes exactly (the MPI tests compare it with 2 ranks)."""
    args = dict(pretraining_args(corpus, tmp_path / "full"), accumulate=2)
    r = pretrain(PretrainArgs(**args))
    records = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert r["metrics"]["step"] == 6 and all(np.isfinite(x["loss"]) for x in records[1:])
    pretrain(PretrainArgs(**pretraining_args(corpus, tmp_path / "one")))
    one = read_metrics(tmp_path / "one" / "metrics.jsonl")
    assert records[1]["num_masked"] > 1.5 * one[1]["num_masked"]      # an update of 2 x 2 crops, not 2
    pretrain(PretrainArgs(**dict(args, out=str(tmp_path / "part"), stop_at=3)))
    pretrain(PretrainArgs(**dict(args, out=str(tmp_path / "part"), resume=True)))
    assert without_time(read_metrics(tmp_path / "part" / "metrics.jsonl")) == without_time(records)
    assert_same_checkpoint(tmp_path / "full" / "checkpoint.npz", tmp_path / "part" / "checkpoint.npz")


# --- two ranks --------------------------------------------------------------------------------------------------


@needs_mpi
def test_one_update_of_two_ranks_is_one_update_of_the_whole_batch_and_of_two_micro_batches(tmp_path):
    """Same masks, negatives and Gumbel noise: 2 ranks x 3 utterances, 1 process x 6 and 1 process x 2 micro-batches
    of 3 give one set of parameters. The big batch agrees within float32 summation order (the diversity loss is off:
    its codebook perplexity is a statistic of each micro-batch, not a sum over utterances); accumulation adds the
    same two float32 gradients as the all-reduce, so it agrees bit for bit."""
    two_ranks("update", tmp_path)
    d, rank1 = np.load(tmp_path / "update.npz"), np.load(tmp_path / "update-rank1.npz")
    names = [k.split("/", 1)[1] for k in d.files if k.startswith("two_ranks/")]
    scale = max(float(np.abs(d[f"whole/{k}"]).max()) for k in names if k.startswith("grad:"))
    for k in names:
        ours, whole, accumulated = d[f"two_ranks/{k}"], d[f"whole/{k}"], d[f"accumulated/{k}"]
        np.testing.assert_array_equal(ours, rank1[k], err_msg=f"{k}: rank 1 differs from rank 0")
        np.testing.assert_array_equal(ours, accumulated, err_msg=f"{k}: --accumulate 2 differs")
        if k.startswith("grad:"):
            np.testing.assert_allclose(ours, whole, rtol=1e-4, atol=1e-6 * scale, err_msg=k)
        elif k != "loss":
            np.testing.assert_allclose(ours, whole, rtol=0, atol=1e-5, err_msg=k)    # 1% of an lr-1e-3 step
    assert abs(float(d["two_ranks/loss"]) - float(d["whole/loss"])) < 1e-6


@needs_mpi
def test_two_ranks_train_one_model_resume_exactly_and_equal_one_process_accumulating_two(corpus, tmp_path):
    two_ranks("pretrain", tmp_path, corpus)
    full, part = tmp_path / "full", tmp_path / "part"
    for step in (0, 3, 6):                                      # the replicas are bit-identical after every update
        assert_same_dumps(full / f"rank0-step{step}.npz", full / f"rank1-step{step}.npz")
    records = read_metrics(full / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 2, 4, 6] and "eval_accuracy" in records[-1]
    assert without_time(read_metrics(part / "metrics.jsonl")) == without_time(records)   # resumed at step 3
    assert_same_checkpoint(full / "checkpoint.npz", part / "checkpoint.npz")
    pretrain(PretrainArgs(**dict(pretraining_args(corpus, tmp_path / "accumulate"), accumulate=2)))
    assert_same_checkpoint(full / "checkpoint.npz", tmp_path / "accumulate" / "checkpoint.npz")
    assert without_time(read_metrics(tmp_path / "accumulate" / "metrics.jsonl")) == without_time(records)


@needs_mpi
def test_finetuning_on_two_ranks_equals_one_process_accumulating_two(corpus, tmp_path):
    two_ranks("finetune", tmp_path / "two", corpus)
    for step in (0, 2, 4):
        assert_same_dumps(tmp_path / "two" / f"rank0-step{step}.npz", tmp_path / "two" / f"rank1-step{step}.npz")
    finetune(FinetuneArgs(**dict(finetuning_args(corpus, tmp_path / "one"), accumulate=2)))
    assert_same_checkpoint(tmp_path / "two" / "checkpoint.npz", tmp_path / "one" / "checkpoint.npz")
    two, one = read_metrics(tmp_path / "two" / "metrics.jsonl"), read_metrics(tmp_path / "one" / "metrics.jsonl")
    assert without_time(two) == without_time(one) and two[-1]["batch_size"] > 0


@needs_mpi
def test_the_command_line_under_mpiexec_reports_once_and_stages_a_devices_gradients_through_the_host(corpus, tmp_path):
    """The emulated device takes the GPU's code paths (the fused AdamW included), its gradients staged through the
    host for MPI, as ranks sharing one GPU do: still one process with --accumulate 2, bit for bit."""
    from tinyw2v2.cli import main

    argv = ["pretrain", "--data", corpus / "train", "--eval-data", corpus / "test", "--steps", "2",
            "--batch-seconds", "2", "--no-progress", "--log-every", "1", "--eval-every", "2", "--eval-utterances", "2",
            "--set", "num_hidden_layers=1", "--device", "emulated",
            "--threads", "1"]    # the ranks run one BLAS thread; OpenBLAS rounds a GEMM differently at 1 and 2
    done = two_ranks("cli", *argv, "--out", tmp_path / "two")
    assert done.stdout.count("plots:") == 1, done.stdout
    assert "data parallel: 2 ranks x 1 micro-batch(es) of 2 crops per update (4 crops); gradients summed by MPI " \
           "through the host; rank 0 on emulated" in done.stdout, done.stdout
    assert main([str(a) for a in argv] + ["--out", str(tmp_path / "one"), "--accumulate", "2"]) == 0
    assert_same_checkpoint(tmp_path / "two" / "checkpoint.npz", tmp_path / "one" / "checkpoint.npz")


def corrupt_folder(corpus, folder: Path, with_corrupt: bool) -> Path:
    folder.mkdir()
    for i, w in enumerate(sorted((corpus / "train").rglob("*.flac"))[:6]):
        (folder / f"good{i}.flac").write_bytes(w.read_bytes())
    if with_corrupt:
        (folder / "corrupt.wav").write_bytes(b"RIFF not really a wav file")
    return folder


@needs_mpi
def test_a_file_one_rank_cannot_read_is_left_out_by_all_or_stops_all_with_strict(corpus, tmp_path):
    folder = corrupt_folder(corpus, tmp_path / "audio", with_corrupt=True)
    argv = ["pretrain", "--data", folder, "--eval-data", corpus / "test", "--steps", "2", "--batch-seconds", "2",
            "--no-progress", "--eval-every", "2", "--checkpoint-every", "1", "--eval-utterances", "2",
            "--set", "num_hidden_layers=1"]
    done = two_ranks("unreadable", "good1.flac", *argv, "--out", tmp_path / "skip")
    assert "rank 1 could not use 1 file(s) that other ranks read (good1)" in done.stdout, done.stdout
    assert "skipped 1 bad files" in done.stdout                     # corrupt.wav: every rank skips it
    _, meta = nn.load_arrays(tmp_path / "skip" / "checkpoint.npz")   # the replicas agreed at every checkpoint
    assert meta["step"] == 2
    strict_folder = corrupt_folder(corpus, tmp_path / "audio-ok", with_corrupt=False)
    argv[argv.index(folder)] = strict_folder
    done = two_ranks("unreadable", "good1.flac", *argv, "--out", tmp_path / "strict", "--strict", expect=2,
                     timeout=60)
    assert done.stderr.count("error: rank 1 of 2:") == 1 and "good1.flac" in done.stderr, done.stderr
    assert "MPI_Abort" not in done.stderr and not (tmp_path / "strict" / "checkpoint.npz").exists()


@needs_mpi
def test_a_rank_that_dies_ends_the_job_with_its_message(corpus, tmp_path):
    argv = ["pretrain", "--data", corpus / "train", "--eval-data", corpus / "test", "--steps", "5",
            "--batch-seconds", "2", "--out", tmp_path / "dies", "--no-progress", "--eval-utterances", "2",
            "--set", "num_hidden_layers=1"]
    done = two_ranks("dies", *argv, expect=None, timeout=60)
    assert done.returncode != 0
    assert "RuntimeError: rank 1 lost its GPU" in done.stderr and "rank 1 of 2 stopped" in done.stderr, done.stderr
