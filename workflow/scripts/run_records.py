"""Run folders -> records: one row per run of the grid's manifest (every axis value, its baseline and folder), its
status, and the engine's record of the folder (acs_core.api.read_run: metrics.json and eval.json numbers); a failure
marker's fields as failed_<key> (stage, the engine's status such as `diverged`, epoch, step), log, error. Plus the
accuracy-vs-eps curves, and the two frame helpers every later step uses."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from acs_core import api
from mark_failed import FAILED, score_marker

CURVE_COLUMNS = ["run", "curve", "eps", "acc"]


def failure(row: dict[str, Any]) -> dict[str, Any] | None:
    """The failure marker of a run: its own, else its data set's staging or its proxy-scores job's (mark_failed.py)."""
    markers = [Path(row["dir"], FAILED), *(Path(score_marker(p)) for p in (row.get("data"), row.get("scores")) if p)]
    return next((found for found in map(api.read_json, markers) if found is not None), None)


def record(row: dict[str, Any], run: api.RunFiles) -> dict[str, Any]:
    """One flat record: the manifest row + status (complete | failed | missing) + the engine's record of its folder."""
    failed = failure(row)
    out = {**row, "status": "complete" if run.complete else "failed" if failed else "missing"}
    if failed:
        out.update({k if k in ("log", "error") else f"failed_{k}": v for k, v in failed.items()})
    return {**out, **run.record()}


def collect(manifest: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run of the manifest -> (records, curves); a failed or missing run is a row with its status."""
    records, curves = [], []
    for row in manifest:
        run = api.read_run(row["dir"])
        records.append(record(row, run))
        curves += [{"run": row["run"], **point} for point in run.curves()]
    return pd.DataFrame(records), pd.DataFrame(curves, columns=CURVE_COLUMNS)


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """The records of finished runs (trained and evaluated)."""
    return df[df["status"] == "complete"]


def ensure(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A copy with `columns` added empty where missing (records of a grid whose runs all failed have no metrics)."""
    return df.assign(**{c: float("nan") for c in columns if c not in df})
