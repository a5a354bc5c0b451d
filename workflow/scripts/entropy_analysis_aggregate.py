"""Adapter: EntCE table across models, size fits per (family, dataset) with bootstrap CIs, temperature table."""

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.entropy import analysis as entropy

with job_run(snakemake) as run:
    p = snakemake.params
    table = entropy.entce_table([io.read_json(f) for f in snakemake.input.scalars], p.families)
    docs = [io.read_parquet(f) for f in snakemake.input.docs]
    sums = {(d["model"].iat[0], d["dataset"].iat[0]): d for d in docs
            if len(d) and d["decode"].iat[0] == p.reference_decode}
    fits, draws = entropy.size_fits(table, sums, decode=p.reference_decode, size_key=p.size_key,
                                    size_unit=p.size_unit, negative=p.negative, n_boot=p.n_boot, seed=p.seed,
                                    ci=p.ci)
    table = entropy.with_entce_ci(table, docs, n_boot=p.n_boot, seed=p.seed, ci=p.ci)  # EntCE claims' CIs
    temps = entropy.temperature_table(table, p.decodes, p.temperature_decodes or None)
    for path, df in ((snakemake.output.table, table), (snakemake.output.fits, fits),
                     (snakemake.output.draws, draws), (snakemake.output.temperatures, temps)):
        io.write_parquet(df, path)
    for _, f in fits[fits["status"] == "ok"].iterrows():
        run.log_metrics({f"slope.{f['family']}.{f['dataset']}": f["slope"],
                         f"slope_lo.{f['family']}.{f['dataset']}": f["slope_lo"],
                         f"slope_hi.{f['family']}.{f['dataset']}": f["slope_hi"]})
    print(fits.drop(columns=["models"]).to_string())
