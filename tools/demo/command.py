"""``stripemeter demo parity``: run the cycle in a temporary folder, print what happened.

Exit 0 on parity, 1 on a mismatch, 2 when the demo cannot set up or finish.
``api/cli.py`` declares the flags and loads this module only when the demo
runs, so that the service never imports the demo.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from adapters.settings import Settings
from tools.demo.harness import CUSTOMER, METRIC, START, DemoError, Narrator
from tools.demo.parity import ParityDemo
from tools.demo.verdict import print_block


def run_parity(settings: Settings, *, drift: bool, keep: bool, as_json: bool) -> int:
    """Run one cycle; ``keep`` leaves its data folder, ``as_json`` prints only the JSON."""
    out = sys.stderr if as_json else sys.stdout  # --json: stdout holds the JSON only
    data_dir = Path(tempfile.mkdtemp(prefix="stripemeter-demo-"))
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the narration says what happens; alarms stay
    try:
        result = ParityDemo(settings, data_dir, Narrator(out), drift=drift).run()
    except DemoError as error:
        print(f"stripemeter demo parity: {error}", file=sys.stderr)
        return 2
    finally:
        root.setLevel(level)
        if keep:
            print(
                f"\ndata kept in {data_dir}; e.g. STRIPEMETER_DATA_DIR={data_dir} stripemeter audit"
                f" --tenant demo --customer-ref {CUSTOMER} --metric {METRIC} --period"
                f" {START:%Y-%m-%dT%H:%M:%SZ}",
                file=out,
            )
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    if keep:
        result["dataDir"] = str(data_dir)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print_block(result, out)
    return 0 if result["result"] == "PARITY" else 1
