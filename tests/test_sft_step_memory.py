"""lmcal.sft.step_memory: one SFT step per loss implementation, each in its own process."""

import json

import pytest
from lmcal.sft import step_memory


def test_every_implementation_takes_the_same_step(tiny_model_dir, tmp_path):
    out = tmp_path / "step_memory.json"
    step_memory.main(["--model", str(tiny_model_dir), "--impls", "torch,chunked", "--batch", "2", "--length", "16",
                   "--threads", "1", "--out", str(out)])
    rows = {r["impl"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"torch", "chunked"}
    torch_row, chunked = rows["torch"], rows["chunked"]
    # same label-smoothed loss before and after one AdamW step: the implementations differ only in memory
    assert chunked["loss_first"] == pytest.approx(torch_row["loss_first"], rel=1e-5)
    assert chunked["loss_second"] == pytest.approx(torch_row["loss_second"], rel=1e-4)
    assert chunked["loss_second"] < chunked["loss_first"]
    assert torch_row["step_peak_vs_torch"] == 1.0 and chunked["step_peak_vs_torch"] > 0
    assert all(r["process_peak_mb"] >= r["step_peak_mb"] >= 0 and r["batch"] == 2 for r in rows.values())
