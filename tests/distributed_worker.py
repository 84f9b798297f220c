"""What tests/test_distributed.py runs under ``mpiexec -n 2``: ``python tests/distributed_worker.py MODE OUT [ARGS]``.

    update OUT            one update on two ranks against one process (the whole batch; --accumulate 2), targets and
                          Gumbel noise given explicitly; writes OUT/update.npz (rank 0) and OUT/update-rank1.npz
    pretrain OUT CORPUS   6 steps, then 3 + resume; every rank's parameters at each checkpoint in OUT/rank{r}-*.npz
    finetune OUT CORPUS   4 steps from scratch, with the same parameter dumps
    cli ARGV...           ``tinyw2v2 ARGV`` (the CLI's exit status)
    unreadable FILE ARGV  the CLI, with FILE unreadable on rank 1 only (a flaky network filesystem)
    dies ARGV...          the CLI, rank 1 raising in its third training forward
"""
import sys
from pathlib import Path

import numpy as np

from tinyw2v2 import optim
from tinyw2v2.cli import main as cli
from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining
from tinyw2v2.train import distributed
from tinyw2v2.train.common import guarded_update
from tinyw2v2.train.distributed import DataParallel, MPIDataParallel
from tinyw2v2.train.pretrain import forward_backward

SMALL = {"conv_dim": (16,) * 7, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 2,
         "num_codevectors_per_group": 8, "codevector_dim": 16, "proj_codevector_dim": 16, "num_negatives": 5}


DUMPS = {"to": None}   # where dump_replicas writes


def dump_replicas(out: Path) -> None:
    """From now on every rank writes its parameters into ``out`` wherever the loops check that the replicas agree
    (at the start and at each checkpoint): rank{r}-step{s}.npz."""
    if DUMPS["to"] is None:
        original = MPIDataParallel.check_replicas

        def check_and_dump(self, params, step):
            np.savez(DUMPS["to"] / f"rank{self.rank}-step{step}.npz", *[np.asarray(p.data) for p in params])
            return original(self, params, step)

        MPIDataParallel.check_replicas = check_and_dump
    DUMPS["to"] = out


def one_update(parallel, micro_batches, out: Path) -> dict:
    """The parameters after one AdamW update from ``micro_batches`` [(seed, x, inputs)], the loop's own pieces."""
    config = Wav2Vec2Config.tiny(**dict(SMALL, layerdrop=0.0, diversity_loss_weight=0.0))
    model = Wav2Vec2ForPreTraining(config, seed=0).train()
    opt = optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    opt.zero_grad()
    loss = parallel.sum(sum(float(loss) for _, loss in forward_backward(model, micro_batches, parallel)))
    guarded_update(loss, opt, 10.0, 0, out / "none.npz", None, parallel.sum_gradients)
    grads = {f"grad:{name}": np.asarray(p.grad) for name, p in model.named_parameters()}
    return {**{name: np.asarray(p.data) for name, p in model.named_parameters()}, **grads, "loss": np.array(loss)}


def update(out: Path) -> None:
    """One update of 2 ranks x 3 utterances, of 1 process x 6, and of 1 process x 2 micro-batches of 3."""
    from mpi4py import MPI

    parallel = MPIDataParallel(MPI, 1, "cpu")
    config = Wav2Vec2Config.tiny(**SMALL)
    rng = np.random.default_rng(7)
    B, b, L = 6, 3, 8000
    T = config.num_frames(L)
    x = (0.1 * rng.standard_normal((B, L))).astype(np.float32)                      # the whole batch (B, L)
    probe = Wav2Vec2ForPreTraining(config, seed=0)
    probe.manual_seed(11)
    mask, negatives = probe.sample_targets(B, T)                                     # (B, T), (B, T, K)
    G, V = config.num_codevector_groups, config.num_codevectors_per_group
    noise = -np.log(-np.log(rng.uniform(1e-6, 1.0, size=(B, T, G, V)))).astype(np.float32)  # Gumbel (B, T, G, V)

    def rows(j, size):
        """Micro-batch j of the batch cut into blocks of ``size`` rows; negatives index its own b*T frames."""
        s = slice(j * size, (j + 1) * size)
        return ([0, j], x[s], {"mask_time_indices": mask[s], "sampled_negative_indices": negatives[s] - j * size * T,
                               "gumbel_noise": noise[s]})

    two_ranks = one_update(parallel, [rows(parallel.rank, b)], out)
    if parallel.rank == 1:
        np.savez(out / "update-rank1.npz", **two_ranks)
        return
    whole = one_update(DataParallel(), [rows(0, B)], out)
    accumulated = one_update(DataParallel(accumulate=2), [rows(0, b), rows(1, b)], out)
    np.savez(out / "update.npz", **{f"two_ranks/{k}": v for k, v in two_ranks.items()},
             **{f"whole/{k}": v for k, v in whole.items()}, **{f"accumulated/{k}": v for k, v in accumulated.items()})


def pretrain_runs(out: Path, corpus: Path) -> None:
    from tinyw2v2.train.pretrain import PretrainArgs, pretrain

    def run(name, **kw):
        (out / name).mkdir(exist_ok=True)
        dump_replicas(out / name)
        return pretrain(PretrainArgs(**{**pretraining_args(corpus, out / name), **kw}))

    run("full")
    run("part", stop_at=3)
    run("part", resume=True)


def pretraining_args(corpus: Path, out: Path) -> dict:
    """Six steps of the SMALL model on the 3-speaker corpus (tests/test_distributed.py uses them too)."""
    return dict(data=str(corpus / "train"), eval_data=str(corpus / "test"), overrides=dict(SMALL), steps=6,
                batch_seconds=2.0, crop_seconds=1.0, log_every=2, eval_every=3, checkpoint_every=3, eval_utterances=4,
                eval_batch_seconds=2.0, out=str(out), progress=False, lr=5e-4)


def finetuning_args(corpus: Path, out: Path) -> dict:
    return dict(data=str(corpus / "train"), eval_data=str(corpus / "test"), overrides=dict(SMALL), steps=4,
                batch_seconds=3.0, log_every=2, eval_every=4, checkpoint_every=2, eval_utterances=2, out=str(out),
                progress=False, lr=1e-3, labels=8, export=False)


def finetune_run(out: Path, corpus: Path) -> None:
    from tinyw2v2.train.finetune import FinetuneArgs, finetune

    dump_replicas(out)
    finetune(FinetuneArgs(**finetuning_args(corpus, out)))


def unreadable_on_rank_1(name: str) -> None:
    """Make the audio file ``name`` fail to load on rank 1 only."""
    from tinyw2v2.data import datasets

    if distributed.launched_rank() != 1:
        return
    original = datasets.load_audio

    def flaky(path, *a, **kw):
        if Path(path).name == name:
            raise datasets.AudioError(f"{path}: Input/output error (rank 1's mount)")
        return original(path, *a, **kw)

    datasets.load_audio = flaky


def dies_on_rank_1() -> None:
    """Rank 1 raises in its third training forward."""
    distributed.FAILURE_WAIT_SECONDS = 1.0
    if distributed.launched_rank() != 1:
        return
    original, calls = Wav2Vec2ForPreTraining.forward, [0]

    def forward(self, *a, **kw):
        if self.training:
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("rank 1 lost its GPU")
        return original(self, *a, **kw)

    Wav2Vec2ForPreTraining.forward = forward


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "update":
        update(Path(rest[0]))
    elif mode == "pretrain":
        pretrain_runs(Path(rest[0]), Path(rest[1]))
    elif mode == "finetune":
        finetune_run(Path(rest[0]), Path(rest[1]))
    elif mode == "cli":
        sys.exit(cli(rest))
    elif mode == "unreadable":
        unreadable_on_rank_1(rest[0])
        sys.exit(cli(rest[1:]))
    elif mode == "dies":
        dies_on_rank_1()
        sys.exit(cli(rest))
    else:
        sys.exit(f"unknown mode {mode!r}")
