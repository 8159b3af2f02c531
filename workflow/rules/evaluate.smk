# evaluate: the robustness suite on every trained model -> RUN/eval.json.


rule evaluate:
    input:
        metrics=f"{RUN}/metrics.json",
        model=f"{RUN}/model.pt",
    output:
        f"{RUN}/eval.json",
    params:
        args=JOBS.evaluate_args,
        failed=FAILED,
        acs=ACS,
        mark_failed=MARK_FAILED,
    log:
        f"{R}/logs/evaluate/{RUN_PATTERN}.log",
    threads: JOBS.threads("evaluate")
    resources:
        **JOBS.resources("evaluate"),
    group:
        JOBS.group("evaluate")
    conda:
        ENV
    shell:
        "run=$(dirname {output:q}); rm -f \"$run/{params.failed}\"; "
        "{params.acs} evaluate \"$run\" {params.args} > {log:q} 2>&1 "
        "|| {params.mark_failed} \"$run/{params.failed}\" evaluate {log:q}"
