"""One place for every training option: its default (the reference implementation's unless noted), its help
text, its command-line flag and its valid range. The CLI flags, the YAML files and `config.yaml` in a run
directory are all generated from / checked against the `Config` dataclass below."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from ssat.errors import EXTENSION_HINT, UserError, first_line
from ssat.hubweights import is_named
from ssat.options import OPTION_SETS, at_least, check_fields, opt, positive, within
from ssat.plugins import ERRORS as PLUGIN_ERRORS
from ssat.plugins import load_builtin


@dataclass
class CoreConfig:
    # --- data -------------------------------------------------------------------------------------------
    dataset: str = opt("digits", "data set name (see `ssat train --help` epilog)", "data")
    data_root: Optional[str] = opt(None, "folder holding the data set's files (not needed for digits)", "data")
    download: bool = opt(False, "download the data set into --data-root if it is missing (needs internet)", "data")
    # (--train-split, --on-bad-image, --allow-outside-root: every data set's, declared in data/registry.py)
    gray_to_rgb: bool = opt(False, "replicate grayscale images to 3 channels (default: 1 input channel)", "data")
    stats: str = opt("dataset", "normalisation: 'dataset' (the set's standard constants), 'compute' (estimated "
                                "from the training images) or 'imagenet'", "data",
                     choices="dataset,compute,imagenet")
    fraction: float = opt(1.0, "keep this stratified, seeded fraction of the training set, in (0, 1]", "data",
                          check=within(0, 1, "(]", "1 = all images"))
    per_class: Optional[int] = opt(None, "keep N seeded training images per class instead (all of a class that has "
                                         "fewer)", "data", check=at_least(1))
    subset_file: Optional[str] = opt(None, "train on exactly the images of this subset.json (from another run)",
                                     "data")
    subset_seed: int = opt(127, "seed of the --fraction subset and of the validation split (127 as the "
                                "reference; independent of --seed so every method/seed sees the same images)", "data")
    val_fraction: float = opt(0.1, "hold out this stratified, seeded fraction of the training images as a "
                                   "validation split, in [0, 1): it selects the best epoch (test accuracy is then "
                                   "reported at that epoch too) and is what to tune on; 0 = none (the reference)",
                              "data", check=within(0, 1, "[)", "0.1 holds out a tenth of the training images"))
    val_per_class: Optional[int] = opt(None, "hold out N training images per class as the validation split "
                                             "instead (each class keeps at least one training image)", "data",
                                             check=at_least(1))
    img_size: Optional[int] = opt(None, "input size in pixels (default: the data set's native size)", "data",
                                  check=at_least(2))
    loader: str = opt("auto", "'memory' (images decoded once into a uint8 tensor on the training device, batched "
                              "augmentation there), 'pil' (DataLoader + PIL/timm transforms) or 'auto' (memory when "
                              "the data set is an in-memory array of one image size)", "data",
                      choices="auto,memory,pil")
    workers: Optional[int] = opt(None, "data-loader worker processes of --loader pil (default: 0 on CPU, 8 on "
                                       "CUDA)", "data", check=at_least(0))

    # --- augmentation -----------------------------------------------------------------------------------
    rand_augment: str = opt("rand-m9-mstd0.5-inc1", "timm RandAugment policy, or 'none'", "augmentation")
    reprob: float = opt(0.25, "random-erasing probability (pixel mode)", "augmentation", check=within(0, 1))
    hflip: Optional[bool] = opt(None, "random horizontal flip (default: on, except for data sets where a flip "
                                      "changes the label, e.g. digits)", "augmentation")
    crop: str = opt("auto", "train crop: 'pad' (random crop with zero padding of img/8, for small images), 'rrc' "
                            "(timm random-resized crop, as the reference at 224 px), 'none' (the whole image) or "
                            "'auto' (none below 16 px, pad below 64 px, rrc above)", "augmentation",
                    choices="auto,pad,rrc,none")
    mixup: float = opt(0.0, "Mixup alpha (0.8 in DeiT / MAE fine-tuning recipes; 0 = off); both streams see the "
                            "mixed images, the classifier the mixed targets", "augmentation",
                            check=at_least(0, "0 = off"))
    cutmix: float = opt(0.0, "CutMix alpha (1.0 in DeiT recipes; 0 = off); with --mixup too, one of the two per "
                             "batch", "augmentation", check=at_least(0, "0 = off"))
    mix_prob: float = opt(1.0, "probability of mixing a batch when --mixup / --cutmix is on", "augmentation",
                          check=within(0, 1))
    two_views: bool = opt(False, "feed the auxiliary stream a second, independently augmented view of each image "
                                 "(default: the same augmented image, as the released reference code)",
                          "augmentation")

    # --- model ------------------------------------------------------------------------------------------
    model: str = opt("vit_tiny", "backbone name (`ssat train --help` lists them)", "model")
    patch_size: Optional[int] = opt(None, "patch size (default: 2 below 16 px, 4 below 64 px, else 16)", "model",
                                    check=at_least(1))
    drop_path: float = opt(0.1, "stochastic-depth rate of the encoder", "model", check=within(0, 1, "[)"))
    global_pool: str = opt("token", "classifier input: 'token' (class token, as the reference) or 'avg' "
                                    "(mean of patch tokens)", "model", choices="token,avg")
    init: str = opt("timm", "encoder initialisation scheme: 'timm' (truncated normal, std 0.02) or 'mae' "
                            "(xavier-uniform, as the reference; trains much slower with the small patches of small "
                            "images)", "model", choices="timm,mae")
    pretrained: Optional[str] = opt(None, "start the encoder from these weights (classifier head re-initialised): "
                                          "'timm' (the backbone's default timm weights, e.g. ImageNet), 'timm:TAG', "
                                          "'hf-hub:USER/REPO' (fetched once into the Hugging Face cache), a `ssat "
                                          "pretrain` / `ssat train` run directory or its model.safetensors, a timm "
                                          "checkpoint file (.safetensors, .pth, .bin) or `local-dir:FOLDER`", "model")
    pretrained_sha256: Optional[str] = opt(None, "the SHA-256 of the --pretrained weights file: recorded by every "
                                                 "run that starts from weights; given (or in a config.yaml), other "
                                                 "weights are refused", "model")
    pos_embed: str = opt("sincos", "encoder position embedding: 'sincos' (fixed 2-D sin-cos, as the reference) or "
                                   "'learned'", "model", choices="sincos,learned")

    # --- method -----------------------------------------------------------------------------------------
    method: str = opt("ssat", "'ssat' (primary + auxiliary loss), 'scratch' (primary loss only), 'sslft' "
                              "(fine-tune a --pretrained encoder, or pre-train it first: --pretrain-epochs) "
                              "or 'pretrain' (auxiliary loss only, no labels; what `ssat pretrain` runs)", "method")
    aux: str = opt("auto", "auxiliary task of --method ssat / pretrain: 'auto' (mae where the backbone drops "
                           "patches, i.e. ViTs; simmim where it takes a mask token, i.e. Swin / CvT; videomae for "
                           "video models), one of the registered tasks (`ssat models` lists them per backbone) or "
                           "several joined by '+' (mae+drloc; weighted by --aux-weights)", "method")
    lam: float = opt(0.9, "λ in λ·L_primary + (1−λ)·L_aux, in [0, 1]; with --balance ema the weight of the "
                          "primary loss after each loss is divided by its running mean (0.9 with ema: the digits "
                          "study's choice; the reference: 0.1 with none); with a schedule, its value at the start",
                     "method", flag="--lambda", check=within(0, 1, "[]", "0.1 is the reference value"))
    lambda_schedule: str = opt("constant", "how λ moves over training: 'constant' (reference), or 'linear' / "
                                           "'cosine' from --lambda to --lambda-end", "method",
                               choices="constant,linear,cosine")
    lambda_end: Optional[float] = opt(None, "λ at the end of a --lambda-schedule, in [0, 1]", "method",
                                      check=within(0, 1))
    balance: str = opt("ema", "rebalance the two losses: 'ema' (each loss divided by its running mean, then "
                              "λ-weighted; weights sum to 1; the digits study's choice), 'none' (λ and 1−λ as given, "
                              "the reference) or 'uncertainty' (learned log-variances, Kendall et al. 2018, clamped)",
                       "method", choices="none,ema,uncertainty")
    grad_norm_every: int = opt(25, "every N optimizer steps, measure the gradient norm of each weighted loss on "
                                   "the shared encoder (epoch means in metrics.jsonl; the backward pass is split in "
                                   "two, no extra compute); 0 = off", "method", check=at_least(0, "0 = off"))
    mask_ratio: float = opt(0.75, "fraction of patches hidden from the auxiliary stream, in (0, 1)", "method",
                            check=within(0, 1, "()", "0.75 is MAE's"))
    pretrain_epochs: int = opt(0, "--method sslft: self-supervised pre-training epochs run first, into OUT/pretrain "
                                  "(0: --pretrained must name a pre-trained run)", "method", check=at_least(0))
    layer_decay: float = opt(1.0, "layer-wise lr decay (0.75 is usual for fine-tuning a pre-trained ViT; 1 = off)",
                             "method", check=within(0, 1, "(]"))
    label_smoothing: float = opt(0.1, "label smoothing of the classification loss", "method", check=within(0, 1, "[)"))

    # --- optimisation -----------------------------------------------------------------------------------
    epochs: int = opt(100, "training epochs", "optimisation", check=at_least(1))
    warmup_epochs: float = opt(5, "linear warm-up epochs, then half-cycle cosine to --min-lr", "optimisation",
                               check=at_least(0))
    batch_size: int = opt(64, "images per step per process", "optimisation", check=at_least(1))
    accum_steps: int = opt(1, "gradient-accumulation steps (effective batch = batch-size × accum-steps × "
                              "processes)", "optimisation", check=at_least(1))
    blr: float = opt(1e-3, "base learning rate: lr = blr × effective batch / 256", "optimisation", check=positive())
    lr: Optional[float] = opt(None, "absolute learning rate (overrides --blr)", "optimisation", check=positive())
    min_lr: float = opt(1e-6, "final learning rate of the cosine schedule", "optimisation", check=at_least(0))
    weight_decay: float = opt(0.05, "AdamW weight decay (none on norms, biases, position embeddings, tokens)",
                              "optimisation", check=at_least(0))
    model_ema: float = opt(0.0, "keep an exponential moving average of the encoder and head with this decay per "
                                "optimizer step (e.g. 0.999; 0 = off): validation, test, selection and the saved "
                                "weights then use the averaged model", "optimisation",
                                check=within(0, 1, "[)", "0 = off"))
    clip_grad: Optional[float] = opt(None, "clip the gradient norm to this value (default: no clipping)",
                                     "optimisation", check=positive())

    # --- run --------------------------------------------------------------------------------------------
    seed: int = opt(0, "random seed (model init, augmentation, masking)", "run")
    eval_every: Optional[int] = opt(None, "evaluate the test split every K epochs (and always after the last); "
                                          "default: every epoch without a validation split, only after the last "
                                          "with one; 0 = only after the last", "run",
                                          check=at_least(0, "0 = only after the last epoch"))
    preset: Optional[str] = opt(None, "start from a named recipe (`ssat train --help` lists them; 'paper' is the "
                                      "reference implementation's); --config and flags override its values", "run")
    tag: Optional[str] = opt(None, "a name for this run's recipe in `ssat table` / `ssat report` (default: "
                                   "derived from the method and its options)", "run")
    deterministic: bool = opt(False, "deterministic algorithms (bit-identical reruns and resumes on CPU)", "run")
    device: str = opt("auto", "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'", "run")
    precision: str = opt("auto", "'auto' (bf16 autocast on GPUs from Ampere on, fp16 on older GPUs, fp32 on "
                                 "CPUs), 'fp32', 'bf16' or 'fp16' (fp16 autocast + GradScaler, as the reference)",
                         "run", choices="auto,fp32,bf16,fp16")
    country: str = opt("USA", "ISO 3166 alpha-3 code of the electricity grid, for CO2 from codecarbon (offline: "
                              "no network call)", "run")
    energy: bool = opt(True, "measure energy / CO2 with codecarbon (--no-energy to skip)", "run")
    compile: bool = opt(False, "torch.compile the model (slow first steps; pays off on long GPU runs)", "run")
    compile_mode: str = opt("default", "torch.compile mode with --compile: 'default', 'reduce-overhead' (also CUDA "
                                       "graphs, on a GPU), 'max-autotune' or 'max-autotune-no-cudagraphs'", "run",
                            choices="default,reduce-overhead,max-autotune,max-autotune-no-cudagraphs")
    out: Optional[str] = opt(None, "run directory (default: runs/<dataset>-<model>-<method>-s<seed>): a new or "
                                   "empty folder, or an earlier ssat run's; a folder holding other files is refused, "
                                   "and ssat only ever removes the run files it wrote itself", "run")
    quiet: bool = opt(False, "no progress bar or per-epoch lines", "run")
    log: str = opt("none", "also log per-step losses, their weights and the lr, and per-epoch metrics: "
                           "'tensorboard' (event files in the run directory's tb/; pip install 'ssat[tensorboard]'), "
                           "'wandb' (Weights & Biases, offline into RUN/wandb unless WANDB_MODE says otherwise, "
                           "no account needed; `wandb sync` uploads later; pip install 'ssat[wandb]') or 'none'",
                     "run", choices="none,tensorboard,wandb")
    log_every: int = opt(50, "every N optimizer steps: a progress line on stderr when it is not a terminal (under "
                             "nohup or a batch scheduler, where there is no progress bar) and a --log point; 0 = off",
                         "run", check=at_least(0, "0 = off"))
    overwrite: bool = opt(False, "replace a finished run in --out (without it, a finished run is never overwritten)",
                          "run")

    # ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def default_out(self) -> str:
        """The run directory when --out is not given."""
        return f"runs/{self.dataset}-{self.model}-{self.method}-s{self.seed}"

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "Config":
        """Defaults < the named --preset's values < `values`."""
        if values.get("preset") is not None:
            values = {**preset_values(str(values["preset"])), **values}
        if values.get("init") not in (None, "timm", "mae") and values.get("pretrained") is None:
            # runs written before --pretrained existed kept the weights' path in --init
            values = {**values, "pretrained": values["init"], "init": "timm"}
        if cls is Config:  # options of loaded extensions too
            cls = config_type()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"{source}: unknown option(s) {', '.join(unknown)}; `ssat train --help` lists the valid "
                            f"ones{EXTENSION_HINT}")
        cfg = cls(**values)
        cfg.coerce_types(source)
        return cfg

    def coerce_types(self, source: str = "config") -> None:
        """YAML gives `1e-3` as a string and `5` as an int: bring each value to its field's type."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = str(f.type).replace("Optional[", "").rstrip("]")
            if value is None:  # `device: null` in a YAML file: only options that may be unset take it
                if not str(f.type).startswith("Optional[") and f.default is not None:
                    raise UserError(f"{source}: option '{f.name}' must be a {kind}, got null; give it a value or "
                                    f"leave it out (default: {f.default})")
                continue
            try:
                if kind == "float":
                    value = float(value)
                elif kind == "int":
                    if isinstance(value, float) and not value.is_integer():
                        raise ValueError
                    value = int(value)
                elif kind == "bool" and not isinstance(value, bool):
                    raise ValueError
                elif kind == "str":
                    value = str(value)
            except (TypeError, ValueError, OverflowError):
                raise UserError(f"{source}: option '{f.name}' must be a {kind}, got {value!r}") from None
            if kind == "float" and not math.isfinite(value):
                raise UserError(f"{source}: option '{f.name}' must be a finite number, got {value}")
            setattr(self, f.name, value)

    def validate(self) -> "Config":
        """Names against the registries, each option's own rule (declared on its field), then the relations between
        options and each task's and extension's own checks. Raises UserError naming the fix."""
        from ssat.auxtasks import check_aux
        from ssat.data import DATASETS
        from ssat.methods import METHODS
        from ssat.models import MODELS

        def one_of(what: str, value: str, valid) -> None:
            if value not in valid:
                raise UserError(f"unknown {what} '{value}'; choose one of: {', '.join(sorted(valid))}"
                                + (EXTENSION_HINT if what in ("data set", "model") else ""))

        one_of("data set", self.dataset, DATASETS)
        one_of("model", self.model, MODELS)
        one_of("method", self.method, METHODS)
        aux_specs = check_aux(self.aux)  # one task or several (mae+drloc); 'auto' alone
        for f in dataclasses.fields(self):
            if f.metadata.get("choices"):
                one_of(f.name.replace("_", "-"), getattr(self, f.name), f.metadata["choices"].split(","))
        check_fields(self, type(self))  # each option's own rule, declared on its field

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise UserError(message)

        check(self.val_per_class is None or self.val_fraction == 0.0,
              "--val-per-class and --val-fraction exclude each other; give one")
        check(self.lambda_schedule == "constant" or self.lambda_end is not None,
              f"--lambda-schedule {self.lambda_schedule} moves λ from --lambda to --lambda-end; give --lambda-end")
        check(self.mixup + self.cutmix == 0 or self.batch_size % 2 == 0,
              f"--mixup / --cutmix pair the images of a batch: give an even --batch-size, got {self.batch_size}")
        for spec in aux_specs:  # what each task itself refuses ('auto' resolves to a one-view task)
            spec.check(self)
        check(self.mixup + self.cutmix == 0 or not self.two_views,
              "--mixup / --cutmix with two views (--two-views) is not supported: the views would be mixed "
              "differently; drop one of them")
        check(self.per_class is None or self.fraction == 1.0, "--per-class and --fraction exclude each other; give one")
        if self.pretrained is not None and not is_named(self.pretrained):
            where = self.pretrained[len("local-dir:"):] if self.pretrained.startswith("local-dir:") else self.pretrained
            check(Path(where).expanduser().exists(),
                  f"--pretrained {self.pretrained}: no such file or folder; give a run directory, a model.safetensors, "
                  f"a timm checkpoint file or local-dir:FOLDER")
        check(not METHODS[self.method].pretrained_init or self.pretrain_epochs > 0 or self.pretrained is not None,
              "--method sslft fine-tunes a pre-trained encoder: pass --pretrained RUN_DIR (from `ssat pretrain`) or "
              "--pretrain-epochs E to pre-train first")
        if self.img_size is not None and self.patch_size is not None:
            check(self.img_size % self.patch_size == 0,
                  f"--img-size {self.img_size} is not a multiple of --patch-size {self.patch_size}; "
                  f"pick a patch size that divides it")
        for options in dict.fromkeys(OPTION_SETS.values()):  # each extension checks the options it declared
            if hasattr(options, "check"):
                options.check(self)
        return self


def _assemble(base: type, option_sets: list[type], doc: str) -> type:
    """`base` + the options the given parts declared (ssat.options): one dataclass, so flags, YAML keys,
    config.yaml and validation treat them all alike."""
    fields = {f.name: f for options in dict.fromkeys(option_sets) for f in dataclasses.fields(options)}
    extra = [(f.name, f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)),
              field(default=f.default, metadata=f.metadata)) for f in fields.values()]  # a subclass's fields once
    clash = sorted({name for name, _, _ in extra} & {f.name for f in dataclasses.fields(base)})
    if clash:  # recorded, so the CLI reports it in one line; the core option stays what it is
        owners = [o for o, cls in OPTION_SETS.items() if {f.name for f in dataclasses.fields(cls)} & set(clash)]
        PLUGIN_ERRORS.append(f"{owners[0] if owners else 'an extension'} declares option(s) {', '.join(clash)}, "
                             f"which ssat's core already has; rename them")
        extra = [e for e in extra if e[0] not in clash]
    return dataclasses.make_dataclass("Config", extra, bases=(base,), namespace={"__module__": __name__,
                                      "__doc__": doc})


load_builtin()
_BUILTIN = list(OPTION_SETS)
# ssat's core options + those its own tasks, backbones and data sets declare; config.pyi is its typed view
Config = _assemble(CoreConfig, [OPTION_SETS[o] for o in _BUILTIN],
                   "Every option of a run: ssat's core options and those its own parts declare.")
_EXTENDED: dict[tuple, type] = {}


def config_type() -> type[Config]:
    """The class a run's options are read into: `Config`, or a subclass of it with the options of the extensions
    loaded since (`ssat.plugins.load_plugins()`, which the CLI and `ssat.config()` call)."""
    extensions = tuple(o for o in OPTION_SETS if o not in _BUILTIN)
    if not extensions:
        return Config
    if extensions not in _EXTENDED:
        _EXTENDED[extensions] = _assemble(Config, [OPTION_SETS[o] for o in extensions],
                                          "Every option of a run, with the loaded extensions' options.")
    return _EXTENDED[extensions]


def default_patch_size(img_size: int, model: str = "vit_tiny") -> int:
    """Small images get small patches so the encoder still sees a grid of >= 4x4 tokens. Hierarchical models
    (Swin, CvT) downsample 8x more after their stem, so their stem stride is 4 at 64 px and above (as published
    at 224 px) and 2 below."""
    from ssat.models import MODELS
    if model in MODELS and MODELS[model].capabilities.hierarchical:
        return 2 if img_size < 64 else 4
    return 2 if img_size < 16 else 4 if img_size < 64 else 16


# What may differ when a run is resumed: where/how it runs and how long, and the step size (to go on after a
# divergence); never what it computes.
RESUMABLE: set[str] = {"device", "workers", "quiet", "epochs", "data_root", "download", "compile", "compile_mode",
                       "country", "energy", "lr", "blr", "clip_grad", "log", "log_every"}

PRESETS: Path = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def preset_values(name: str) -> dict:
    """A named recipe's options (ssat/presets/NAME.yaml)."""
    if name not in preset_names():
        raise UserError(f"unknown preset '{name}'; choose one of: {', '.join(preset_names())}")
    values = load_yaml(PRESETS / f"{name}.yaml")
    values.pop("preset", None)
    return values


def read_yaml(path: str | Path, what: str = "config file", fix: str = "pass an existing YAML file to --config"):
    """The one YAML reader (configs, sweep files): UTF-8 with or without a byte-order mark, every failure one line
    naming the file; -> what the file holds (None for an empty one)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; {fix}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read ({e.strerror}); check the path") from None
    except yaml.YAMLError as e:
        raise UserError(f"{what} {path} is not valid YAML ({first_line(e)}); fix its syntax") from None


def option_name(key) -> str:
    """An option as written in YAML or as a flag (`mask-ratio`, `lambda`) -> its Config field name."""
    return "lam" if key == "lambda" else str(key).replace("-", "_")


def load_yaml(path: str | Path) -> dict:
    values = read_yaml(path) or {}
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value")
    return {option_name(k): v for k, v in values.items()}


def save_yaml(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
