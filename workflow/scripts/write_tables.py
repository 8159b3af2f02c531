"""Snakemake script (rule tables): records.csv -> results/tables/{table1,method_fraction,timing}.{csv,md,tex,html},
Table 1's paired comparison against the grid's `reference` selector, and the figures of its `published` file beside it."""
from pathlib import Path

import pandas as pd
from render import write_tables
from tables import read_published
from script_log import logged

with logged(snakemake.log[0]):  # noqa: F821
    records = pd.read_csv(snakemake.input.records)  # noqa: F821
    published = read_published(snakemake.input.published) if snakemake.input.get("published") else None  # noqa: F821
    write_tables(records, list(snakemake.params.axes), Path(snakemake.output[0]).parent, snakemake.params.reference,  # noqa: F821
                 published, tuple(snakemake.params.primary))  # noqa: F821
