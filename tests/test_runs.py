import pytest
import torch

from ssat.errors import UserError
from ssat.runs import atomic_write_text, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("half a fi")
        raise KeyboardInterrupt  # the process is killed mid-write
    from ssat.runs import atomic_write
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


def test_checkpoint_round_trips_under_weights_only(tmp_path):
    path = tmp_path / "checkpoint-last.pt"
    state = {"model": {"w": torch.randn(3)}, "epoch": 2, "rng": rng_state(), "config": {"lam": 0.1}}
    save_checkpoint(path, state)
    raw = torch.load(path, weights_only=True)  # the safe loader accepts everything we store
    assert raw["epoch"] == 2 and torch.equal(raw["model"]["w"], state["model"]["w"])
    assert load_checkpoint(tmp_path, need={"config": dict})["config"] == {"lam": 0.1}


def test_rng_state_restores_every_generator(tmp_path):
    import random

    import numpy as np
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expected = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(load_checkpoint(tmp_path / "c.pt", need={"rng": dict})["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


def test_foreign_files_are_refused_with_a_clear_message(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an ssat checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_with_code_is_not_executed(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    torch.save({"format": "ssat-checkpoint-v1", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
