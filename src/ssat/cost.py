"""What a run cost: parameters, FLOPs per image (inference and one training step), peak memory, hardware, and
energy / CO2 from codecarbon in offline mode (no network call; the grid's carbon intensity comes from --country).
Where codecarbon cannot measure, the fields are None and `energy_note` says why -- nothing is invented."""

from __future__ import annotations

import copy
import logging
import os
import platform
import resource
from typing import Optional

import torch
import torch.nn as nn

from ssat.errors import UserError
from ssat.flops import inference_flops_per_image, train_flops_per_image


def model_costs(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                aux_images: Optional[torch.Tensor] = None) -> dict:
    """Counted on a copy, with the random state restored: the run itself is not touched."""
    with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
        probe = copy.deepcopy(model)
        train = train_flops_per_image(probe, images, targets, aux_images)
        infer = inference_flops_per_image(probe.backbone, images)
    return {"params_m": round(sum(p.numel() for p in model.backbone.parameters()) / 1e6, 3),
            "gflops_inference": round(infer / 1e9, 4), "gflops_train_step": round(train / 1e9, 4)}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> dict:
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def peak_memory_gb(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3)}
    # ru_maxrss is in KiB on Linux: the process's peak resident memory (model, data, activations).
    return {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3)}


def check_country(code: str) -> None:
    """--country must be a grid codecarbon has data for (else it would report emissions for a made-up grid)."""
    try:
        from codecarbon.input import DataSource
        known = DataSource().get_global_energy_mix_data()
    except Exception:  # no codecarbon (or another layout of its data): the meter says it could not measure
        return
    if code not in known:
        raise UserError(f"--country {code} is not a grid codecarbon knows; give an ISO 3166 alpha-3 code such as "
                        f"USA, DEU, FRA or IND (or --no-energy)")


class EnergyMeter:
    """codecarbon's OfflineEmissionsTracker around the training loop of one process session."""

    def __init__(self, country: str, enabled: bool = True):
        self.country, self.tracker, self.note = country, None, None
        if not enabled:
            self.note = "not measured (--no-energy)"
            return
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError:
            self.note = "not measured: codecarbon is not installed (pip install 'ssat[energy]')"
            return
        try:
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            # No emissions.csv: the numbers go to summary.json. codecarbon 3.x says so with `output_methods`
            # (its `save_to_file` is deprecated there); older releases only know `save_to_file`.
            try:
                self.tracker = OfflineEmissionsTracker(country_iso_code=country, log_level="error", output_methods=[])
            except TypeError:
                self.tracker = OfflineEmissionsTracker(country_iso_code=country, log_level="error", save_to_file=False)
            self.tracker.start()
        except Exception as e:  # no codecarbon, unknown country, no readable sensor ...
            self.tracker, self.note = None, f"codecarbon could not measure here ({type(e).__name__}: {e})"

    def stop(self) -> dict:
        """-> {"energy_kwh", "emissions_kg", "energy_note"} of this session (None where unmeasured)."""
        if self.tracker is None:
            return {"energy_kwh": None, "emissions_kg": None, "energy_note": self.note}
        try:
            self.tracker.stop()
            data = self.tracker.final_emissions_data
            import codecarbon
            return {"energy_kwh": float(data.energy_consumed), "emissions_kg": float(data.emissions),
                    "energy_note": f"codecarbon {codecarbon.__version__} offline, {data.country_iso_code} grid; "
                                   f"cpu {data.cpu_model} ({data.tracking_mode} mode), gpu {data.gpu_model or 'none'}"}
        except Exception as e:
            return {"energy_kwh": None, "emissions_kg": None,
                    "energy_note": f"codecarbon could not measure here ({type(e).__name__}: {e})"}
