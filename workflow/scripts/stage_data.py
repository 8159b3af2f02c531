"""The data rule's command, on the submit host before any job: `stage_data.py MARKER KEY=VALUE...` makes one data set
present and verified (acs_core.api.stage_data: downloaded once where asked) and writes what was verified to MARKER
(JSON); missing data is one line on stderr (the folder and the fix), exit 1, no MARKER."""
import json
import sys
from pathlib import Path

from acs_core import api


def main(marker: str, *settings: str) -> int:
    try:
        verified = api.stage_data(dict(item.split("=", 1) for item in settings))
    except api.ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    Path(marker).write_text(json.dumps(verified, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
