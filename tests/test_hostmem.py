import subprocess
import sys

import pytest

# One process: a few ViT-T SSAT training steps (32 px, batch 32) under glibc's default settings, then the same after
# keep_freed_memory(), counting page faults. A fresh subprocess, because glibc's defaults can only be seen in a
# process that has not been told otherwise (CPU `train()` calls inside the test process apply the setting).
SCRIPT = """
import resource, torch
from ssat.config import Config
from ssat.hostmem import keep_freed_memory
from ssat.objective import build_model
torch.manual_seed(0)
model = build_model(Config(model="vit_tiny", img_size=32, patch_size=4).validate(), num_classes=10, in_chans=3)
opt = torch.optim.AdamW(model.parameters())
x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
def faults_over(steps):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        opt.zero_grad()
        model(x, y).loss.backward()
        opt.step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
faults_over(2)
default = faults_over(2)
applied = keep_freed_memory()
faults_over(2)
print("RESULT", applied, default, faults_over(2))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults_of_every_step():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    applied, default, kept = line.split()[1:]
    if applied != "True":
        pytest.skip(f"keep_freed_memory() not applied here (no glibc mallopt): {line}")
    if int(default) < 5000:  # here ~58,000: glibc gives activations back and faults them in again every step
        pytest.skip(f"this libc already keeps freed memory ({default} page faults in 2 steps): nothing to compare")
    assert int(kept) * 5 < int(default), (default, kept)  # ...and keeps them once told to


def test_keep_freed_memory_is_opt_in_at_the_cli(tiny_cfg, tiny_flags, tmp_path, monkeypatch):
    from ssat import hostmem
    from ssat.cli import main
    from ssat.training import train
    calls = []
    monkeypatch.setattr(hostmem, "keep_freed_memory", lambda: calls.append(1) or True)
    train(tiny_cfg(out=str(tmp_path / "lib"), epochs=1, device="cpu", fraction=0.05))
    assert calls == []  # the library never changes the process's allocator by itself
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--out", str(tmp_path / "a")]) == 0
    assert calls == []
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--keep-freed-memory", "--out", str(tmp_path / "b")]) == 0
    assert calls == [1]
