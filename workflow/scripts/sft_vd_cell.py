"""Adapter: one V/D cell: per seed, pretrain a (V, D) model, then evaluate it and its SFT at each beta."""

from pathlib import Path

from lmcal.calibration.metrics import HEADLINE
from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.models import checkpoint
from lmcal.models import tokenizers as ladder
from lmcal.sft import vd as vd_study
from transformers import AutoTokenizer

p = snakemake.params
with job_run(snakemake) as run:
    tok = AutoTokenizer.from_pretrained(Path(snakemake.input.tokenizer).parent)
    streams = ladder.load_token_streams(snakemake.input.tokens)
    rows, reliability = vd_study.run_seeds(
        tok, streams, io.read_parquet(snakemake.input.data), io.read_parquet(snakemake.input.evalset),
        hidden=int(snakemake.wildcards.hidden), arch=p.arch, pretrain_cfg=p.pretrain, run=p.run,
        label_smoothing=p.label_smoothing, eval_settings=p.eval_settings, seeds=p.seeds,
        checkpoint_dir=p.checkpoint_dir,
        # checkpoints resume only with these exact files (SFT examples and base weights are digested inside)
        fingerprint_inputs={"tokenizer_file": checkpoint.file_digest(snakemake.input.tokenizer),
                            "tokens_file": checkpoint.file_digest(snakemake.input.tokens)})
    io.write_parquet(rows, snakemake.output.rows)
    io.write_parquet(reliability, snakemake.output.reliability)
    # the seeds are a rule param already (logged by job_run)
    run.log_params({"vocab_size": int(rows["vocab_size"].iloc[0]), "hidden_size": int(snakemake.wildcards.hidden)})
    for _, r in rows.iterrows():
        key = f"s{int(r['seed'])}." + ("base" if r["kind"] == "base" else f"b{r['label_smoothing']:g}")
        run.log_metrics({f"{key}.{k}": r[k] for k in (*HEADLINE, "gap_mean", "conf_bound", "conf_mean", "conf_max")})
        if r["delta_star"] is not None and r["delta_star"] == r["delta_star"]:
            run.log_metrics({f"{key}.delta_star": r["delta_star"]})
