"""benchmarks/gpu_check.sh's own logic, on the emulated device with small settings (no GPU needed): every part
runs or is skipped as asked, the summary says so, a failing part fails the script without stopping the others, and
what the device tool brings back ($OUT) is a few flat files holding the logs, the bench table and the metrics."""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
# a small model and corpus (tests/test_pretrain.py's SMALL), a few steps
PRETRAIN_ARGS = ("--corpus-speakers 3 --corpus-utterances 6 --corpus-heldout 1 --batch-seconds 2 --eval-utterances 4 "
                 "--eval-batch-seconds 2 --log-every 1 --eval-every 3 --set conv_dim=(16,16,16,16,16,16,16) "
                 "--set hidden_size=32 --set num_hidden_layers=2 --set num_attention_heads=2 "
                 "--set intermediate_size=64 "
                 "--set num_conv_pos_embeddings=8 --set num_conv_pos_embedding_groups=2 "
                 "--set num_codevectors_per_group=8 --set codevector_dim=16 --set proj_codevector_dim=16 "
                 "--set num_negatives=5")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and timeout")


def run_check(tmp_path, **env):
    values = dict(os.environ, DEVICE="emulated", PYTHON=sys.executable, OPENBLAS_NUM_THREADS="1", STEPS="3",
                  SKIP="wheels tests distributed", PRETRAIN_ARGS=PRETRAIN_ARGS, OUT=str(tmp_path / "out"),
                  CUPY_CACHE_DIR=str(tmp_path / "no_cache"),
                  BENCH_ARGS="--only tiny-8x1s --repeat 1 --modes train")
    values.update(env)
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "logs")], cwd=ROOT, env=values, capture_output=True,
                          text=True, timeout=300)


def test_the_gpu_check_runs_end_to_end_on_the_emulated_device(tmp_path):
    r = run_check(tmp_path)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    for name in ("environment", "check", "pretrain", "learned", "bench"):
        assert re.search(rf"^== {name} \(limit \d+ s\)", out, re.M), name
    assert out.count("   ok in ") == 5 and "FAILED" not in out
    for name in ("wheels", "tests", "distributed"):
        assert f"== {name}: skipped (SKIP)" in out
    assert "step 3 of 3: held-out accuracy" in out and out.rstrip().endswith("all parts passed")
    assert re.search(r"^\| tiny-8x1s \| train \| [\d.]+ \| [^|]+ \| [^|]+ \| \d+ \| 2 \|$", out, re.M)  # 2 syncs a step

    # what the device tool brings back: at most 8 files, flat, plain names
    back = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert back == ["bench_cuda.json", "bench_cuda.md", "gpu_check.tar.gz", "pretrain_metrics.jsonl", "summary.txt"]
    assert all((tmp_path / "out" / n).is_file() and re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in back)
    assert (tmp_path / "out" / "summary.txt").read_text().rstrip().endswith("all parts passed")
    metrics = [json.loads(line) for line in (tmp_path / "out" / "pretrain_metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 3 and "eval_accuracy" in metrics[-1]
    assert json.loads((tmp_path / "out" / "bench_cuda.json").read_text())["rows"][0]["syncs"] == 2
    with tarfile.open(tmp_path / "out" / "gpu_check.tar.gz") as tar:
        names = tar.getnames()
    for log in ("environment", "check", "pretrain", "learned", "bench"):
        assert f"logs/{log}.log" in names
    assert "logs/pretrain/metrics.jsonl" in names and "logs/bench_cuda.md" in names
    assert not any("corpus" in n or n.endswith(".npz") for n in names)


def test_a_failing_part_fails_the_check_and_the_rest_still_runs(tmp_path):
    r = run_check(tmp_path, SKIP="wheels tests check distributed bench", PRETRAIN_ARGS="--lr -1")
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert re.search(r"== pretrain .*\n   FAILED \(exit 2\)", out) and "--lr must be positive" in out
    assert re.search(r"== learned .*\n   FAILED \(exit 1\)", out)            # no metrics: not learned
    assert out.rstrip().endswith("failed: pretrain learned")
    assert (tmp_path / "out" / "summary.txt").read_text().rstrip().endswith("failed: pretrain learned")


def test_a_part_past_its_time_limit_is_stopped_and_reported(tmp_path):
    r = run_check(tmp_path, SKIP="wheels environment tests check distributed bench learned", STEPS="100000",
                  BUDGET="10")
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert re.search(r"== pretrain \(limit \d+ s\).*\n   FAILED \(exit 124: time limit\)", out)
    assert out.rstrip().endswith("failed: pretrain") and (tmp_path / "out" / "gpu_check.tar.gz").is_file()
