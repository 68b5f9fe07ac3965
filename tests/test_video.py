"""The video path: masking and tubelet maths, the video ViT and VideoMAE, decoding / clips / face crops / cache, the
FaceForensics++ / Celeb-DF / videofolder layouts, bad videos, and end to end: every method trains, evaluation
across manipulations and zero-shot, `ssat report`'s cross table."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssat import flops
from ssat.auxtasks.masking import masked_mse, patchify_tubelets, tube_masking, unpatchify_tubelets
from ssat.auxtasks.videomae import VideoMAETask, normalise_tubelets
from ssat.config import Config
from ssat.data import DataOptions, load_dataset
from ssat.data.batch_augment import BatchAugment
from ssat.data.memory import MemoryLoader
from ssat.data.video import clip_indices, square_box
from ssat.errors import UserError
from ssat.models import build_backbone
from ssat.models.video_vit import TubeletEmbed, build_sincos3d_pos_embed

av = pytest.importorskip("av")
# after importorskip: the fixtures write videos with PyAV
from video_fixtures import celebdf_tree, faceforensics_tree, videofolder_tree, write_video  # noqa: E402

VIDEO = dict(model="video_vit_tiny", frames=4, frame_size=16, img_size=16, patch_size=8, decoder_dim=12,
             decoder_depth=1, decoder_heads=2, global_pool="avg", batch_size=8, epochs=1, warmup_epochs=0,
             quiet=True, deterministic=True, device="cpu", energy=False, precision="fp32", val_fraction=0.0,
             lam=0.5, balance="none", rand_augment="none")


@pytest.fixture(scope="module")
def ff_root(tmp_path_factory) -> Path:
    return faceforensics_tree(tmp_path_factory.mktemp("ff"), pairs_per_split=(3, 1, 2), frames=10, size=16)


@pytest.fixture(scope="module")
def cdf_root(tmp_path_factory) -> Path:
    return celebdf_tree(tmp_path_factory.mktemp("cdf"), n=3, frames=10, size=16)


def opts(tmp_path, **extra) -> DataOptions:
    values = {"frames": 4, "frame_stride": 0, "clips_per_video": 1, "frame_size": 16, "face_crop": "none",
              "face_boxes": None, "clip_cache": str(tmp_path / "cache"), **extra}
    return DataOptions(extra=values)


def backbone(frames=4, size=16, patch=8, tubelet=2, pool="avg"):
    cfg = Config.from_dict({"tubelet_size": tubelet})
    return build_backbone("video_vit_tiny", img_size=size, patch_size=patch, in_chans=3, num_classes=2,
                          global_pool=pool, frames=frames, cfg=cfg)


# --- maths -------------------------------------------------------------------------------------------------------

def test_tube_masking_keeps_int_share_and_the_same_spatial_mask_in_every_time_slice():
    frames, spatial, ratio = 3, 10, 0.75
    torch.manual_seed(0)
    m = tube_masking(5, frames, spatial, ratio)
    keep = int((1 - ratio) * spatial)
    assert m.ids_keep.shape == (5, frames * keep) and m.ids_masked.shape == (5, frames * (spatial - keep))
    assert (m.mask.sum(1) == frames * (spatial - keep)).all()
    per_slice = m.mask.view(5, frames, spatial)
    assert (per_slice == per_slice[:, :1]).all()  # the same positions hidden in every slice
    for b in range(5):
        kept, masked = set(m.ids_keep[b].tolist()), set(m.ids_masked[b].tolist())
        assert kept.isdisjoint(masked) and kept | masked == set(range(frames * spatial))
        assert all(m.mask[b, i] == 0 for i in kept)
    # ids_restore undoes [visible | masked]
    tokens = torch.arange(frames * spatial).expand(5, -1)
    shuffled = torch.cat([m.ids_keep, m.ids_masked], 1)
    assert torch.equal(torch.gather(shuffled, 1, m.ids_restore), tokens)


def test_tubelet_patchify_round_trips_and_matches_the_embedding_token_order():
    x = torch.randn(2, 3, 4, 16, 24)
    patches = patchify_tubelets(x, 2, 8)
    assert patches.shape == (2, 2 * 2 * 3, 2 * 8 * 8 * 3)
    assert torch.equal(unpatchify_tubelets(patches, 2, 8, (2, 2, 3), 3), x)
    # A tubelet embedding whose output channel j copies pixel j (in patchify's (t, p, q, c) order) gives the same
    # tokens: patchify's tubelet order is the encoder's token order.
    embed = TubeletEmbed(img_size=(16, 24), patch_size=8, in_chans=3, embed_dim=2 * 8 * 8 * 3, frames=4, tubelet=2)
    with torch.no_grad():
        eye = torch.eye(2 * 8 * 8 * 3).view(-1, 2, 8, 8, 3)  # (out, t, p, q, c)
        embed.proj.weight.copy_(eye.permute(0, 4, 1, 2, 3))    # Conv3d weight: (out, c, t, p, q)
        embed.proj.bias.zero_()
        assert torch.allclose(embed(x), patches, atol=1e-5)


def test_sincos3d_table_follows_its_formula():
    dim, grid = 12, (2, 3, 4)
    table = build_sincos3d_pos_embed(grid, dim)
    assert table.shape == (2 * 3 * 4, dim)
    share = (dim // 3) // 2 * 2  # 4 channels each for rows and columns, the rest (4) for time

    def one_d(pos, d):
        k = np.arange(d // 2)
        w = 10000.0 ** (-k / (d // 2))
        return np.concatenate([np.sin(pos * w), np.cos(pos * w)])

    for t, h, w in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        row = table[(t * 3 + h) * 4 + w].numpy()
        expected = np.concatenate([one_d(t, dim - 2 * share), one_d(h, share), one_d(w, share)])
        assert np.allclose(row, expected, atol=1e-6)


def test_videomae_loss_scores_masked_tubelets_only(shallow_backbones):
    torch.manual_seed(0)
    net = backbone()
    task = VideoMAETask(net, mask_ratio=0.5, norm_pix_loss=True, dim=12, depth=1, heads=2)
    clips = torch.randn(2, 3, 4, 16, 16)
    torch.manual_seed(1)
    loss, _ = task.loss(net, clips)
    torch.manual_seed(1)  # the same masking again: predict every tubelet, score with the mask
    frames, rows, cols = net.grid_size
    m = tube_masking(2, frames, rows * cols, 0.5)
    pred = task.decoder(net.forward_masked(clips, m.ids_keep), m.ids_restore)
    target = normalise_tubelets(patchify_tubelets(clips, 2, 8), 3)
    assert torch.allclose(loss, masked_mse(pred, target, m.mask), atol=1e-5)
    # and the visible tubelets' predictions do not count: changing them changes nothing
    assert torch.allclose(masked_mse(pred.masked_fill(m.mask.bool().logical_not().unsqueeze(-1), 9.0), target,
                                     m.mask), loss, atol=1e-5)


def test_normalised_tubelet_target_is_per_channel_standardised():
    t = torch.randn(2, 5, 2 * 4 * 4 * 3) * 3 + 1
    n = normalise_tubelets(t, 3).unflatten(-1, (-1, 3))
    assert torch.allclose(n.mean(-2), torch.zeros(2, 5, 3), atol=1e-5)
    assert torch.allclose(n.std(-2), torch.ones(2, 5, 3), atol=1e-3)


def test_video_vit_masked_pass_sees_only_visible_tokens_and_flops_match_a_hand_count(shallow_backbones):
    net = backbone(frames=4, size=16, patch=8, tubelet=2).eval()  # one block (shallow_backbones)
    x = torch.randn(2, 3, 4, 16, 16)
    assert net(x).shape == (2, 2)
    keep = torch.tensor([[0, 3], [1, 2]])
    assert net.forward_masked(x, keep).shape == (2, 3, net.embed_dim)
    # forward FLOPs per clip: tubelet projection, one block, head (2 FLOPs per multiply-add; attention 4*N^2*d)
    d, n, pix, hidden = net.embed_dim, net.num_patches, 2 * 8 * 8 * 3, 4 * net.embed_dim
    per_block = 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * hidden
    conv, linear, attn = 2 * n * pix * d, per_block - 4 * n * n * d + 2 * d * 2, 4 * n * n * d
    assert flops.inference_flops_per_image(net, x) == conv + linear + attn
    # a scratch training step: backward is 2x forward for the linears, 2.5x for attention (torch's SDPA rule), and
    # 1x for the tubelet projection (no gradient for the input clip)
    from ssat.objective import SSATModel
    step = flops.train_flops_per_image(SSATModel(net.train(), None), x, torch.tensor([0, 1]))
    assert step == 2 * conv + 3 * linear + 3.5 * attn


def test_clip_indices_spread_or_stride_and_refuse_short_videos():
    assert clip_indices(10, 4, 0, 1) == [[0, 3, 6, 9]]
    assert clip_indices(9, 2, 0, 2) == [[0, 3], [5, 8]]
    assert clip_indices(20, 3, 2, 2) == [[0, 2, 4], [15, 17, 19]]
    with pytest.raises(Exception, match="fewer than the 8 that 1 clip"):
        clip_indices(5, 8, 0, 1)
    with pytest.raises(Exception, match="spans"):
        clip_indices(6, 3, 4, 1)


def test_square_face_box_is_enlarged_and_kept_in_the_frame():
    assert square_box([10, 10, 20, 10], 100, 100) == (7, 2, 26)  # side 1.3 * 20, centred on (20, 15)
    left, top, side = square_box([90, 90, 20, 20], 100, 100)
    assert left + side <= 100 and top + side <= 100


def test_clip_augmentation_draws_once_per_clip():
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (4, 3, 1, 16, 16), dtype=torch.uint8)
    clips = frame.expand(-1, -1, 5, -1, -1)  # five identical frames per clip
    aug = BatchAugment(size=16, crop="rrc", hflip=True, rand_augment="rand-m9-mstd0.5-inc1", reprob=0.0,
                       mean=(0.5,) * 3, std=(0.25,) * 3)
    out = aug(clips)
    assert out.shape == (4, 3, 5, 16, 16)
    assert torch.equal(out, out[:, :, :1].expand_as(out))  # crop, flip and RandAugment: one draw per clip
    assert not torch.allclose(out[0], out[1])
    erase = BatchAugment(size=16, crop="none", hflip=False, rand_augment="none", reprob=1.0, mean=(0.5,) * 3,
                         std=(0.25,) * 3)
    out = erase(clips)
    box = (out != out[:, :, :1]).any(1)  # (clips, frames, H, W): where a frame's noise differs from frame 0's
    assert box[:, 1].any() and torch.equal(box[:, 1], box[:, 2])  # the same box in every frame


def test_balanced_sampling_draws_classes_equally():
    images = torch.zeros(100, 3, 2, 4, 4, dtype=torch.uint8)
    targets = [0] * 20 + [1] * 80
    aug = BatchAugment(size=4, crop="none", hflip=False, rand_augment="none", reprob=0, mean=(0,) * 3, std=(1,) * 3)
    loader = MemoryLoader(images, targets, batch_size=10, device=torch.device("cpu"), mean=(0,) * 3, std=(1,) * 3,
                          augment=aug, balanced=True)
    drawn = torch.cat([y for _ in range(20) for _, y in (loader.set_epoch(_) or loader)])
    assert abs(drawn.float().mean().item() - 0.5) < 0.05


# --- data sets ---------------------------------------------------------------------------------------------------

def test_faceforensics_reads_the_released_layout(ff_root, tmp_path):
    data = load_dataset("faceforensics", str(ff_root), options=opts(tmp_path, manipulations="Deepfakes,FaceSwap",
                                                                    compression="c23"))
    assert data.classes == ["real", "fake"] and data.frames == 4 and data.balanced
    # 3 train + 1 val pairs: 8 real videos, 2 fakes per pair and method; val.json's 6 are the validation split
    assert data.train.labels.count(0) == 8 and data.train.labels.count(1) == 4 * 2 * 2
    assert data.train.images.shape == (24, 4, 16, 16, 3)
    assert "Deepfakes/000_001" in data.train.video_ids and "real/000" in data.train.video_ids
    assert not any(v.startswith("Face2Face") for v in data.train.video_ids)
    assert len(data.test) == 4 + 2 * 2 * 2
    val_ids = {data.train.video_ids[i] for i in data.val_indices}
    assert val_ids == {"real/006", "real/007", "Deepfakes/006_007", "Deepfakes/007_006", "FaceSwap/006_007",
                       "FaceSwap/007_006"}
    from ssat.data.subsets import choose
    train, val = choose(data.train_targets, val_fraction=0.1, groups=data.train.video_ids,
                        official_val=data.val_indices)
    assert val == data.val_indices and not set(train) & set(val) and len(train) == 18
    train, val = choose(data.train_targets, val_fraction=0.0, official_val=data.val_indices)
    assert val == [] and len(train) == 18  # val.json is never trained on under --train-split train
    both = load_dataset("faceforensics", str(ff_root), options=DataOptions(train_split="train+val", extra=opts(
        tmp_path, manipulations="Deepfakes", compression="c23").extra))
    assert both.val_indices is None and len(both.train) == 8 + 8


def test_clip_cache_is_reused(ff_root, tmp_path, monkeypatch):
    options = opts(tmp_path, manipulations="Deepfakes", compression="c23")
    first = load_dataset("faceforensics", str(ff_root), options=options)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == len(first.train) + len(first.test)
    from ssat.data import video
    monkeypatch.setattr(video, "decode_frames", lambda *a: pytest.fail("decoded again"))
    again = load_dataset("faceforensics", str(ff_root), options=options)
    assert np.array_equal(first.train.images, again.train.images)


def _cache_corruptions(entry: Path, seed: int) -> list[bytes]:
    """What a clip-cache entry can become: empty, truncated, text, a pickled object array, another shape, float64
    values (which a cast to uint8 would wrap), random bytes."""
    import io
    good = np.load(entry)
    rng = np.random.default_rng(seed)

    def npy(array, **kw):
        buffer = io.BytesIO()
        np.save(buffer, array, **kw)
        return buffer.getvalue()
    data = entry.read_bytes()
    return [b"", data[: len(data) // 2], b"not a numpy file\n", npy(np.array([{"a": 1}], dtype=object)),
            npy(good[:, :2]), npy(good.astype(np.float64) + 256.0), rng.bytes(200)]


def test_a_damaged_clip_cache_entry_is_a_miss_decoded_again_and_said_once(ff_root, tmp_path):
    options = opts(tmp_path, manipulations="Deepfakes", compression="c23")
    first = load_dataset("faceforensics", str(ff_root), options=options)
    entries = sorted((tmp_path / "cache").glob("*.npy"))
    for variant in range(len(_cache_corruptions(entries[0], 0))):
        for i, entry in enumerate(entries):  # every entry damaged the same way
            entry.write_bytes(_cache_corruptions(entry, i)[variant])
        said = []
        again = load_dataset("faceforensics", str(ff_root), options=DataOptions(log=said.append,
                                                                                 extra=options.extra))
        assert np.array_equal(first.train.images, again.train.images), variant
        assert np.array_equal(first.test.images, again.test.images), variant
        assert sum("clip cache:" in line for line in said) == 2, said  # once per split
        assert all(np.load(e).dtype == np.uint8 for e in entries)  # rewritten


def test_celebdf_test_list_labels(cdf_root, tmp_path):
    data = load_dataset("celebdf", str(cdf_root), options=opts(tmp_path))
    assert data.classes == ["real", "fake"]
    assert len(data.test) == 6 and data.test.labels.count(1) == 2  # '0' in the list = synthesised = fake
    assert len(data.train) == 3  # the unlisted videos


def test_videofolder_layout(tmp_path):
    root = videofolder_tree(tmp_path / "vf", per_class=(2, 1), frames=6, size=16)
    data = load_dataset("videofolder", str(root), options=opts(tmp_path, clips_per_video=2, frame_stride=1))
    assert data.classes == ["class0", "class1", "class2"]
    assert len(data.train) == 3 * 2 * 2 and len(data.test) == 3 * 2
    assert data.train.video_ids[0] == data.train.video_ids[1]  # two clips of one video


def test_bad_videos_get_one_line_or_are_skipped(tmp_path):
    root = videofolder_tree(tmp_path / "vf", per_class=(2, 1), frames=6, size=16)
    bad = root / "train" / "class0" / "clip1.mp4"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    short = root / "train" / "class1" / "clip1.mp4"
    write_video(short, frames=2, size=16)
    with pytest.raises(UserError) as e:
        load_dataset("videofolder", str(root), options=opts(tmp_path, clip_cache="none"))
    message = str(e.value)
    assert "\n" not in message and "clip1.mp4" in message and "--on-bad-image skip" in message
    skipped = []
    data = load_dataset("videofolder", str(root), options=DataOptions(on_bad_image="skip", log=skipped.append,
                                                                      extra=opts(tmp_path).extra))
    assert len(data.train) == 4 and sum(s.startswith("skipped: video") for s in skipped) == 2
    assert any("fewer than the 4 that 1 clip(s) of 4 distinct frames need" in s for s in skipped)


@pytest.mark.parametrize("boxes,message", [
    ({"train/class0/clip0.mp4": ["a", 1, 2, 3]}, "is not [x, y, w, h]"),
    ({"train/class0/clip0.mp4": [1, 2, 3]}, "is not [x, y, w, h]"),
    ({"train/class0/clip0.mp4": [0, 0, 0, 0]}, "is not [x, y, w, h] (four numbers, w and h at least 1 pixel)"),
    ({"train/class0/clip0.mp4": [[1, 1, 4, 4], [1, "x", 4, 4]]}, "is not [x, y, w, h]"),
    ({"train/class0/clip0.mp4": [100, 100, 8, 8]}, "whose centre lies outside its 16x16 frames"),
    ({"train/class0/clip0.mp4": [-20, 2, 8, 8]}, "whose centre lies outside its 16x16 frames"),
])
def test_face_boxes_that_are_not_boxes_in_the_frame_are_one_line(tmp_path, boxes, message):
    root = videofolder_tree(tmp_path / "vf", per_class=(1, 1), frames=6, size=16)
    good = [2, 2, 8, 8]
    every = {f"{s}/class{c}/clip0.mp4": good for s in ("train", "val") for c in range(3)}
    (tmp_path / "boxes.json").write_text(json.dumps({**every, **boxes}))
    with pytest.raises(UserError) as e:
        load_dataset("videofolder", str(root), options=opts(tmp_path, face_crop="boxes", clip_cache="none",
                                                            face_boxes=str(tmp_path / "boxes.json")))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_more_clips_than_distinct_frames_is_refused_not_repeated(tmp_path):
    root = videofolder_tree(tmp_path / "vf", per_class=(1, 1), frames=6, size=16)
    with pytest.raises(UserError, match="has 6 frames, fewer than the 8 that 2 clip"):
        load_dataset("videofolder", str(root), options=opts(tmp_path, clips_per_video=2, clip_cache="none"))
    from ssat.data.video import clip_indices
    picks = [i for clip in clip_indices(12, 4, 0, 3) for i in clip]
    assert len(set(picks)) == 12  # exactly enough: every frame once


def test_an_empty_faceforensics_split_file_is_one_line(ff_root, tmp_path):
    import shutil
    root = tmp_path / "ff"
    shutil.copytree(ff_root, root)
    (root / "splits" / "train.json").write_text("[]")
    with pytest.raises(UserError, match=r"splits/train.json lists no videos; restore the released split file"):
        load_dataset("faceforensics", str(root), options=opts(tmp_path, manipulations="Deepfakes"))


def test_split_ids_and_links_reaching_outside_the_root_need_allow_outside_root(ff_root, tmp_path):
    import shutil
    root = tmp_path / "ff"
    shutil.copytree(ff_root, root)
    real = root / "original_sequences" / "youtube" / "c23" / "videos"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(real / "000.mp4", outside / "secret.mp4")
    pairs = json.loads((root / "splits" / "test.json").read_text())
    for bad in ("../../../../../elsewhere/secret", str(outside / "secret")):
        (root / "splits" / "test.json").write_text(json.dumps(pairs + [[bad, pairs[0][0]]]))
        with pytest.raises(UserError, match="outside --data-root .*--allow-outside-root"):
            load_dataset("faceforensics", str(root), options=opts(tmp_path, manipulations="Deepfakes"))
    vf = videofolder_tree(tmp_path / "vf", per_class=(1, 1), frames=6, size=16)
    (vf / "train" / "class0" / "linked.mp4").symlink_to(outside / "secret.mp4")
    with pytest.raises(UserError, match="outside --data-root"):
        load_dataset("videofolder", str(vf), options=opts(tmp_path, clip_cache="none"))
    allowed = load_dataset("videofolder", str(vf), options=DataOptions(allow_outside_root=True,
                                                                       extra=opts(tmp_path, clip_cache="none").extra))
    assert len(allowed.train) == 4


def test_a_run_whose_every_video_is_skipped_says_clips_not_images(tmp_path, capsys):
    from ssat.cli import main
    root = videofolder_tree(tmp_path / "vf", per_class=(1, 1), frames=6, size=16)
    for video in root.rglob("*.mp4"):
        video.write_bytes(b"garbage")
    assert main(["train", *flags({**VIDEO, "dataset": "videofolder", "data_root": str(root), "clip_cache": "none",
                                  "on_bad_image": "skip", "out": str(tmp_path / "run")})]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the training split holds no clip (every video was skipped or none is listed)" in err


def test_split_naming_a_missing_video_is_one_line(ff_root, tmp_path):
    import shutil
    root = tmp_path / "ff"
    shutil.copytree(ff_root, root)
    (root / "manipulated_sequences" / "FaceSwap" / "c23" / "videos" / "000_001.mp4").unlink()
    with pytest.raises(UserError, match=r"000_001.mp4 is missing; restore it or remove it from the split"):
        load_dataset("faceforensics", str(root), options=opts(tmp_path, manipulations="FaceSwap", compression="c23"))
    (root / "splits" / "test.json").write_text("{bad")
    with pytest.raises(UserError, match="split file .*test.json cannot be read"):
        load_dataset("faceforensics", str(root), options=opts(tmp_path, manipulations="Deepfakes", compression="c23"))


def test_face_crop_from_boxes_and_detector_without_a_face(tmp_path):
    root = videofolder_tree(tmp_path / "vf", per_class=(1, 1), frames=6, size=32)
    boxes = {p.relative_to(root).as_posix(): [8, 8, 8, 8] for p in root.rglob("*.mp4")}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    data = load_dataset("videofolder", str(root), options=opts(tmp_path, face_crop="boxes", clip_cache="none",
                                                               face_boxes=str(tmp_path / "boxes.json")))
    assert data.train.images.shape == (3, 4, 16, 16, 3)
    pytest.importorskip("cv2")
    with pytest.raises(UserError, match="shows no face the detector finds; use --face-crop boxes"):
        load_dataset("videofolder", str(root), options=opts(tmp_path, face_crop="detect", clip_cache="none"))


def test_video_options_are_checked_in_one_line():
    for bad, match in (({"frames": 0}, "--frames"), ({"face_crop": "boxes"}, "--face-boxes"),
                       ({"manipulations": "Deepfakes,Nope"}, "--manipulations 'Deepfakes,Nope' names Nope"),
                       ({"tubelet_size": 0}, "--tubelet-size")):
        with pytest.raises(UserError, match=match):
            Config.from_dict(bad).validate()


def test_models_and_tasks_refuse_the_other_modality():
    cfg = Config.from_dict({})
    with pytest.raises(UserError, match="video models read clips"):
        build_backbone("video_vit_tiny", img_size=16, patch_size=8, in_chans=3, num_classes=2, cfg=cfg)
    with pytest.raises(UserError, match="image model; use a video model"):
        build_backbone("vit_tiny", img_size=16, patch_size=8, in_chans=3, num_classes=2, frames=4, cfg=cfg)
    from ssat.auxtasks import build_aux, resolve_aux
    net = backbone()
    with pytest.raises(UserError, match=r"takes clips of 4 frames of 16 px, got a batch of shape \(2, 3, 8, 16, 16\)"):
        net(torch.randn(2, 3, 8, 16, 16))
    from ssat.data.loaders import use_memory_loader
    from ssat.data.registry import DataBundle
    clips = DataBundle("v", None, None, [], ["a"], 3, 16, (0,) * 3, (1,) * 3, frames=4)
    with pytest.raises(UserError, match="video clips, which take the in-memory path only; use --loader auto"):
        use_memory_loader(Config.from_dict({"loader": "pil", "dataset": "videofolder"}), clips)
    assert resolve_aux("auto", net.capabilities) == "videomae"
    with pytest.raises(UserError, match="--aux mae needs a backbone that reads images .* use --aux videomae"):
        build_aux("mae", net, cfg)


# --- end to end ----------------------------------------------------------------------------------------------------

def run_cli(*args) -> None:
    from ssat.cli import main
    assert main([str(a) for a in args]) == 0


def flags(options: dict) -> list[str]:
    from conftest import as_flags
    return as_flags(options)


def test_every_method_trains_on_faceforensics_and_evaluates_across_manipulations(ff_root, cdf_root, tmp_path,
                                                                                 shallow_backbones, capsys):
    common = {**VIDEO, "dataset": "faceforensics", "data_root": str(ff_root), "manipulations": "Deepfakes",
              "clip_cache": str(tmp_path / "cache")}
    for method in ("scratch", "ssat", "pretrain"):
        run_cli("train", *flags({**common, "method": method, "out": str(tmp_path / method)}))
    run_cli("train", *flags({**common, "method": "sslft", "pretrained": str(tmp_path / "pretrain"),
                             "out": str(tmp_path / "sslft")}))
    summary = json.loads((tmp_path / "ssat" / "summary.json").read_text())
    assert summary["frames"] == 4 and summary["aux"] == "videomae"
    # the task says what it read: a videomae run records its mask ratio (the cross-manipulation sweep varies it)
    assert summary["mask_ratio"] == 0.75 and summary["aux_options"]["decoder_dim"] == 12
    assert 0 <= summary["test_auc"] <= 1 and summary["test_video_acc1"] is not None
    assert summary["data_options"]["manipulations"] == "Deepfakes"
    capsys.readouterr()
    run_cli("eval", "--checkpoint", tmp_path / "ssat", "--manipulations", "Face2Face")
    result = json.loads(capsys.readouterr().out)
    assert result["manipulations"] == "Face2Face" and result["n"] == 4 + 4 and "video_auc" in result
    run_cli("eval", "--checkpoint", tmp_path / "ssat", "--dataset", "celebdf", "--data-root", cdf_root)
    assert json.loads(capsys.readouterr().out)["n"] == 6
    evaluations = json.loads((tmp_path / "ssat" / "summary.json").read_text())["evaluations"]
    assert set(evaluations) == {"faceforensics:Face2Face", "celebdf"}
    with pytest.raises(UserError, match="is a video model .* ssat predict reads image files"):
        from ssat.inference import predict
        predict(str(tmp_path / "ssat"), [str(ff_root / "splits" / "test.json")])
    run_cli("data", "info", *flags({k: common[k] for k in ("dataset", "data_root", "frames", "frame_size",
                                                           "clip_cache", "manipulations")}), "--json")
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 4 and info["image_size"] == [16, 16] and info["classes"] == 2
    pytest.importorskip("matplotlib")  # the rest needs the report extra
    run_cli("reconstruct", "--checkpoint", tmp_path / "ssat", "--out", tmp_path / "rec.png", "--n", "2")
    drawn = json.loads(capsys.readouterr().out)
    assert drawn["clips"] == 2 and drawn["frames"] == 4 and (tmp_path / "rec.png").stat().st_size > 1000
    from ssat.cli import main
    assert main(["gradcam", "--checkpoint", str(tmp_path / "ssat"), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a video model; Grad-CAM here draws images" in err and len(err.splitlines()) == 1


def test_bench_times_a_video_step(capsys, shallow_backbones):
    run_cli("bench", "--model", "video_vit_tiny", "--frames", "4", "--img-size", "16", "--patch-size", "8",
            "--data", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--device", "cpu", "--decoder-dim", "12",
            "--decoder-heads", "2")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == "video_vit_tiny" and result["frames"] == 4 and result["loader_images_per_s"] > 0


def test_cross_manipulation_sweep_makes_the_report_table(ff_root, cdf_root, tmp_path, shallow_backbones,
                                                         monkeypatch):
    base = {**VIDEO, "dataset": "faceforensics", "data_root": str(ff_root), "clip_cache": str(tmp_path / "cache")}
    spec = {"name": "cross", "out": str(tmp_path / "runs"), "base": base,
            "grid": {"method": ["ssat"], "manipulations": ["Deepfakes", "FaceSwap"]},
            "eval_on": [{"manipulations": m} for m in ("Deepfakes", "FaceSwap")]
            + [{"dataset": "celebdf", "data_root": str(cdf_root)}]}
    path = tmp_path / "cross.yaml"
    import yaml
    path.write_text(yaml.safe_dump(spec))
    run_cli("sweep", path)
    run_cli("report", tmp_path / "runs" / "cross", "--out", tmp_path / "report")
    text = (tmp_path / "report" / "results.md").read_text()
    assert "Cross evaluation: video-level AUC" in text
    # runs trained on different manipulations are different settings, never pooled into one mean
    assert "16px Deepfakes 1 ep" in text and "16px FaceSwap 1 ep" in text
    assert "Cross evaluation" in (tmp_path / "report" / "index.html").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| vit") or "faceforensics:" in line]
    assert any("faceforensics:Deepfakes" in r for r in rows) and any("faceforensics:FaceSwap" in r for r in rows)
    table = (tmp_path / "report" / "cross_video_auc.csv").read_text().splitlines()
    assert table[0].split(",")[3:] == ["celebdf", "faceforensics:Deepfakes", "faceforensics:FaceSwap"]
    assert len(table) == 3 and all(cell for cell in table[1].split(",")[3:])
    # a sweep run again evaluates nothing it has already evaluated
    import ssat.inference
    monkeypatch.setattr(ssat.inference, "evaluate_checkpoint", lambda *a, **k: pytest.fail("evaluated again"))
    run_cli("sweep", path)


def test_without_the_video_extra_reading_a_video_names_it(tmp_path, monkeypatch):
    import sys
    root = videofolder_tree(tmp_path / "vf", per_class=(1, 1), frames=6, size=16)
    monkeypatch.setitem(sys.modules, "av", None)  # what a missing package looks like to `import`
    with pytest.raises(UserError, match=r"^reading videos needs av, which is not installed; pip install "
                                        r"'ssat\[video\]'$"):
        load_dataset("videofolder", str(root), options=opts(tmp_path, clip_cache="none"))
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(UserError, match=r"--face-crop detect needs cv2, .*'ssat\[video\]'"):
        load_dataset("videofolder", str(root), options=opts(tmp_path, clip_cache="none", face_crop="detect"))


def test_subsets_and_validation_split_take_whole_videos():
    from ssat.data.subsets import choose
    groups = [f"v{i // 3}" for i in range(60)]  # 20 videos of 3 clips
    targets = [int(g[1:]) % 2 for g in groups]
    train, val = choose(targets, val_fraction=0.3, seed=5, groups=groups)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(60))
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in val})  # no video on both sides
    assert len(val) == 3 * 6 and {targets[i] for i in val} == {0, 1}  # 30 % of each class's 10 videos
    train, _ = choose(targets, n_per_class=4, seed=5, groups=groups)
    assert len({groups[i] for i in train}) == 8 and len(train) == 24  # 4 videos per class, all their clips
    # one clip per video: exactly the item-level choice
    assert choose(targets, val_fraction=0.3, seed=5, groups=[str(i) for i in range(60)]) == \
        choose(targets, val_fraction=0.3, seed=5)


def test_the_video_configs_are_valid():
    import yaml

    from ssat.commands.sweep import points, read_sweep
    configs = Path(__file__).resolve().parents[1] / "configs" / "video"
    cfg = Config.from_dict(yaml.safe_load((configs / "faceforensics.yaml").read_text())).validate()
    assert (cfg.model, cfg.frames, cfg.img_size, cfg.aux, cfg.mask_ratio) == ("video_vit_small", 16, 224, "videomae",
                                                                               0.95)
    spec = read_sweep(str(configs / "ff-cross-manipulation.yaml"))
    runs = points(spec)
    assert len(runs) == 3 * 4 * 3 and len(spec["eval_on"]) == 5
    for _, options in runs:
        Config.from_dict(options).validate()
