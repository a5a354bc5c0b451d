"""Adapter: fit a on half the prompt documents, sample the other half with the calibrated sampler (one model)."""

from pathlib import Path

from lmcal.core.tracking import job_run
from lmcal.entropy.calibrate import run_calibration

p, i, o = snakemake.params, snakemake.input, snakemake.output
heads = [i.head] if isinstance(i.head, str) else list(i.head)  # the trained head when method head runs
with job_run(snakemake) as run:
    result = run_calibration(
        Path(i.info).parent, list(i.prompts), list(i.docs), list(o.records), list(o.samples), methods=p.methods,
        decodes=p.decodes, head_file=heads[0] if heads else None, a_grid=p.a_grid, fit_fraction=p.fit_fraction,
        split_seed=p.split_seed, seed=p.seed,
        max_new_tokens=p.max_new_tokens, samples_per_prompt=p.samples_per_prompt, batch_size=p.batch_size,
        max_len=p.max_len, reference_decode=p.reference_decode)
    for key, r in result.items():
        run.log_metrics({f"{name}.{key.replace('/', '.')}": v for name, v in r.items()})
        print(f"{key}: a {r['a']:g}, EntCE {r['entce']:.4f}, log loss {r['logloss']:.4f} nats/token")
