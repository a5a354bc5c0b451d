"""Adapter: train every seed of one task-ladder size with snapshots; writes size~{tsize}/seed~{seed}/ per rung.

One MLflow child run per size: each rung's curves and metrics are logged under ``seed{seed}.``.
"""

from pathlib import Path

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.emergence.ladder import TrainSettings, train_rung
from lmcal.models.store import MODEL_INFO, load_model_info

p, wc = snakemake.params, snakemake.wildcards
with job_run(snakemake) as run:
    train = io.read_parquet(snakemake.input.train)["text"]
    heldout = io.read_parquet(snakemake.input.heldout)["text"]
    for seed, init_seed in zip(p.seeds, p.init_seeds):
        out_dir = Path(snakemake.output.rungs) / f"seed~{seed}"
        hist = train_rung(dict(p.size, name=wc.tsize), int(init_seed), train, heldout, TrainSettings(**p.train),
                          out_dir, Path(p.work_dir) / f"seed~{seed}", max_position=p.max_position)
        info = load_model_info(out_dir / MODEL_INFO)
        if seed == p.seeds[0]:  # the architecture is the same for every seed of a size
            run.log_params({k: v for k, v in info.as_params().items() if "seed" not in k})
        run.log_metric_series(f"seed{seed}.train_loss", hist["train_loss"], hist["step"])
        run.log_metric_series(f"seed{seed}.heldout_ce", hist["eval_loss"], hist["eval_step"])
        run.log_metrics({f"seed{seed}.tokens_per_s": hist["tokens_per_s"],
                         f"seed{seed}.n_params_non_embedding": info.n_params_non_embedding,
                         f"seed{seed}.heldout_ce": hist["eval_loss"][-1]})
