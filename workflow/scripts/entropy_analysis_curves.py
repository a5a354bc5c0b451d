"""Adapter: per-step curves, scalar EntCE and per-document sums for every (dataset, decode) of one model."""

from lmcal.core import io, paths
from lmcal.core.tracking import job_run
from lmcal.entropy import analysis
from lmcal.models.store import load_model_info
from tqdm.auto import tqdm

with job_run(snakemake) as run:
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    info = load_model_info(i.info)
    run.log_params({f"model_info.{k}": v for k, v in info.as_params().items()})
    for k, (samples, human) in enumerate(tqdm(list(zip(i.samples, i.human)), desc="curves")):
        key = paths.run_key(samples)
        if paths.run_key(human) != key or paths.run_key(o.curves[k]) != key:
            raise ValueError(f"input/output lists are not aligned at {samples}")
        curves, record, docs = analysis.analyse_run(
            io.read_parquet(samples), io.read_parquet(human), **key, decode_config=p.decodes[key["decode"]],
            model_info=info.as_params(), max_len=p.max_len, smoothing=p.smoothing)
        io.write_parquet(curves, o.curves[k])
        io.write_parquet(docs, o.docs[k])
        io.write_json(record, o.scalars[k])
        tag = f"{key['dataset']}.{key['decode']}"
        run.log_metrics({f"{name}.{tag}": record[name] for name in ("entce", "entce_finite", "entropy", "logloss")})
        for series in ("entropy", "logloss"):
            c = curves[curves["series"] == series]
            run.log_metric_series(f"curve.{series}.{tag}", c["mean"].tolist(), steps=c["step"].tolist())
        print(f"{tag}: EntCE {record['entce']:.4f} nats/token (entropy {record['entropy']:.4f}, "
              f"log loss {record['logloss']:.4f}, {record['n_samples']} samples)")
