"""Snakemake script (rule collect): every run of the grid -> records.csv (one row per run, failed ones marked) and
curves.csv (accuracy vs eps, long format)."""
from run_records import collect
from script_log import logged

with logged(snakemake.log[0]):  # type: ignore[name-defined]  # noqa: F821
    records, curves = collect(snakemake.params.manifest)  # noqa: F821
    records.to_csv(snakemake.output.records, index=False)  # noqa: F821
    curves.to_csv(snakemake.output.curves, index=False)  # noqa: F821
