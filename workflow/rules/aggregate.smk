# collect -> tables and figures (pandas, seaborn/matplotlib), all part of `snakemake --report`.
TABLE_NAMES = ["table1", "method_fraction", "timing"]
FIGURE_NAMES = ["robust_error_vs_speedup", "robust_acc_vs_eps", "pareto"]
TABLE_FORMATS = ["csv", "md", "tex", "html"]
TABLES = [f"{R}/tables/{t}.{ext}" for t in TABLE_NAMES for ext in TABLE_FORMATS]
FIGURES = [f"{R}/figures/{f}.{ext}" for f in FIGURE_NAMES for ext in ("png", "pdf")]
AXES = list(JOBS.grid.settings.sweep)
RUN_FILES = [f"{R}/runs/{run.id}/{name}" for run in ACTIVE for name in ("metrics.json", "eval.json")]

localrules: all, collect, tables, figure


rule collect:
    input:
        RUN_FILES,
    output:
        records=report(f"{R}/records.csv", category="Records", caption="../report/records.rst"),
        curves=f"{R}/curves.csv",
    params:
        manifest=JOBS.manifest(),
    log:
        f"{R}/logs/aggregate/collect.log",
    threads: JOBS.threads("aggregate")
    resources:
        **JOBS.resources("aggregate"),
    conda:
        ENV
    script:
        "../scripts/collect.py"


rule tables:
    input:
        records=f"{R}/records.csv",
        **({"published": JOBS.grid.config["published"]} if JOBS.grid.config["published"] else {}),
    output:
        [report(f"{R}/tables/{t}.{ext}", category="Tables", caption=f"../report/{t}.rst")
         if ext == "html" else f"{R}/tables/{t}.{ext}" for t in TABLE_NAMES for ext in TABLE_FORMATS],
    params:
        axes=AXES,
        reference=JOBS.grid.config["reference"],
        primary=JOBS.grid.config["primary"],
    log:
        f"{R}/logs/aggregate/tables.log",
    threads: JOBS.threads("aggregate")
    resources:
        **JOBS.resources("aggregate"),
    conda:
        ENV
    script:
        "../scripts/write_tables.py"


rule figure:
    input:
        records=f"{R}/records.csv",
        curves=f"{R}/curves.csv",
    output:
        png=report(f"{R}/figures/{{figure}}.png", category="Figures", caption="../report/figure.rst"),
        pdf=f"{R}/figures/{{figure}}.pdf",
    wildcard_constraints:
        figure="|".join(FIGURE_NAMES),
    params:
        axes=AXES,
        speedup=JOBS.grid.config["speedup"],
    log:
        f"{R}/logs/aggregate/figure/{{figure}}.log",
    threads: JOBS.threads("aggregate")
    resources:
        **JOBS.resources("aggregate"),
    conda:
        ENV
    script:
        "../scripts/figures.py"
