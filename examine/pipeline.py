"""The one path from a folder of images to a queue: pretrain if needed → embed → rank.

The command line (``examine rank``), the HTML report and anything else that
ranks a folder call :func:`rank_folder`; it returns data, never prints.

    result = rank_folder("images/", "examine-model")
    write_ranking_csv(result, "ranking.csv")   # examine.ranking_csv
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from examine.device import resolve_device
from examine.embed import EmbedReport, embed_sources, path_sources
from examine.encoder import Encoder, EncoderConfig, create_encoder, is_pretrained_name, saved_version
from examine.file_index import file_stamp
from examine.images import ImageLoadError, list_images
from examine.mae import PretrainConfig, default_pretrain_config, pretrain, sized_config
from examine.phases import Phases
from examine.probe import Probe, column_moments
from examine.ranking import DEFAULT_POLICY, rank
from examine.scoring import marginal_singular_values, scores_from_marginals
from examine.screening import screen
from examine.store import EmbeddingStore
from examine.targets import LABEL_SETS, TargetProbe, fit_label_sets
from examine.workspace import Workspace, load_training_images

__all__ = [
    "FolderRanking",
    "PipelineError",
    "prepare_encoder",
    "embed_folder",
    "rank_folder",
    "read_labels_csv",
]


class PipelineError(ValueError):
    """The folder cannot be ranked as asked; the message names the folder or file and what to do."""


@dataclass
class FolderRanking:
    """The queue of a folder: readable images in queue order, and the unreadable ones with their reasons."""

    paths: list[Path]  # queue order, first = label first
    keys: list[str]  # sha256 of each image's bytes
    marginal: np.ndarray  # the paper's σ1 drop of each image (whole folder)
    score: np.ndarray  # the paper's EXAMINE score exp((m − max m) / mean m)
    policy: str
    encoder_version: str
    errors: list[tuple[Path, str]] = field(default_factory=list)
    added: int = 0
    cached: int = 0
    predicted: list[str | None] | None = None  # the probe's class of each queued image (with labels)
    probability: np.ndarray | None = None  # its probability
    labeled: int = 0  # images of the folder that already carry a label (left out of the queue)
    probe_cv_accuracy: float | None = None
    quality: np.ndarray | None = None  # the screening's quality of each queued image (1 = nothing unusual)
    reasons: list[str] | None = None  # why an image was flagged ('' = not flagged); flagged images close the queue


def list_folder(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), or a :class:`PipelineError` saying why there are none."""
    try:
        paths = list_images(folder)
    except (ValueError, OSError) as exc:
        raise PipelineError(str(exc)) from exc
    if not paths:
        raise PipelineError(f"{folder}: no images found")
    return paths


def prepare_encoder(
    paths: Sequence[Path],
    workspace: Workspace,
    *,
    encoder_config: EncoderConfig | None = None,
    weights: str | Path | None = None,
    pretrain_config: PretrainConfig | None = None,
    device: str = "auto",
    pretrain_if_missing: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> Encoder:
    """The encoder to embed with: a named pretrained model, local weights, the one pretrained into ``workspace``
    earlier, or a new MAE pretrained on ``paths``."""
    if weights is None and encoder_config is not None and is_pretrained_name(encoder_config.model):
        encoder = create_encoder(encoder_config)
        log(f"encoder: the pretrained {encoder_config.model} (timm), version {encoder.version}")
        return encoder
    if weights is not None or workspace.has_encoder() or not pretrain_if_missing:
        encoder = workspace.encoder(weights=weights, config=encoder_config)
        log(f"encoder: {encoder.version} from {weights or workspace.encoder_dir}; {provenance(workspace.encoder_dir)}")
        return encoder
    encoder = pretrain_on(
        paths,
        workspace.encoder_dir,
        encoder_config=encoder_config,
        pretrain_config=pretrain_config,
        device=device,
        log=log,
    )
    folder = os.path.commonpath([str(Path(p).resolve().parent) for p in paths]) if paths else ""
    record = {"folder": folder, "images": len(paths), "date": time.strftime("%Y-%m-%d %H:%M", time.localtime())}
    (Path(workspace.encoder_dir) / PROVENANCE).write_text(json.dumps(record))
    return encoder


#: What an encoder pretrained by `examine rank` was trained on, next to its weights.
PROVENANCE = "trained_on.json"


def provenance(encoder_dir: str | Path) -> str:
    """One line on what the encoder in ``encoder_dir`` was pretrained on (folder, images, date), if known."""
    try:
        raw = json.loads((Path(encoder_dir) / PROVENANCE).read_text())
        return (
            f"MAE-pretrained on {raw['images']} images of {raw['folder']} on {raw['date']} "
            "(another folder reuses it; give it its own --model-dir to pretrain on it)"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "trained on: not recorded"


def pretrain_on(
    paths: Sequence[Path],
    out_dir: str | Path,
    *,
    encoder_config: EncoderConfig | None = None,
    pretrain_config: PretrainConfig | None = None,
    device: str = "auto",
    log: Callable[[str], None] = lambda s: None,
) -> Encoder:
    """MAE-pretrain the default recipe (or the given configs) on the readable images of ``paths``."""
    default_enc, default_cfg = default_pretrain_config(device)
    enc_cfg = encoder_config or default_enc
    on_gpu = resolve_device(device).type == "cuda"  # JPEGs through nvJPEG, as the embedding reads them
    images, errors = load_training_images(paths, enc_cfg.img_size, decode_device="cuda" if on_gpu else None)
    for err in errors:
        log(f"skipped {err}")
    if len(images) < 2:
        raise PipelineError(f"only {len(images)} readable image(s); MAE pretraining needs at least 2")
    cfg = pretrain_config or sized_config(default_cfg, len(images))
    log(
        f"pretraining {enc_cfg.model} at {enc_cfg.img_size}px on {len(images)} images for {cfg.epochs} epochs "
        f"(batches of {min(cfg.batch_size, len(images))})"
    )
    encoder, losses = pretrain(images, out_dir, cfg, encoder_config=enc_cfg, device=device)
    log(f"MAE loss {losses[0]:.4f} → {losses[-1]:.4f}; encoder {encoder.version} saved in {out_dir}")
    return encoder


def embed_folder(
    paths: Sequence[Path],
    encoder: Encoder,
    workspace: Workspace,
    *,
    device: str = "auto",
    batch_size: int | None = None,
) -> EmbedReport:
    """Embed every image of ``paths`` not yet in the workspace's store for ``encoder``.

    A file unchanged since it was last hashed (same path, size, mtime and inode in the workspace's
    :class:`~examine.file_index.FileIndex`) whose embedding is stored is not read again.
    """
    store = workspace.store(encoder)
    index = workspace.file_index()
    report = EmbedReport(keys=[None] * len(paths))
    todo = []
    for i, key in enumerate(index.known(paths)):
        if key is not None and key in store:
            report.keys[i] = key
            report.cached += 1
        else:
            todo.append(i)
    if not todo:
        return report
    stamps = [file_stamp(paths[i]) for i in todo]  # before the files are read: a later change is seen next time
    sub = embed_sources(path_sources([paths[i] for i in todo]), encoder, store, device=device, batch_size=batch_size)
    for j, i in enumerate(todo):
        report.keys[i] = sub.keys[j]
    report.errors.update({todo[j]: err for j, err in sub.errors.items()})
    report.added += sub.added
    report.cached += sub.cached
    index.record((paths[i], stamps[j], key) for j, (i, key) in enumerate(zip(todo, sub.keys)) if key)
    index.save()
    return report


def stored_folder(
    paths: Sequence[Path],
    workspace: Workspace,
    *,
    encoder_config: EncoderConfig | None = None,
    weights: str | Path | None = None,
) -> tuple[EmbedReport, EmbeddingStore] | None:
    """Every image of ``paths`` unchanged (file index) and embedded by the workspace's encoder already: the report
    and the store, with no model built and no file read; None when anything is new or another encoder was asked."""
    if weights is not None or encoder_config is not None:
        return None
    saved = saved_version(workspace.encoder_dir)
    if saved is None:
        return None
    store = EmbeddingStore(workspace.store_root, *saved)
    keys = workspace.file_index().known(paths)
    if not keys or any(k is None or k not in store for k in keys):
        return None
    return EmbedReport(keys=list(keys), cached=len(keys)), store


def embed_listed(
    paths: Sequence[Path],
    workspace: Workspace,
    *,
    encoder_config: EncoderConfig | None = None,
    weights: str | Path | None = None,
    pretrain_config: PretrainConfig | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    pretrain_if_missing: bool = True,
    log: Callable[[str], None] = lambda s: None,
    phases: Phases | None = None,
) -> tuple[EmbedReport, EmbeddingStore]:
    """Every image of ``paths`` in the workspace's store: nothing is built or read when all are stored already
    (:func:`stored_folder`), else the encoder is prepared (:func:`prepare_encoder`) and the new images embedded.
    ``phases`` records the ``encoder`` and ``embedding`` time."""
    ph = phases or Phases()
    stored = stored_folder(paths, workspace, encoder_config=encoder_config, weights=weights)
    if stored is not None:
        log(f"encoder: {stored[1].version} from {workspace.encoder_dir}; {provenance(workspace.encoder_dir)}")
        return stored
    with ph.phase("encoder"):  # loading it, or pretraining a new one
        encoder = prepare_encoder(
            paths,
            workspace,
            encoder_config=encoder_config,
            weights=weights,
            pretrain_config=pretrain_config,
            device=device,
            pretrain_if_missing=pretrain_if_missing,
            log=log,
        )
    with ph.phase("embedding"):  # reading, hashing, decoding, the forward pass, storing
        report = embed_folder(paths, encoder, workspace, device=device, batch_size=batch_size)
    return report, workspace.store(encoder)


def rank_folder(
    folder: str | Path,
    model_dir: str | Path,
    *,
    policy: str = DEFAULT_POLICY,
    encoder_config: EncoderConfig | None = None,
    weights: str | Path | None = None,
    pretrain_config: PretrainConfig | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    labels: Mapping[Path, str | Sequence[str]] | None = None,
    log: Callable[[str], None] = lambda s: None,
    phases: Phases | None = None,
) -> FolderRanking:
    """Pretrain if ``model_dir`` has no encoder, embed what is new, and rank the folder with ``policy``.

    ``labels`` (image path → class, or its classes, e.g. from :func:`read_labels_csv`) are the
    labels already given: those images leave the queue, a label-aware policy learns from them, and
    once two classes are labeled each queued image gets the probe's class (``predicted``). When
    any image has several labels the project is multi-label: one yes/no probe per class
    (:class:`examine.targets.TargetProbe`) and ``predicted`` lists every class above one half,
    joined by ``;``. ``phases`` records where the time went (listing, encoder, embedding,
    screening, queue).
    """
    ph = phases or Phases()
    with ph.phase("listing"):
        paths = list_folder(folder)
    ws = Workspace(model_dir)
    report, store = embed_listed(
        paths,
        ws,
        encoder_config=encoder_config,
        weights=weights,
        pretrain_config=pretrain_config,
        device=device,
        batch_size=batch_size,
        log=log,
        phases=ph,
    )
    ok = np.flatnonzero(report.ok())
    errors = [
        (paths[i], err.reason if isinstance(err, ImageLoadError) else str(err))
        for i, err in sorted(report.errors.items())
    ]
    if len(ok) < 2:
        raise PipelineError(f"{folder}: fewer than 2 readable images; nothing to rank")
    keys = [k for k in report.keys if k is not None]  # the same as report.keys[i] for i in ok
    X = store.get(keys)
    given = {Path(p).resolve(): _label_tuple(v) for p, v in (labels or {}).items()}
    tuples = [given.get(paths[i].resolve()) for i in ok]
    labeled = np.array([v is not None for v in tuples], dtype=bool)
    if labeled.all():
        raise PipelineError(f"{folder}: every readable image is labeled already; nothing to queue")
    multi = any(len(v) > 1 for v in tuples if v is not None)
    y: list[Any] = [None if v is None else frozenset(v) if multi else v[0] for v in tuples]
    probe = _fit_probe(X, labeled, tuples, multi)  # one fit serves the queue and the predicted column
    with ph.phase("screening"):
        # decoded within bounded memory whatever the image's size; an unreadable one: not screened
        ws.measure((k, partial(str, paths[i])) for k, i in zip(keys, ok))
        checks, measured = ws.checks(keys)
        root = Path(folder)
        names = [str(paths[i].relative_to(root)) if paths[i].is_relative_to(root) else str(paths[i]) for i in ok]
        screening = screen(checks, X, labeled=labeled | ~measured, names=names)
    deferred = screening.deferred()
    if len(deferred):
        log(f"{len(deferred)} images flagged as unusable (served last): {screening.counts()}")
    with ph.phase("queue"):
        ranking = rank(X, labeled=labeled, labels=y, policy=policy, probe=probe, deferred=deferred)
        m = marginal_singular_values(X)
        s = scores_from_marginals(m)
    order = ranking.order
    predicted: list[str | None] | None = None
    probability = None
    cv = None
    if isinstance(probe, Probe):
        P = probe.predict_proba(X[order])
        predicted = [str(probe.classes_[k]) for k in np.argmax(P, axis=1)]
        probability, cv = P.max(axis=1), probe.cv_accuracy_
    elif probe is not None:
        predicted, probability = _multi_label_proposals(probe, X[order])
        cv = probe.cv_accuracy_
    return FolderRanking(
        paths=[paths[ok[j]] for j in order],
        keys=[keys[j] for j in order],
        marginal=m[order],
        score=s[order],
        policy=policy,
        encoder_version=store.version,
        errors=errors,
        added=report.added,
        cached=report.cached,
        predicted=predicted,
        probability=probability,
        labeled=int(labeled.sum()),
        probe_cv_accuracy=cv,
        quality=screening.quality[order],
        reasons=[screening.reasons[j] if screening.flagged[j] else "" for j in order],
    )


def _label_tuple(value: str | Sequence[str]) -> tuple[str, ...]:
    return (str(value),) if isinstance(value, str) else tuple(dict.fromkeys(map(str, value)))


def _fit_probe(
    X: np.ndarray, labeled: np.ndarray, labels: list[tuple[str, ...] | None], multi: bool
) -> Probe | TargetProbe | None:
    """The probe of the given labels (None below two classes): one multinomial probe, or, multi-label,
    one yes/no probe per class."""
    have = np.flatnonzero(labeled)
    if not multi:
        y = [labels[j][0] for j in have]  # type: ignore[index]
        return Probe(cv=True).fit(X[have], y, reference=X) if len(set(y)) >= 2 else None
    return fit_label_sets(X[have], [labels[j] or () for j in have], column_moments(X), cv=True)


def _multi_label_proposals(probe: TargetProbe, X: np.ndarray) -> tuple[list[str | None], np.ndarray]:
    """Every class above one half, joined by ``;``, and the probability of the least sure of them (of the
    most likely class being absent when none is above one half)."""
    P = probe.predict_proba(X)[LABEL_SETS]
    classes = probe.targets[0].classes
    predicted: list[str | None] = []
    probability = np.empty(len(P))
    for i, p in enumerate(P):
        on = np.flatnonzero(p > 0.5)
        predicted.append(LABEL_SEP.join(str(classes[k]) for k in on))
        probability[i] = p[on].min() if len(on) else 1.0 - p.max()
    return predicted, probability


#: Separates several labels of one image in a labels file's cell (multi-label projects).
LABEL_SEP = ";"


def _labeled_path(image: Path, root: Path) -> Path:
    """A labels file's path: absolute, relative to the folder, or as ``ranking.csv`` writes it (relative to the
    working directory, the folder's name included) when that names a file inside the folder."""
    if image.is_absolute() or (root / image).is_file():
        return image if image.is_absolute() else root / image
    if image.is_file() and image.resolve().is_relative_to(root.resolve()):
        return image
    return root / image


def read_labels_csv(path: str | Path, folder: str | Path) -> dict[Path, tuple[str, ...]]:
    """``path,label`` rows (a header line naming them; paths relative to ``folder`` or absolute).

    An image with several labels (a multi-label project) has them in one cell separated by ``;``
    (``a.png,nodule;effusion``) or on several rows; each image maps to its labels, in order, once each.
    Raises :class:`PipelineError` naming the file and line of a row that cannot be used.
    """
    root = Path(folder)
    out: dict[Path, tuple[str, ...]] = {}
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: cannot read the labels file ({exc})") from exc
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["path", "label"]:
        raise PipelineError(f"{path}: the first line must be the header 'path,label'")
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise PipelineError(f"{path}, line {line}: expected 'path,label' with both filled in, got {row!r}")
        image = _labeled_path(Path(row[0].strip()), root)
        if not image.is_file():
            raise PipelineError(f"{path}, line {line}: {image} is not an image file in {root}")
        found = [v.strip() for v in row[1].split(LABEL_SEP) if v.strip()]
        if not found:
            raise PipelineError(f"{path}, line {line}: no label in {row[1]!r}")
        out[image] = tuple(dict.fromkeys(out.get(image, ()) + tuple(found)))
    return out
