"""Snakemake script (rule figure): records.csv + curves.csv -> one figure as PNG and PDF, its speed-up / cost axis by
the grid's `speedup` measure."""
import pandas as pd
from script_log import logged
from plots import draw

with logged(snakemake.log[0]):  # noqa: F821
    draw(snakemake.wildcards.figure, pd.read_csv(snakemake.input.records), pd.read_csv(snakemake.input.curves),  # noqa: F821
         list(snakemake.params.axes), snakemake.output.png, snakemake.output.pdf, snakemake.params.speedup)  # noqa: F821
