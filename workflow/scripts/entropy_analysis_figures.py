"""Adapter: Figures 1-4 of the entropy-calibration study (spec §8)."""

import pandas as pd
from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.entropy import analysis as entropy
from lmcal.entropy import figures as figs

with job_run(snakemake) as run:
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    table, temps = io.read_parquet(i.table), io.read_parquet(i.temperatures)
    curves = pd.concat([io.read_parquet(f) for f in i.curves], ignore_index=True)
    base = table[table["decode"] == p.reference_decode]
    sizes = dict(zip(base["model"], base[p.size_key]))
    families = {m: entropy.family_of(m, p.families) for m in curves["model"].unique()}
    zipf = {z["dataset"]: z for z in (io.read_json(f) for f in i.zipf)}
    rank_freq = pd.concat([io.read_parquet(f) for f in i.rank_freq], ignore_index=True)
    fig3_models = p.fig3_models or sorted(m for m, n in temps.groupby("model")["decode"].nunique().items() if n >= 2)
    figures = {
        "fig1": figs.plot_size_fits(table, io.read_parquet(i.fits), io.read_parquet(i.draws),
                                    decode=p.reference_decode, size_key=p.size_key, size_unit=p.size_unit, ci=p.ci),
        "fig2": figs.plot_step_curves(curves, sizes, families, smoothed=True),
        "fig2_raw": figs.plot_step_curves(curves, sizes, families, smoothed=False),
        "fig3": figs.plot_temperature(temps, models=fig3_models, instruct=p.instruct, instruct_rows=base),
        "fig4": figs.plot_theory(io.read_parquet(i.rates), rank_freq, zipf, alphas=p.fig_alphas),
    }
    for name, fig in figures.items():
        io.save_figure(fig, o[name])
        run.log_figure(fig, f"figures/{name}.png")
