# score (proxy scores, only for score-based selectors) -> train: one run folder per grid point.


rule score:
    input:
        data=ancient(DATA_MARKER),  # staged: its existence counts, not its time
    output:
        SCORES,
    params:
        args=JOBS.score_args,
        marker=JOBS.failure_marker,
        acs=ACS,
        mark_failed=MARK_FAILED,
    log:
        f"{R}/logs/score/{SCORE_PATTERN}.log",
    threads: JOBS.threads("score")
    resources:
        **JOBS.resources("score"),
    group:
        JOBS.group("score")
    conda:
        ENV
    shell:
        "rm -f {params.marker:q}; "
        "{params.acs} score {params.args} out={output:q} quiet=true > {log:q} 2>&1 "
        "|| {params.mark_failed} {params.marker:q} score {log:q}"


rule train:
    input:
        data=ancient(DATA_MARKER),
        scores=JOBS.scores_input if JOBS.grid.score_jobs else [],
    output:
        metrics=f"{RUN}/metrics.json",
        model=f"{RUN}/model.pt",
    params:
        args=JOBS.train_args,
        failed=FAILED,
        acs=ACS,
        mark_failed=MARK_FAILED,
    log:
        f"{R}/logs/train/{RUN_PATTERN}.log",
    threads: JOBS.threads("train")
    resources:
        **JOBS.resources("train"),
    group:
        JOBS.group("train")
    conda:
        ENV
    shell:
        "run=$(dirname {output.metrics:q}); rm -f \"$run/{params.failed}\"; "
        "{params.acs} train {params.args} out=\"$run\" quiet=true > {log:q} 2>&1 "
        "|| {params.mark_failed} \"$run/{params.failed}\" train {log:q}"
