# stage_data: each data set of the grid present and verified in its folder, on the submit host, before any job reads
# it -> results/data/<dataset>.json. Jobs run with download=false (jobs.py), so offline compute nodes never download.
STAGE_DATA = f"{PYTHON} {shlex.quote(str(Path(workflow.basedir) / 'scripts' / 'stage_data.py'))}"
DATA_MARKER = f"{R}/data/{{dataset}}.json"

localrules: stage_data


rule stage_data:
    output:
        DATA_MARKER,
    params:
        args=JOBS.data_args,
        marker=JOBS.failure_marker,
        stage=STAGE_DATA,
        mark_failed=MARK_FAILED,
    log:
        f"{R}/logs/data/{{dataset}}.log",
    priority: 100  # every data set staged before any job starts, so a missing one stops the grid first
    conda:
        ENV
    shell:
        "rm -f {params.marker:q}; "
        "{params.stage} {output:q} {params.args} > {log:q} 2>&1 "
        "|| {params.mark_failed} {params.marker:q} data {log:q}"
