"""The log of a Snakemake script rule (collect, tables, figure): what the script prints and warns goes there."""
from __future__ import annotations

from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Iterator


@contextmanager
def logged(log: str) -> Iterator[None]:
    """stdout and stderr into the file `log` while the block runs."""
    with open(log, "w") as fh, redirect_stdout(fh), redirect_stderr(fh):
        yield
