"""Grad-CAM / attention rollout grids and MAE reconstructions from real (tiny) runs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ssat.cli import main
from ssat.commands.explain import attention_rollout, vit_reshape


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    import tiny_model  # noqa: F401 (imported to register vit_test)
    from conftest import TINY, as_flags
    tmp = tmp_path_factory.mktemp("explain")
    flags = as_flags(TINY)
    runs = {}
    for method in ("scratch", "ssat"):
        runs[method] = tmp / method
        assert main(["train", *flags, "--method", method, "--fraction", "0.2", "--out", str(runs[method])]) == 0
    return runs


def test_gradcam_grid_compares_models_on_the_same_images(two_runs, tmp_path, capsys):
    a = tmp_path / "ab.png"
    assert main(["gradcam", "--checkpoint", str(two_runs["scratch"]), "--checkpoint", str(two_runs["ssat"]),
                 "--n", "3", "--out", str(a)]) == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(a), "images": 3, "models": 2}
    image = Image.open(a)
    assert image.size == (2 * 5 * 80, 2 * 3 * 80)  # columns: image + (Grad-CAM, rollout) per model; 3 rows
    pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10
    left, right = pixels[:, 160:480], pixels[:, 480:800]  # model 1's two columns vs model 2's
    assert np.abs(left - right).mean() > 1  # two different models give different maps


def test_gradcam_refuses_runs_of_other_sizes_and_figures_it_cannot_write(two_runs, tmp_path, tiny_flags, capsys):
    from conftest import run_error
    big = tmp_path / "big"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--img-size", "16", "--patch-size", "4",
                 "--out", str(big)]) == 0
    line = run_error(capsys, ["gradcam", "--checkpoint", str(two_runs["scratch"]), "--checkpoint", str(big),
                              "--out", str(tmp_path / "g.png")])
    assert "reads 16 px images but" in line and "same --img-size" in line
    for command, run in (("gradcam", two_runs["scratch"]), ("reconstruct", two_runs["ssat"])):
        line = run_error(capsys, [command, "--checkpoint", str(run), "--out", str(tmp_path / "x.txt")])
        assert "a figure is written as .png" in line and "x.png" in line
        line = run_error(capsys, [command, "--checkpoint", str(run), "--out", str(tmp_path)])
        assert "is a folder" in line
        (tmp_path / "file").write_text("x")
        line = run_error(capsys, [command, "--checkpoint", str(run), "--out", str(tmp_path / "file" / "g.png")])
        assert "cannot write the figure" in line
    assert not (tmp_path / "x.txt").exists()


def test_attention_rollout_is_a_normalised_map_per_image():
    from ssat.models import build_backbone
    torch.manual_seed(0)
    backbone = build_backbone("vit_test", img_size=8, patch_size=2, in_chans=1, num_classes=10)
    maps = attention_rollout(backbone, torch.randn(2, 1, 8, 8))
    assert maps.shape == (2, 8, 8) and maps.min() >= 0 and maps.max() == pytest.approx(1)
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float).reshape(2, 17, 3)
    grid = vit_reshape(tokens, (4, 4))
    assert grid.shape == (2, 3, 4, 4) and torch.equal(grid[0, :, 0, 0], tokens[0, 1])  # class token left out


def test_reconstruct_draws_original_masked_and_reconstruction(two_runs, tmp_path, capsys):
    out = tmp_path / "rec.png"
    assert main(["reconstruct", "--checkpoint", str(two_runs["ssat"]), "--n", "2", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 2 and result["masked_mse"] > 0
    assert Image.open(out).size == (6 * 80, 2 * 2 * 80)
    assert main(["reconstruct", "--checkpoint", str(two_runs["scratch"]), "--out", str(out)]) == 2
    assert "without an auxiliary task, which draws no reconstruction" in capsys.readouterr().err


@pytest.mark.parametrize("size", [8, 32])
def test_gradcam_on_vits_at_small_sizes_and_without_stray_warnings(tmp_path, tiny_flags, capsys, size):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--per-class", "2", "--img-size", str(size), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["gradcam", "--checkpoint", str(out), "--n", "2", "--out", str(tmp_path / "g.png")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["images"] == 2
    assert "Clipping input data" not in captured.err  # the overlay stays inside [0, 1]
