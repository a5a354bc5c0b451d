"""Adapter: Zipf exponent of one corpus (top-k unigrams, document-bootstrap CI) and its rank-frequency table."""

from pathlib import Path

import pandas as pd
from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.entropy import theory

with job_run(snakemake) as run:
    p = snakemake.params
    docs = io.read_parquet(snakemake.input.documents)
    model_dir = Path(snakemake.input.tokenizer[0]).parent if len(snakemake.input.tokenizer) else None
    ids, described = theory.tokenize_for_zipf(docs["text"].tolist(), p.tokenizer, model_dir)
    counts = theory.unigram_count_matrix(ids)
    res = theory.zipf_alpha_with_ci(counts, top_k=p.top_k, n_boot=p.n_boot, seed=p.seed, ci=p.ci)
    res.update(dataset=snakemake.wildcards.dataset, tokenizer=described)
    ranks, freqs = theory.rank_frequency(counts.sum(axis=0).A1, p.top_k)
    io.write_parquet(pd.DataFrame({"dataset": res["dataset"], "rank": ranks, "freq": freqs}),
                     snakemake.output.rank_freq)
    io.write_json(res, snakemake.output.zipf)
    run.log_params({"tokenizer_description": described})
    run.log_metrics({"alpha": res["alpha"], "alpha_lo": res["alpha_ci"][0], "alpha_hi": res["alpha_ci"][1],
                     "predicted_exponent": 1 / res["alpha"] - 1, "k_used": res["k_used"], "r2": res["r2"]})
    print(f"{res['dataset']}: alpha {res['alpha']:.4f} CI {res['alpha_ci']} over {res['n_tokens']} tokens")
