import pytest
import torch

from ssat.auxtasks.masking import masked_mse, num_visible, patchify, random_masking, unpatchify


@pytest.mark.parametrize("length,ratio", [(16, 0.75), (49, 0.75), (64, 0.75), (196, 0.75), (16, 0.5), (10, 0.33)])
def test_masking_keeps_int_of_visible_fraction_per_sample(length, ratio):
    torch.manual_seed(0)
    ids_keep, mask, ids_restore, _ = random_masking(8, length, ratio)
    keep = int((1 - ratio) * length)  # the reference's rule, truncation included
    assert num_visible(length, ratio) == keep
    assert ids_keep.shape == (8, keep)
    assert mask.shape == (8, length)
    assert torch.equal(mask.sum(dim=1), torch.full((8,), float(length - keep)))
    # exactly the kept patches are unmasked
    assert torch.all(mask.gather(1, ids_keep) == 0)
    assert all(len(set(row.tolist())) == keep for row in ids_keep)


def test_masking_differs_between_samples_and_restore_inverts_shuffle():
    torch.manual_seed(0)
    ids_keep, mask, ids_restore, _ = random_masking(16, 64, 0.75)
    kept_sets = {tuple(sorted(row.tolist())) for row in ids_keep}
    assert len(kept_sets) == 16  # every sample gets its own patches
    x = torch.randn(16, 64, 3)
    noise_order = torch.argsort(ids_restore, dim=1)  # = ids_shuffle
    shuffled = x.gather(1, noise_order.unsqueeze(-1).expand(-1, -1, 3))
    assert torch.equal(shuffled[:, :16], x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, 3)))
    restored = shuffled.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, 3))
    assert torch.equal(restored, x)


@pytest.mark.parametrize("chans,h,w,p", [(1, 8, 8, 2), (3, 32, 32, 4), (3, 28, 28, 4), (1, 16, 24, 4)])
def test_patchify_unpatchify_round_trip(chans, h, w, p):
    images = torch.randn(2, chans, h, w)
    patches = patchify(images, p)
    assert patches.shape == (2, (h // p) * (w // p), p * p * chans)
    assert torch.equal(unpatchify(patches, p, (h // p, w // p), chans), images)


def test_patchify_orders_patches_row_major_with_pixels_then_channels():
    images = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    patches = patchify(images, 2)
    # patch 1 is the top-right 2x2 block; its pixels are (row, col, channel) ordered
    expected = images[0, :, 0:2, 2:4].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[0, 1], expected)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_mse_ignores_visible_patches(norm_pix):
    torch.manual_seed(0)
    pred, target = torch.randn(2, 16, 12), torch.randn(2, 16, 12)
    mask = torch.zeros(2, 16)
    mask[:, 4:] = 1  # patches 0-3 visible
    base = masked_mse(pred, target, mask, norm_pix)
    changed_visible = pred.clone()
    changed_visible[:, :4] += 100.0
    assert torch.equal(masked_mse(changed_visible, target, mask, norm_pix), base)
    changed_masked = pred.clone()
    changed_masked[:, 4] += 1.0
    assert masked_mse(changed_masked, target, mask, norm_pix) != base


def test_masked_mse_is_mean_over_masked_patches():
    pred = torch.zeros(1, 4, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]])
    mask = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    assert masked_mse(pred, target, mask).item() == pytest.approx((4 + 16) / 2)


def test_norm_pix_targets_are_per_patch_normalised():
    pred = torch.zeros(1, 2, 4)
    target = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]]])
    mask = torch.ones(1, 2)
    # normalised patches have zero mean and unit (unbiased) variance -> MSE vs 0 is (n-1)/n up to eps
    assert masked_mse(pred, target, mask, norm_pix=True).item() == pytest.approx(0.75, rel=1e-4)
