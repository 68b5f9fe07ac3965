"""`ssat bench`: time the real training step (engine.train_one_epoch) on synthetic data; one JSON line out.

Reports images/s, ms per step, achieved GFLOP/s (FLOPs from PyTorch's counter, ssat/flops.py) and that as a
fraction of the measured dense-matmul peak of the precision used; `--compare` adds the other method and the
SSAT/scratch step-time ratio; `--data` times the in-memory data path (augmentation included) beside the step;
`--profile` says where a step's time goes (kernels, device vs host time, host syncs, the costliest ops);
`--epoch-images N` times a whole epoch of N generated in-memory images against its steps' time."""

from __future__ import annotations

import dataclasses
import itertools
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Optional

import torch
from torch.autograd import DeviceType

from ssat import engine
from ssat.commands import add_config_flags
from ssat.config import Config, config_type
from ssat.data.batch_augment import BatchAugment
from ssat.data.memory import MemoryLoader
from ssat.data.transforms import crop_mode
from ssat.engine import resolve_device, resolve_precision
from ssat.errors import UserError
from ssat.flops import train_flops_per_image
from ssat.hostmem import keep_freed_memory
from ssat.models import MODELS, input_shape
from ssat.objective import build_model
from ssat.runs import seed_everything

# Profiler events at which the host waits for the device.
HOST_SYNCS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, dtype: Optional[torch.dtype], seconds: float = 1.0) -> float:
    """Dense square matmul throughput at this precision: the reference point for 'fraction of peak'."""
    n = 8192 if device.type == "cuda" else 2048
    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 3:
        a @ b
        reps += 1
        if reps % 4 == 0:
            _sync(device)
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def clip_frames(cfg: Config) -> int:
    """Video models are timed on clips of --frames frames; 0 for image models."""
    return cfg.frames if MODELS[cfg.model].capabilities.video else 0


class StepTimer:
    """One method's training step, exactly as `ssat train` runs it (engine.train_one_epoch), on a fixed batch."""

    def __init__(self, cfg: Config, device: torch.device, classes: int):
        seed_everything(cfg.seed)
        self.cfg, self.device, self.classes = cfg, device, classes
        self.amp_dtype, needs_scaler = resolve_precision(cfg.precision, device)
        frames = clip_frames(cfg)
        self.model = build_model(cfg, num_classes=classes, in_chans=3, frames=frames).to(device)
        self.optimizer = engine.build_optimizer(self.model, 1e-4, cfg.weight_decay, device)
        self.scheduler = engine.build_scheduler(self.optimizer, epochs=1, warmup_epochs=0,
                                                updates_per_epoch=1_000_000, min_lr=1e-6)
        self.scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)
        # as `ssat train` steps, the model's hooks included (a scheduled λ, DINO's teacher): progress over 10^6
        self.updates = engine.Updates(self.optimizer, self.scheduler, self.scaler, total=1_000_000)
        self.place = engine.Placement(device, self.amp_dtype)
        self.images = torch.randn(cfg.batch_size, *input_shape(3, cfg.img_size, frames), device=device)
        self.targets = torch.randint(0, classes, (cfg.batch_size,), device=device)
        self.flops = train_flops_per_image(self.model, self.images, self.targets)
        self.step_model = engine.compile_model(self.model, cfg.compile_mode) if cfg.compile else self.model
        self.times: list[float] = []

    def run(self, n: int) -> float:
        """Seconds per step over `n` steps (the epoch ends with a host read-out, so the device is synchronised)."""
        _sync(self.device)
        t0 = time.perf_counter()
        engine.train_one_epoch(self.step_model, [(self.images, self.targets)] * n, self.updates, 0, place=self.place)
        return (time.perf_counter() - t0) / n

    def profile(self, n: int, trace: Optional[Path] = None) -> dict:
        """`n` steps under torch.profiler -> per step: device kernels (on a GPU; else the aten ops the host runs),
        device-busy and host time, host syncs, and the ops with the most self time (device time on a GPU)."""
        from torch.profiler import ProfilerActivity, profile
        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            seconds = self.run(n)
        events = prof.events()
        on_device = [e for e in events if e.device_type == DeviceType.CUDA]
        syncs = [e for e in events if e.name in HOST_SYNCS]
        self_time = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
        ops = sorted(prof.key_averages(), key=self_time, reverse=True)[:10]
        result = {"steps": n, "ms_per_step": round(seconds * 1000, 2),
                  # one read-out ends the profiled epoch (engine.train_one_epoch): the rest are the steps'
                  "host_syncs_per_step": round(max(len(syncs) - 1, 0) / n, 2),
                  "top_ops": [{"op": e.key, "ms_per_step": round(self_time(e) / 1000 / n, 3),
                               "calls_per_step": round(e.count / n, 1)} for e in ops]}
        if cuda:
            busy = sum(e.self_device_time_total for e in on_device) / 1000 / n
            result.update(kernels_per_step=round(len(on_device) / n, 1), device_ms_per_step=round(busy, 2),
                          device_busy=round(busy / (seconds * 1000), 3))
        else:
            result["aten_ops_per_step"] = round(sum(1 for e in events if e.name.startswith("aten::")) / n, 1)
        if trace is not None:
            trace.parent.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(trace))
            result["trace"] = str(trace)
        return result

    def epoch(self, images: int) -> dict:
        """One epoch over `images` generated uint8 images held on the device, through the in-memory loader with the
        default augmentation, exactly as `ssat train` feeds it -> its time against its steps' median time."""
        loader = synthetic_loader(self.cfg, self.device, images, self.classes)
        run = lambda batches: engine.train_one_epoch(self.step_model, batches, self.updates, 0, place=self.place)
        run(list(itertools.islice(loader, 2)))  # untimed: a compiled step may specialise on the loader's batches
        _sync(self.device)
        t0 = time.perf_counter()
        run(loader)
        seconds = time.perf_counter() - t0
        steps_s = len(loader) * statistics.median(self.times)
        return {"images": images, "steps": len(loader), "epoch_s": round(seconds, 4),
                "steps_s": round(steps_s, 4), "epoch_over_steps": round(seconds / steps_s, 3)}

    def result(self, warmup_s: float) -> dict:
        per_step = statistics.median(self.times)
        batch = self.cfg.batch_size
        return {"method": self.cfg.method, "images_per_s": round(batch / per_step, 1),
                "ms_per_step": round(per_step * 1000, 1), "gflop_per_image": round(self.flops / 1e9, 4),
                "gflops_per_s": round(self.flops * batch / per_step / 1e9, 1), "warmup_s": round(warmup_s, 2)}


def time_steps(timers: list, *, steps: int, warmup: int) -> tuple[list[dict], list[list[float]]]:
    """-> (each timer's result with its median step time, each timer's per-round seconds per step).

    Timers (StepTimer, or anything with its run(n) / times / result(warmup_s)) take turns round by round (the
    order flipped every round), each round about 0.2 s of steps, so that round r of every timer ran at nearly the
    same time; compare them with `paired_ratio`."""
    warm = [t.run(warmup) * warmup for t in timers]  # includes compiling, with --compile
    step_s = min(t.run(1) for t in timers)
    per_round = max(1, min(steps, round(0.2 / step_s)))  # 1 step on a CPU, more on GPUs
    for r in range(-(-steps // per_round)):
        n = min(per_round, steps - r * per_round)
        for t in (timers if r % 2 == 0 else timers[::-1]):
            t.times.append(t.run(n))
    return [t.result(w) for t, w in zip(timers, warm)], [t.times for t in timers]


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[r] / b[r]. A slow spell of a shared machine then falls on both sides of the ratios it
    touches, instead of on whichever method's median it shifts."""
    return statistics.median(x / y for x, y in zip(a, b))


def paired_ratio_quartiles(a: list[float], b: list[float]) -> list[float]:
    """[first, third] quartile of the per-round ratios a[r] / b[r]: how far one round's ratio strays from the
    median, i.e. how much a single short run of the comparison can be trusted."""
    ratios = [x / y for x, y in zip(a, b)]
    if len(ratios) < 2:
        return [ratios[0]] * 2
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return [q1, q3]


def synthetic_loader(cfg: Config, device: torch.device, n: int, classes: int = 1) -> MemoryLoader:
    """The in-memory training path (default augmentation, two views if asked) over `n` random uint8 images (clips)
    of the run's shape, generated on `device`."""
    images = torch.randint(0, 256, (n, *input_shape(3, cfg.img_size, clip_frames(cfg))), dtype=torch.uint8,
                           device=device)
    augment = BatchAugment(size=cfg.img_size, crop=crop_mode(cfg), hflip=True, rand_augment=cfg.rand_augment,
                           reprob=cfg.reprob, mean=(0.5,) * 3, std=(0.25,) * 3)
    return MemoryLoader(images, [i % classes for i in range(n)], batch_size=cfg.batch_size, device=device,
                        mean=(0.5,) * 3, std=(0.25,) * 3, augment=augment, two_views=cfg.two_views)


def time_loader(cfg: Config, device: torch.device, *, batches: int = 20) -> float:
    """Images (clips) per second of the in-memory path's training batches on `device`."""
    seed_everything(cfg.seed)
    n = cfg.batch_size * batches
    loader = synthetic_loader(cfg, device, n)
    for _ in loader:  # warm-up epoch
        pass
    _sync(device)
    t0 = time.perf_counter()
    for _ in loader:
        pass
    _sync(device)
    return n / (time.perf_counter() - t0)


def bench(cfg: Config, *, compare: bool, steps: int, warmup: int, classes: int, data: bool, peak: bool,
          profile: Optional[Path] = None, profile_steps: int = 5, epoch_images: int = 0) -> dict:
    """Time `cfg`'s training step (and, with `compare`, the other method's, in turns). `profile`: a folder for the
    profiler's traces (each method's summary goes into the result); `epoch_images`: also time a whole epoch."""
    if cfg.method not in ("scratch", "ssat"):
        raise UserError(f"ssat bench times --method scratch or ssat, got {cfg.method}")
    device = resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, device=str(device))
    method, compile = cfg.method, cfg.compile
    amp_dtype, _ = resolve_precision(cfg.precision, device)
    result = {"model": cfg.model, "img_size": cfg.img_size, "patch_size": cfg.patch_size,
              "frames": clip_frames(cfg) or None,
              "batch_size": cfg.batch_size, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
              or platform.machine(), "threads": torch.get_num_threads(),
              "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32", "compile": compile,
              "decoder_heads": cfg.decoder_heads, "steps": steps}
    methods = [cfg] + ([dataclasses.replace(cfg, method="scratch" if method != "scratch" else "ssat")]
                       if compare else [])
    timers = [StepTimer(c, device, classes) for c in methods]
    timed, times = time_steps(timers, steps=steps, warmup=warmup)
    for t, r in zip(timers, timed):
        if profile is not None:
            r["profile"] = t.profile(profile_steps, profile / f"trace-{t.cfg.method}.json")
        if epoch_images:
            r["epoch"] = t.epoch(epoch_images)
    result.update(timed[0])
    if peak:
        result["peak_gflops_per_s"] = round(matmul_peak_gflops(device, amp_dtype), 1)
        result["fraction_of_peak"] = round(result["gflops_per_s"] / result["peak_gflops_per_s"], 3)
    if compare:
        result["compare"] = timed[1]
        ssat, scratch = (result, result["compare"]) if method != "scratch" else (result["compare"], result)
        ssat_times, scratch_times = times if method != "scratch" else times[::-1]
        result["ssat_over_scratch_step_time"] = round(paired_ratio(ssat_times, scratch_times), 3)
        result["ssat_over_scratch_step_time_quartiles"] = [
            round(q, 3) for q in paired_ratio_quartiles(ssat_times, scratch_times)]
        result["ssat_over_scratch_flops"] = round(ssat["gflop_per_image"] / scratch["gflop_per_image"], 3)
    if data:
        result["loader_images_per_s"] = round(time_loader(cfg, device), 1)
        result["loader_over_step"] = round(result["loader_images_per_s"] / result["images_per_s"], 2)
    result["torch"] = torch.__version__
    return result


def main(args) -> int:
    if min(args.steps, args.warmup, args.classes, args.profile_steps) < 1:
        raise UserError(f"--steps, --warmup, --classes and --profile-steps must be at least 1, got {args.steps}, "
                        f"{args.warmup}, {args.classes} and {args.profile_steps}")
    if args.epoch_images < 0:
        raise UserError(f"--epoch-images must be 0 (off) or a number of images, got {args.epoch_images}")
    if args.profile:  # before minutes of timing, not after
        try:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--profile {args.profile}: cannot create the folder ({e.strerror}); give a writable "
                            f"path") from None
    if args.keep_freed_memory:
        keep_freed_memory()
    options = {name: getattr(args, name) for name in config_type().__dataclass_fields__ if hasattr(args, name)}
    cfg = Config.from_dict({"img_size": 32, "patch_size": 4, "batch_size": 128, **options},
                           source="command line").validate()
    print(json.dumps(bench(cfg, compare=args.compare, steps=args.steps, warmup=args.warmup, classes=args.classes,
                           data=args.data, peak=not args.no_peak, profile_steps=args.profile_steps,
                           profile=Path(args.profile) if args.profile else None,
                           epoch_images=args.epoch_images)), flush=True)
    return 0


# `ssat bench` times a step built from these Config options (None: Config's default; else bench's own).
BENCH_OPTIONS = {"model": None, "img_size": 32, "patch_size": 4, "batch_size": 128, "method": None,
                 "decoder_dim": None, "decoder_depth": None, "decoder_heads": None, "lam": None, "balance": None,
                 "mask_ratio": None, "device": None, "precision": None, "compile": None, "compile_mode": None,
                 "global_pool": None, "norm_pix_loss": None,
                 "frames": None, "tubelet_size": None}  # video models

def add_parsers(sub) -> None:
    """This command's parser (cli.py lists the commands; each owns its flags)."""
    bn = sub.add_parser("bench", help="time the training step (and the in-memory data path); one JSON line",
                        description="Time warm-up + N optimizer steps of the real training loop on synthetic "
                                    "data and print images/s, ms/step and achieved GFLOP/s.")
    add_config_flags(bn, only=BENCH_OPTIONS)  # the same names and checks as `ssat train`
    bn.add_argument("--compare", action="store_true", help="also time the other method; adds the step-time ratio")
    bn.add_argument("--keep-freed-memory", action="store_true", help="as `ssat train --keep-freed-memory`")
    bn.add_argument("--steps", type=int, default=10, help="timed steps [default: 10]")
    bn.add_argument("--warmup", type=int, default=3, help="untimed steps first [default: 3]")
    bn.add_argument("--classes", type=int, default=10, help="classifier outputs [default: 10]")
    bn.add_argument("--data", action="store_true", help="also time the in-memory data path (default augmentation)")
    bn.add_argument("--no-peak", action="store_true", help="skip measuring the matmul peak (about 1 s)")
    bn.add_argument("--profile", metavar="DIR", help="also profile each method's step (torch.profiler): kernels, "
                    "device vs host time, host syncs and the costliest ops per step; Chrome traces into DIR")
    bn.add_argument("--profile-steps", type=int, default=5, help="steps profiled with --profile [default: 5]")
    bn.add_argument("--epoch-images", type=int, default=0, metavar="N",
                    help="also time one epoch of N generated in-memory images (e.g. 50000, CIFAR's size) against "
                         "its steps' time [default: 0, off]")
    bn.set_defaults(handler=main)
