"""Data hygiene: identical images in more than one place of a dataset, reported once per dataset, recorded in
every cell's JSON, and optionally kept out of the later split (`drop_cross_split_duplicates`).

An image is named by (split, class, index in the class), the bank's own coordinates. A group is a set of places
holding the same content; it is "cross-split" when its places lie in more than one split. Dropping keeps the copy
in the earliest split (train, then val, then test) and excludes the others from episode sampling.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import torch

from bench.util.notice import Notice

SPLIT_ORDER = ("train", "val", "test")
Place = tuple[str, str, int]                   # (split, class name, index in the class)


class DataHygieneWarning(Notice):
    """A dataset holds identical images in more than one place (one 'notice: ...' line on stderr)."""


_reported: set[str] = set()


def digest(content: bytes) -> str:
    """The content hash that decides identity."""
    return hashlib.sha1(content).hexdigest()


def group_identical(items: Iterable[tuple[Place, str, str]]) -> list[dict]:
    """Groups of places whose digests agree, from (place, digest, source id) triples, counting only groups with two
    or more source images; each group lists its places (by split order, class, index) and its source ids."""
    by_digest: dict[str, list[tuple[Place, str]]] = defaultdict(list)
    for place, key, source in items:
        by_digest[key].append((place, source))
    groups = []
    for members in by_digest.values():
        if len({source for _, source in members}) < 2:      # one source image (e.g. a symmetric rotation)
            continue
        members.sort(key=lambda m: (SPLIT_ORDER.index(m[0][0]), m[0][1], m[0][2]))
        groups.append({"places": [{"split": s, "class": c, "index": i} for (s, c, i), _ in members],
                       "sources": sorted({source for _, source in members})})
    return sorted(groups, key=lambda g: [(SPLIT_ORDER.index(p["split"]), p["class"], p["index"]) for p in g["places"]])


def build_report(dataset: str, check: str, groups: list[dict]) -> dict:
    """The JSON-ready report: groups across splits (each with its split pair), across classes within a split, and
    the number within one class; a one-line summary."""
    cross_split, cross_class, within_class = [], [], 0
    for group in groups:
        splits = {p["split"] for p in group["places"]}
        classes = {(p["split"], p["class"]) for p in group["places"]}
        if len(splits) > 1:
            cross_split.append({**group, "splits": "-".join(s for s in SPLIT_ORDER if s in splits)})
        elif len(classes) > 1:
            cross_class.append(group)
        else:
            within_class += 1
    pairs: dict[str, int] = defaultdict(int)
    for group in cross_split:
        pairs[group["splits"]] += 1
    sources = {tuple(g["sources"]) for g in cross_split}
    by_pair = ", ".join(f"{k} {v}" for k, v in sorted(pairs.items())) or "none"
    summary = (f"{dataset}: {len(cross_split)} groups of identical images across splits ({by_pair}; "
               f"{len(sources)} distinct source collisions), {len(cross_class)} across classes within a split, "
               f"{within_class} within a class")
    return {"dataset": dataset, "check": check, "cross_split": cross_split, "cross_class": cross_class,
            "within_class": within_class, "summary": summary, "dropped": 0}


def excluded_mask(report: dict, split: str, class_names: list[str], per_class: int) -> np.ndarray:
    """bool [classes, per_class]: the places of this split whose content an earlier split also holds."""
    mask = np.zeros((len(class_names), per_class), dtype=bool)
    row = {name: i for i, name in enumerate(class_names)}
    rank = SPLIT_ORDER.index(split)
    for group in report["cross_split"]:
        first = min(SPLIT_ORDER.index(p["split"]) for p in group["places"])
        if first >= rank:
            continue
        for p in group["places"]:
            if p["split"] == split and p["class"] in row and p["index"] < per_class:
                mask[row[p["class"]], p["index"]] = True
    return mask


def apply_report(bank, report: dict, split: str, drop: bool) -> None:
    """Attach the report to the bank (recorded in cell JSON); with `drop`, exclude this split's later copies.
    Reports the dataset's duplicates once per process."""
    report = dict(report, drop_cross_split_duplicates=drop)
    if drop:
        mask = excluded_mask(report, split, bank.class_names, bank.n_per_class)
        report["dropped"] = int(mask.sum())
        if mask.any():
            bank.excluded = torch.from_numpy(mask).to(bank.device)
    bank.hygiene = report
    key = report["dataset"] + report["check"] + str(len(report["cross_split"]))
    if key not in _reported and (report["cross_split"] or report["cross_class"]):
        _reported.add(key)
        examples = list({tuple(g["sources"]): g for g in report["cross_split"]}.values())[:3]
        where = "; ".join(" = ".join(f"{p['split']}/{p['class']}[{p['index']}]" for p in g["places"])
                          for g in examples)
        action = ("later copies excluded from sampling" if drop else
                  "kept, as in published numbers (drop them with --set drop_cross_split_duplicates=true)")
        warnings.warn(f"{report['summary']}; e.g. {where}; {action}; listed in each cell's JSON under "
                      "data.duplicates", DataHygieneWarning, stacklevel=3)


def cell_record(banks: dict) -> dict | None:
    """What a cell's JSON keeps under data.duplicates: the report, and per split how many images were dropped."""
    reports = {split: bank.hygiene for split, bank in banks.items() if bank.hygiene is not None}
    if not reports:
        return None
    first = next(iter(reports.values()))
    return {**{k: v for k, v in first.items() if k != "dropped"},
            "dropped": {split: report["dropped"] for split, report in reports.items()}}
