"""DistributedDataParallel: 2 processes with gloo on CPU, started the way users start them (torchrun)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tiny_model  # noqa: F401 (registers vit_test, as ddp_entry.py does in the torchrun workers)
from ssat.cli import main

ENTRY = str(Path(__file__).parent / "ddp_entry.py")

# No randomness that differs between one process and two: no augmentation, no drop-path, scratch (no masks).
EXACT = ["--model", "vit_test", "--method", "scratch", "--crop", "none", "--no-hflip", "--rand-augment", "none",
         "--reprob", "0", "--drop-path", "0", "--warmup-epochs", "0", "--epochs", "2", "--fraction", "0.25",
         "--device", "cpu", "--precision", "fp32", "--quiet", "--blr", "5e-3", "--loader", "memory", "--no-energy"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, args: list[str], tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra_env}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(free_port()), ENTRY, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def single(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The same command as one plain process: run in this one (a new process costs seconds of imports), on one
    thread as each torchrun worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(args)
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(args, code, "", "")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    two = torchrun(2, ["train", *EXACT, "--batch-size", "16", "--out", str(tmp / "two")], tmp)
    one = single(["train", *EXACT, "--batch-size", "32", "--out", str(tmp / "one")], tmp)
    return tmp, two, one


def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    tmp, two, one = runs
    assert two.returncode == 0, two.stderr[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    s2 = json.loads((tmp / "two" / "summary.json").read_text())
    s1 = json.loads((tmp / "one" / "summary.json").read_text())
    assert s2["world_size"] == 2 and s1["world_size"] == 1
    assert s2["distributed_backend"] == "gloo" and s1["distributed_backend"] is None
    assert s2["batch_size"] == s1["batch_size"] == 32 and s2["lr"] == s1["lr"]  # lr follows the global batch
    assert s2["n_train"] == s1["n_train"]
    w2, w1 = load_file(tmp / "two" / "model.safetensors"), load_file(tmp / "one" / "model.safetensors")
    assert w2.keys() == w1.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    m2 = [json.loads(line) for line in (tmp / "two" / "metrics.jsonl").read_text().splitlines()]
    m1 = [json.loads(line) for line in (tmp / "one" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(m2, m1):  # metrics are averaged over both ranks' images
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["test_acc1"] == pytest.approx(b["test_acc1"], abs=1e-6)
    # Rank 0 alone logs and prints the result line.
    assert two.stdout.count('"test_acc1"') == 1


def test_ranks_stay_in_sync_and_resume_under_ddp(runs, tmp_path):
    """SSAT (masks and augmentation differ per rank) for 1 epoch, then resumed to 2 under torchrun: the ranks'
    parameters are checked against each other every epoch (the run fails if they drift)."""
    args = ["--model", "vit_test", "--method", "ssat", "--no-energy", "--decoder-dim", "16", "--decoder-depth", "1",
            "--decoder-heads", "2", "--fraction", "0.2", "--batch-size", "16", "--device", "cpu", "--quiet",
            "--warmup-epochs", "0"]
    first = torchrun(2, ["train", *args, "--epochs", "1", "--out", str(tmp_path / "r")], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = torchrun(2, ["train", "--resume", str(tmp_path / "r"), "--epochs", "2"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["world_size"] == 2
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2


def test_pretraining_runs_under_ddp(tmp_path):
    """Pre-training leaves the classifier unused: it is frozen, so DDP finds no unused parameter."""
    args = ["--model", "vit_test", "--method", "dino", "--fraction", "0.1", "--batch-size", "16", "--device", "cpu",
            "--quiet", "--epochs", "1", "--warmup-epochs", "0", "--no-energy", "--out", str(tmp_path / "p")]
    done = torchrun(2, ["pretrain", *args], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["method"] == "pretrain" and summary["aux"] == "dino" and summary["world_size"] == 2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_the_ddp_path_with_one_rank_matches_a_plain_run_and_resumes(device, tmp_path):
    """One GPU cannot host two NCCL ranks, so on a GPU the NCCL path (process group, DDP wrapper, distributed
    sampler, all-reduced metrics, rank-0 checkpoints, resume) is checked with one rank; on CPU it runs on gloo.
    Both runs stop after epoch 1 and are resumed to 2 (--epochs also sets the lr schedule's length)."""
    fixed = {"cpu": device, "scratch": "ssat"}  # SSAT: rank 0 draws the masks a single process draws
    epochs = EXACT.index("--epochs")
    args = ["train", *[fixed.get(a, a) for a in EXACT[:epochs] + EXACT[epochs + 2:]], "--decoder-dim", "16",
            "--decoder-depth", "1", "--decoder-heads", "2", "--batch-size", "32", "--deterministic", "--epochs"]
    for name, launch in (("ddp", lambda a: torchrun(1, a, tmp_path, SSAT_TEST_ONE_RANK_DDP="1")),
                         ("plain", lambda a: single(a, tmp_path))):
        for step in ([*args, "1", "--out", str(tmp_path / name)], ["train", "--resume", str(tmp_path / name),
                                                                  "--epochs", "2"]):
            done = launch(step)
            assert done.returncode == 0, done.stderr[-3000:]
    s_ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert s_ddp["distributed_backend"] == {"cpu": "gloo", "cuda": "nccl"}[device] and s_ddp["epochs"] == 2
    w_ddp, w_plain = (load_file(tmp_path / name / "model.safetensors") for name in ("ddp", "plain"))
    assert w_ddp.keys() == w_plain.keys()
    for k in w_plain:
        torch.testing.assert_close(w_ddp[k], w_plain[k], rtol=1e-4, atol=1e-5, msg=k)
