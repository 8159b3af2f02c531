"""Failure markers: where a failed job leaves one, and (run as a script when a job's command fails) writing it:
MARKER gets the stage, the log and the last log line, and the script exits 1, so Snakemake reports the failure with
its log and the records mark the run failed (see allow_failed in docs/configuration.md). A marker the engine wrote
during the job (a diverged run: stage, status `diverged`, epoch, step, error) keeps its fields; the log is added."""
import json
import sys
from pathlib import Path

FAILED = "failed.json"  # a run folder's marker: its train or evaluate job failed


def score_marker(scores: str) -> str:
    """The failure marker of a scores file (its `acs score` job failed)."""
    return scores + ".failed.json"


def _engine_marker(marker: Path) -> dict:
    """The marker the engine wrote during the job (the rules delete any older one before it starts), or {}."""
    try:
        fields = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return fields if isinstance(fields, dict) else {}


def main(marker: str, stage: str, log: str) -> int:
    lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()] if Path(log).exists() else []
    fields = {"stage": stage, "error": lines[-1] if lines else "", **_engine_marker(Path(marker)), "log": log}
    Path(marker).parent.mkdir(parents=True, exist_ok=True)
    Path(marker).write_text(json.dumps(fields, indent=2) + "\n")
    error = f"\n  {fields['error']}" if fields["error"] else ""
    print(f"{fields['stage']} failed, log: {log}{error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
