"""Adapter: the study's summary.json — EntCE per run, size exponents with CIs, Zipf α and theory slopes."""

from lmcal.core import io
from lmcal.core.report_tables import write_tables_html
from lmcal.core.tracking import job_run
from lmcal.entropy import analysis as entropy

with job_run(snakemake) as run:
    p, i = snakemake.params, snakemake.input
    fits = io.read_parquet(i.fits)
    zipf = {z["dataset"]: z for z in (io.read_json(f) for f in i.zipf)}
    t = p.theory
    exponents = entropy.exponent_table(fits, zipf, v=t["v"], m_lo=t["m_lo"], m_hi=t["m_hi"], n_m=t["n_m"])
    summary = entropy.study_summary(io.read_parquet(i.table), fits, exponents, zipf, io.read_parquet(i.slopes),
                                    io.read_parquet(i.toy_slopes), p.settings)
    summary["figures"] = list(i.figures)
    io.write_parquet(exponents, snakemake.output.exponents)
    write_tables_html("Entropy calibration: EntCE per run, size fits, exponents",
                      {"entce.parquet": io.read_parquet(i.table), "size_fits.parquet": fits,
                       "exponents.parquet": exponents}, snakemake.output.tables_html)
    io.write_json(summary, snakemake.output.summary)
    for z in zipf.values():
        run.log_metrics({f"alpha.{z['dataset']}": z["alpha"], f"predicted_exponent.{z['dataset']}": 1 / z["alpha"] - 1})
    print(exponents.to_string())
