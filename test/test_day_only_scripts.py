"""The day-only training scripts read labels of day drives only, and every drive they name is a train drive."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT.parent / "shared" / "datasets" / "semloc-sim-v1"
V2 = ROOT.parent / "semloc-sim-v2"


def bash_array(script: str, name: str) -> list[str]:
    match = re.search(rf"^{name}=\(([^)]*)\)", script, flags=re.MULTILINE)
    assert match, f"no array {name}"
    return match.group(1).split()


@pytest.mark.parametrize("script", ["train_day_only.sh", "train_day_only_v2.sh"])
def test_labeled_drives_are_day_drives_and_pseudo_labeled_ones_are_not(script) -> None:
    text = (ROOT / "scripts" / script).read_text()
    day, unlabeled = bash_array(text, "day"), bash_array(text, "unlabeled")
    assert day and unlabeled and not set(day) & set(unlabeled)
    assert all("_day_" in name for name in day)
    assert not any("_day_" in name for name in unlabeled)
    assert '--drives "${day[@]}"' in text and '--pseudo-drives "${unlabeled[@]}"' in text


def test_v2_day_only_drives_are_train_drives_of_their_conditions() -> None:
    roots = [root for root in (V1, V2) if (root / "splits.json").is_file()]
    if not roots:
        pytest.skip("neither semloc-sim-v1 nor semloc-sim-v2 is here")
    text = (ROOT / "scripts" / "train_day_only_v2.sh").read_text()
    conditions = {}
    for root in roots:
        for name in json.loads((root / "splits.json").read_text())["train"]:
            conditions[name] = json.loads((root / "drives" / name / "drive.json").read_text())["condition"]
    for name in bash_array(text, "day"):
        assert conditions.get(name, "day") == "day", name
    for name in bash_array(text, "unlabeled"):
        assert conditions.get(name, "other") != "day", name
    if len(roots) == 2:  # both datasets here: every named drive is one of their train drives
        assert set(bash_array(text, "day")) | set(bash_array(text, "unlabeled")) <= set(conditions)
