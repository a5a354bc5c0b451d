"""Adapter: train one model's future-entropy head on rollout labels from the fit half (method head)."""

from pathlib import Path

from lmcal.core.tracking import job_run
from lmcal.entropy.calibrate_head import run_head_training

p, i, o = snakemake.params, snakemake.input, snakemake.output
with job_run(snakemake) as run:
    rec = run_head_training(
        Path(i.info).parent, list(i.prompts), o.head, o.record, settings=p.settings, fit_fraction=p.fit_fraction,
        split_seed=p.split_seed, seed=p.seed, samples_per_prompt=p.samples_per_prompt, batch_size=p.batch_size)
    run.log_metrics({k: rec[k] for k in ("train_mse", "val_mse", "val_rmse_vs_rollout", "val_rmse_vs_lookahead",
                                         "val_rmse_constant_vs_rollout", "val_rmse_rollout_vs_lookahead")})
    run.log_metrics({f"wall_s.{k}": v for k, v in rec["wall_s"].items()})
    for name in ("train_mse_history", "val_mse_history"):
        run.log_metric_series(name.removesuffix("_history"), rec[name],
                              steps=range(0, len(rec[name]) * rec["history_stride"], rec["history_stride"]))
    print(f"head: {rec['n_pairs']} pairs, val RMSE vs rollout {rec['val_rmse_vs_rollout']:.4f} "
          f"(constant {rec['val_rmse_constant_vs_rollout']:.4f}), vs lookahead {rec['val_rmse_vs_lookahead']:.4f}")
