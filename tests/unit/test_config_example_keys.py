"""examples/stripemeter.toml against the keys the config file reads (api/config_file.py):
docs/config-file.md names the keys the example leaves out, and those are all it leaves out."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from api import config_file

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_leaves_out_only_the_keys_the_docs_name() -> None:
    example = tomllib.loads((ROOT / "examples" / "stripemeter.toml").read_text())
    every = {
        "tenant": set(config_file._TENANT),
        "metrics": set(config_file._METRIC),
        "mappings": set(config_file._MAPPING),
        "alerts": set(config_file._ALERT),
    }
    used: dict[str, set[str]] = {
        "tenant": set(example["tenant"]),
        **{s: {k for t in example[s].values() for k in t} for s in every if s != "tenant"},
    }
    unused = {f"{s}.{k}" for s, keys in every.items() for k in keys - used[s]}

    docs = (ROOT / "docs" / "config-file.md").read_text()
    said = re.search(r"uses every key but\s+(.+?)\.\n", docs, re.S)
    assert said is not None, "docs/config-file.md says which keys the example leaves out"
    assert set(re.findall(r"`(\w+\.\w+)`", said.group(1))) == unused
