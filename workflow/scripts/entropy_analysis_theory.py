"""Adapter: the toy power-law learner — exact, asymptotic and Monte Carlo singleton rates, slopes, generator."""

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.entropy import theory

with job_run(snakemake) as run:
    t, seed = snakemake.params.theory, snakemake.params.seed
    m_hi = t["v"] / 3 if t["m_hi"] is None else t["m_hi"]
    ms = theory.log_spaced_m(t["m_lo"], m_hi, t["n_m"])
    alphas = sorted(set(t["alphas"]) | set(t["fig_alphas"]) | set(t["mc_alphas"]))
    rates = theory.singleton_rate_table(alphas, ms, v=t["v"], mc_alphas=t["mc_alphas"], mc_draws=t["mc_draws"],
                                        seed=seed)
    slopes = theory.theory_slopes(alphas, v=t["v"], m_lo=t["m_lo"], m_hi=m_hi, n_m=t["n_m"],
                                  small_hi=t["small_hi"])
    toy, toy_slopes = theory.toy_generator_slopes(t["alphas"], ms, v=t["v"], steps=t["toy_steps"],
                                                  n_seq=t["toy_n_seq"], n_train=t["toy_n_train"],
                                                  c_h=t["toy_c_h"], seed=seed)
    for path, df in ((snakemake.output.rates, rates), (snakemake.output.slopes, slopes),
                     (snakemake.output.toy, toy), (snakemake.output.toy_slopes, toy_slopes)):
        io.write_parquet(df, path)
    for _, r in slopes.merge(toy_slopes[["alpha", "slope_entce"]], on="alpha", how="left").iterrows():
        run.log_metrics({f"exact_slope.a{r['alpha']:g}": r["slope"], f"toy_slope.a{r['alpha']:g}": r["slope_entce"],
                         f"predicted.a{r['alpha']:g}": r["predicted"]})
    print(slopes.to_string(), toy_slopes.to_string(), sep="\n")
