"""Tiny versions of lmcal's long-running jobs, run as separate processes by tests/test_kill_resume.py.

    python tests/kill_resume_jobs.py KIND WORK RESULT [--pause-after N]

runs job KIND (see ``JOBS``) with its checkpoints/shards under WORK and writes its outputs under RESULT
(``tensors.safetensors`` and/or ``*.parquet`` / ``history.json``, compared bit for bit by the test) plus
``progress.json``: where this process resumed from and which checkpoints/shards it wrote itself.
``--pause-after N`` holds the process after its N-th checkpoint or shard is on disk (``WORK/paused`` appears),
so the test can SIGKILL it at a known point of a real run. The hooks only observe; the job code is lmcal's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

PROGRESS: dict = {}


def _pause_hook(work: Path, pause_after: int | None):
    """Called after each checkpoint/shard is on disk; holds the process after the ``pause_after``-th one."""
    count = [0]

    def hook() -> None:
        count[0] += 1
        if pause_after is not None and count[0] == pause_after:
            (work / "paused").write_text(json.dumps(PROGRESS))
            time.sleep(600)  # the test kills us here

    return hook


def install_hooks(work: Path, pause_after: int | None):
    """Patch the checkpoint and shard writers to record progress (and pause); returns a function that undoes it."""
    from lmcal.core import io
    from lmcal.models import checkpoint

    hook = _pause_hook(work, pause_after)
    save, restore, write_parquet = checkpoint.Checkpointer.save, checkpoint.Checkpointer.restore, io.write_parquet

    def saving(self, model, opt, step, history):
        save(self, model, opt, step, history)
        PROGRESS["checkpoints_written"].append(f"{self.dir.name}@{step}")
        hook()

    def restoring(self, model, opt):
        got = restore(self, model, opt)
        if got is not None:
            PROGRESS["resumed_from"].append(f"{self.dir.name}@{got[0]}")
        return got

    def writing(df, path, *a, **kw):
        out = write_parquet(df, path, *a, **kw)
        if Path(path).name.startswith("shard-"):
            PROGRESS["shards_written"].append(Path(path).name)
            hook()
        return out

    checkpoint.Checkpointer.save, checkpoint.Checkpointer.restore, io.write_parquet = saving, restoring, writing

    def undo() -> None:
        checkpoint.Checkpointer.save, checkpoint.Checkpointer.restore, io.write_parquet = save, restore, write_parquet

    return undo


def run_job(kind: str, work: Path, result: Path, pause_after: int | None = None) -> dict:
    """Run one job (in this process) with the progress hooks; returns and writes its progress record."""
    PROGRESS.clear()
    PROGRESS.update({"resumed_from": [], "checkpoints_written": [], "shards_written": []})
    work.mkdir(parents=True, exist_ok=True)
    result.mkdir(parents=True, exist_ok=True)
    undo = install_hooks(work, pause_after)
    try:
        JOBS[kind](work, result)
    finally:
        undo()
    (result / "progress.json").write_text(json.dumps(PROGRESS))
    return dict(PROGRESS)


# ------------------------------------------------------------------------------------------------ jobs


def _stream(n=3000, vocab=50, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.1, rng.integers(0, vocab, n), np.arange(n) % 7).astype(np.int32)


def _save_model(model, history: dict | None, result: Path) -> None:
    from lmcal.core import io
    from safetensors.torch import save_file

    save_file({k: v.detach().clone() for k, v in model.state_dict().items()}, str(result / "tensors.safetensors"))
    if history is not None:
        io.write_json({k: v for k, v in history.items() if k != "tokens_per_s"}, result / "history.json")


def ladder(work: Path, result: Path) -> None:
    """``train_lm`` with checkpoints, as the ladder's train rule runs it."""
    from lmcal.models import llama

    ids = _stream()
    model = llama.build_llama({"hidden": 16, "layers": 1, "heads": 2}, vocab_size=50, seed=1)
    hist = llama.train_lm(model, ids, steps=12, batch_size=4, seq_len=16, lr=1e-2, warmup_steps=2, seed=3,
                          eval_ids=ids[:400], eval_every=3, checkpoint_dir=work / "ckpt", checkpoint_every=3,
                          progress=False)
    _save_model(model, hist, result)


def task_ladder(work: Path, result: Path) -> None:
    """emergence ``train_rung``: snapshots at steps 4 and 8, checkpoints every 2 steps."""
    import pandas as pd
    from lmcal.emergence import ladder as task
    from safetensors.torch import load_file

    texts = pd.Series(["12+34=46. 7+8=15. " * 20, "the cat sat on the mat. " * 20] * 3)
    settings = task.TrainSettings(steps=12, batch_size=4, seq_len=16, lr=3e-3, warmup_steps=2, checkpoint_every=2,
                                  snapshot_steps=[4, 8], eval_every=6)
    hist = task.train_rung({"name": "r", "hidden": 16, "layers": 1, "heads": 2}, 0, texts, texts[:2], settings,
                           result / "rung", work / "work", max_position=64, progress=False)
    from lmcal.core import io

    io.write_json({k: v for k, v in hist.items() if k != "tokens_per_s"}, result / "history.json")
    tensors = {}
    for step, d in task.list_snapshots(result / "rung"):
        tensors.update({f"step{step}/{k}": v for k, v in load_file(str(d / "model.safetensors")).items()})
    from safetensors.torch import save_file

    save_file(tensors, str(result / "tensors.safetensors"))


def _sft_setup():
    from lmcal.data.instructions import IGNORE_INDEX
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=32,
                                         tie_word_embeddings=False))
    rng = np.random.default_rng(0)
    examples = []
    for _ in range(16):
        ids = rng.integers(1, 40, size=int(rng.integers(6, 12))).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]})
    return model, examples


def sft(work: Path, result: Path) -> None:
    """``train_sft`` with ``checkpoint_every``."""
    from lmcal.sft import train

    model, examples = _sft_setup()
    cfg = train.SFTConfig(lr=1e-2, max_steps=10, batch_size=2, checkpoint_every=2, label_smoothing=0.1)
    hist = train.train_sft(model, examples, cfg, pad_id=0, checkpoint_dir=work / "ckpt", progress=False)
    _save_model(model, hist, result)


def vd_cell(work: Path, result: Path) -> None:
    """``sft.vd.run_cell``: pretraining (4 checkpoints) then SFT at two β (2 checkpoints each)."""
    from lmcal.data import instructions as sft_data
    from lmcal.data.evalsets import synthetic as evalsets
    from lmcal.models import tokenizers
    from lmcal.sft import vd

    text = [" ".join(f"{i} plus {j} is {i + j}." for i in range(12) for j in range(12))] * 3
    tok = tokenizers.train_bpe_tokenizer(text, 300)
    ids = tokenizers.tokenize_documents(tok, text)
    items = evalsets.arithmetic_evalset(12, seed=0, max_operand=9)
    conv = sft_data.arithmetic_conversations(32, seed=1, max_operand=9, exclude_questions=items["question"])
    run = {"lr": 1e-3, "plain_template": {"user": "Question: {content}\nAnswer:", "assistant": " {content}"},
           "use_chat_template": False, "max_length": 32,
           "train": {"max_steps": 4, "batch_size": 8, "checkpoint_every": 2}}
    settings = {"method": "option", "normalization": "mean", "template": "Question: {question}\nAnswer:",
                "chat_template": "never", "n_bins": 5, "binning": "width", "batch_size": 16}
    rows, rel = vd.run_cell(tok, {"train": ids, "eval": ids}, conv, items, hidden=16, arch={"layers": 1, "heads": 2},
                            pretrain_cfg={"steps": 8, "batch_size": 2, "seq_len": 16, "lr": 1e-3, "warmup_steps": 1,
                                          "eval_tokens": 128},
                            run=run, label_smoothing=[0.0, 0.1], eval_settings=settings, seed=0,
                            checkpoint_dir=work / "cell")
    rows.to_parquet(result / "rows.parquet")
    rel.to_parquet(result / "reliability.parquet")


def _sample(work: Path, result: Path, calibration=None) -> None:
    from lmcal.lm.decode import DecodeConfig
    from lmcal.lm.sampling import generate_samples
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256)).eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19], [20], [21, 22, 23]]
    df = generate_samples(model, prompts, [f"d{i}" for i in range(len(prompts))],
                          decode=DecodeConfig(temperature=0.9), max_new_tokens=10, eos_token_ids=[1], seed=7,
                          shard_dir=work / "shards", batch_size=2, shard_size=2, samples_per_prompt=2,
                          progress=False, calibration=calibration)
    df.to_parquet(result / "samples.parquet")


def sampling(work: Path, result: Path) -> None:
    """``generate_samples`` with shards of 2 samples (5 shards)."""
    _sample(work, result)


def calibrated_sampling(work: Path, result: Path) -> None:
    """``generate_samples`` with ``calibration=`` (the future-adjusted sampler of ``lmcal.lm.future``)."""
    from lmcal.lm.future import FutureCalibration

    _sample(work, result, FutureCalibration(a=0.5, kind="lookahead", top_k=3))


JOBS = {"ladder": ladder, "task_ladder": task_ladder, "sft": sft, "vd_cell": vd_cell, "sampling": sampling,
        "calibrated_sampling": calibrated_sampling}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=sorted(JOBS))
    ap.add_argument("work", type=Path)
    ap.add_argument("result", type=Path)
    ap.add_argument("--pause-after", type=int, default=None)
    args = ap.parse_args(argv)
    run_job(args.kind, args.work, args.result, args.pause_after)


if __name__ == "__main__":
    main(sys.argv[1:])
