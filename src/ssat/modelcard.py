"""The model card `ssat export` writes beside the weights (README.md in the Hugging Face Hub's format): YAML front
matter (library_name timm, license, tags, datasets, metrics, and a model-index with the test accuracies) built by
huggingface_hub's ModelCardData, then what the model is, its data, recipe, results, cost, the command that
reproduces it and how to load it with timm. Every number is copied from the run's summary.json, none is
recomputed; a file exported without its run folder gets a card that says its numbers are unknown."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ssat.errors import need_extra
from ssat.hubweights import is_named
from ssat.methods import METHODS
from ssat.records import method_label, read_summary

CONFIG_NAME = "ssat-config.yaml"  # the run's config beside the card: what `ssat train --config` reproduces


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.2f} %"


def _results(summary: dict) -> list[tuple[str, str, float]]:
    """(metric type, name, value) of each test / validation accuracy the run recorded, as summary.json has them."""
    if not summary:
        return []
    rows = []
    last = f"last epoch ({summary['epochs']})"
    for key, kind, name in (("test_acc1", "accuracy", f"test top-1 accuracy (%), {last}"),
                            ("test_acc5", "top_5_accuracy", f"test top-5 accuracy (%), {last}")):
        if summary.get(key) is not None:
            rows.append((kind, name, summary[key]))
    if summary.get("selected_epoch"):
        chosen = f"validation-selected epoch ({summary['selected_epoch']})"
        for key, kind, name in (("test_acc1_selected", "accuracy", f"test top-1 accuracy (%), {chosen}"),
                                ("test_acc5_selected", "top_5_accuracy", f"test top-5 accuracy (%), {chosen}"),
                                ("val_acc1_selected", "accuracy", f"validation top-1 accuracy (%), {chosen}")):
            if summary.get(key) is not None:
                rows.append((kind, name, summary[key]))
    return rows


def _dataset(cfg, summary: dict) -> tuple[str, str]:
    """(what to call the data in the text, its id in the front matter: the Hub id when it came from the Hub)."""
    source = (summary or {}).get("data_source") or ""
    if source.startswith("hf-hub:"):
        repo, commit = source[len("hf-hub:"):].split("@")
        return f"{repo} (Hub data set, revision {commit[:12]})", repo
    if source:  # a local folder: its name, not the path on the machine that trained it
        return f"{cfg.dataset} (local folder '{Path(source).name}')", Path(source).name
    return cfg.dataset, cfg.dataset


def _init(cfg) -> str:
    if not cfg.pretrained:
        return "random (from scratch)"
    # a named weight set as it is; a local file by its name (not the path on the machine that trained it)
    name = cfg.pretrained if is_named(cfg.pretrained) else Path(cfg.pretrained).name
    return f"`{name}`" + (f" (sha256 {cfg.pretrained_sha256[:12]}…)" if cfg.pretrained_sha256 else "")


def _recipe(cfg, summary: dict) -> list[str]:
    method = METHODS[cfg.method]
    lines = [f"- **Method:** `{cfg.method}`" + (f" with auxiliary task `{cfg.aux}`" if method.auxiliary else "")
             + (f", λ {cfg.lam} (`--balance {cfg.balance}`)" if method.weighted else ""),
             f"- **Backbone:** `{cfg.model}`, {cfg.img_size} px input, patch {cfg.patch_size}",
             f"- **Initialisation:** {_init(cfg)}",
             f"- **Schedule:** {cfg.epochs} epochs, batch {cfg.batch_size}, "
             + (f"lr {summary['lr']:g}" if summary and summary.get("lr") else f"base lr {cfg.blr:g}")
             + f", weight decay {cfg.weight_decay:g}, warm-up {cfg.warmup_epochs} epochs, seed {cfg.seed}"]
    return lines


def _data_lines(cfg, summary: dict, name: str) -> list[str]:
    amount = (f"{cfg.per_class} images per class" if cfg.per_class else
              "all training images" if (cfg.fraction or 1) >= 1 else f"a {100 * cfg.fraction:g} % stratified subset")
    lines = [f"- **Data set:** {name}", f"- **Training data:** {amount} (subset seed {cfg.subset_seed})"]
    if summary:
        lines.append(f"- **Images:** {summary.get('n_train')} trained on, {summary.get('n_val') or 0} held out for "
                     f"validation (from the training split), {summary.get('n_test')} in the test split")
    for option, value in sorted((summary or {}).get("data_options", {}).items()):
        if value is not None:
            lines.append(f"- `{option}`: {value}")
    return lines


def _cost(summary: dict) -> list[str]:
    if not summary:
        return ["Unknown (exported without its run folder)."]
    lines = [f"- **Training time:** {summary.get('train_time_s')} s on {summary.get('device')} "
             f"(x{summary.get('world_size', 1)}, {summary.get('precision')})"]
    if summary.get("gflops_train_step") is not None:
        lines.append(f"- **Compute:** {summary['gflops_train_step']} GFLOPs per training image (both streams), "
                     f"{summary.get('train_gflops_total')} GFLOPs for the whole training, "
                     f"{summary.get('gflops_inference')} GFLOPs per inference image; {summary.get('params_m')} M "
                     f"parameters")
    if summary.get("energy_kwh") is not None:
        lines.append(f"- **Energy:** {summary['energy_kwh']:.4g} kWh ({summary.get('energy_note')})")
    return lines


def write_card(folder: Path, weights: Path, cfg, classes: list[str], in_chans: int, selected: bool,
               repo: Optional[str], license: str) -> Path:
    """README.md in `folder` (the export), for the weights of `weights` (a run's model[-selected].safetensors)."""
    hub = need_extra("huggingface_hub", "hub", "the model card of ssat export")
    summary_path = weights.parent / "summary.json"
    summary = read_summary(summary_path) if summary_path.is_file() else {}
    name, data_id = _dataset(cfg, summary)
    title = f"{cfg.model} on {data_id}: {method_label(summary) if summary else cfg.method}"
    results = _results(summary)
    data = hub.ModelCardData(
        library_name="timm", license=license, pipeline_tag="image-classification",
        tags=["image-classification", "timm", "ssat", cfg.method] + ([cfg.aux] if METHODS[cfg.method].auxiliary
                                                                    else []),
        datasets=[data_id], metrics=["accuracy"], model_name=repo or title,
        eval_results=[hub.EvalResult(task_type="image-classification", dataset_type=data_id,
                                     dataset_name=name, dataset_split="test" if "test" in label else "validation",
                                     metric_type=kind, metric_name=label, metric_value=value)
                      for kind, label, value in results] or None)
    which = (f"the validation-selected epoch ({summary.get('selected_epoch')})" if selected else
             f"the last epoch ({cfg.epochs})")
    table = ["| result | value |", "|---|---|"] + [f"| {label} | {_percent(value)} |" for _, label, value in results]
    where = f"hf-hub:{repo}" if repo else f"local-dir:{folder.resolve()}"
    body = "\n".join([
        f"# {title}", "",
        f"A `{cfg.model}` image classifier ({len(classes)} classes) trained with "
        f"[ssat](https://pypi.org/project/ssat/): {METHODS[cfg.method].description}. These weights are from "
        f"{which}.", "",
        "## Data", "", *_data_lines(cfg, summary, name), "",
        "## Recipe", "", *_recipe(cfg, summary), "",
        f"The full configuration is `{CONFIG_NAME}` in this folder.", "",
        "## Results", "",
        *(table if results else ["Unknown: exported without its run folder (no summary.json)."]), "",
        "The validation-selected epoch is chosen on images held out of the training split, never on the test "
        "split." if summary.get("selected_epoch") else "No validation split: the last epoch is the model.", "",
        "## Training cost", "", *_cost(summary), "",
        "## Reproduce", "", "```bash",
        f"ssat train --config {CONFIG_NAME} --out runs/reproduced   # add --data-root where your copy of the data is",
        "```", "",
        "## Use with timm", "", "```python", "import timm", "from PIL import Image", "",
        f'model = timm.create_model("{where}", pretrained=True).eval()',
        "transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))",
        'labels = model.pretrained_cfg["label_names"]',
        f'image = Image.open("image.png").convert("{"L" if in_chans == 1 else "RGB"}")',
        "print(labels[model(transform(image)[None]).argmax().item()])", "```", "",
        "## License", "",
        (f"`{license}`." if license != "unknown" else "Not stated (export with `--license` to state one).")
        + (" The pretrained weights it started from and the data it was trained on carry their own terms."), ""])
    card = hub.ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    path = folder / "README.md"
    card.save(str(path))
    return path

