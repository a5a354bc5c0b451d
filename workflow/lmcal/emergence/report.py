"""All analyses of the emergence study on the re-scored curves: numbers for summary.json and tables for figures.

Every fit of a scaling law uses ``lmcal.scaling`` with one FitSettings (logged whole as MLflow params). The
ladder's size axis is measured non-embedding parameters (``n_params``), never nominal sizes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmcal.core import io
from lmcal.core.claims import claim
from lmcal.emergence import analysis as an
from lmcal.emergence import verdicts
from lmcal.emergence.forecast import backtest, fit_task_law, two_step_forecast
from lmcal.emergence.metrics import METRICS, SHARP, SOFT
from lmcal.emergence.verdicts import sharp_vs_smooth
from lmcal.scaling.fit import fit_power_law
from lmcal.scaling.settings import FitSettings

FIT_ERRORS = (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError)


def ladder_points(curves: pd.DataFrame, final_only: bool = True) -> pd.DataFrame:
    """Ladder rows (one per size, seed, step, component); only final checkpoints unless told otherwise."""
    lad = curves[curves["family"] == "ladder"]
    return lad[lad["final"].astype(bool)] if final_only else lad


def seed_means(points: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (component, size): one curve point per size, with n_seeds and, per metric, its
    min and max over seeds (``{metric}_min``/``{metric}_max``: the spread the figures draw)."""
    cols = [m for m in METRICS if m in points] + ["heldout_ce", "target_len"]
    cols = [c for c in cols if c in points]
    g = points.groupby(["component", "size", "n_params"], sort=True)
    out = g[cols].mean().reset_index()
    spread = [m for m in METRICS if m in points]
    out = out.join(g[spread].min().reset_index(drop=True).add_suffix("_min"))
    out = out.join(g[spread].max().reset_index(drop=True).add_suffix("_max"))
    out["n_seeds"] = g["seed"].nunique().to_numpy()
    return out.sort_values(["component", "n_params"]).reset_index(drop=True)


def emergence_table(means: pd.DataFrame, metrics=SHARP + SOFT) -> pd.DataFrame:
    """Emergence score and early share (on the isotonic fit) per (component, metric) over the size axis;
    lower-is-better metrics are negated first so that positive means "improves with size"."""
    rows = []
    for comp, g in means.groupby("component"):
        for m in metrics:
            y = g[m].to_numpy(float)
            if m not in g or np.isnan(y).any() or len(y) < 3:
                continue
            y = y if METRICS[m] else -y
            rows.append(
                dict(
                    component=comp,
                    metric=m,
                    score=an.emergence_score(g["n_params"], y),
                    early_share=an.early_share(g["n_params"], y, monotone=True),
                    y_first=float(g[m].iloc[0]),
                    y_last=float(g[m].iloc[-1]),
                    max_log_slope=an.max_log_slope(g["n_params"], y),
                )
            )
    return pd.DataFrame(rows)


def pick_headline(means: pd.DataFrame, scores: pd.DataFrame, k: int, min_em: float = 0.1) -> list[str]:
    """Components whose EM gets off the floor (max ≥ min_em), by EM emergence score; the best-EM one if none."""
    em = means.groupby("component")["exact_match"].max()
    sc = scores[scores["metric"] == "exact_match"].set_index("component")["score"]
    ok = [c for c in sc.sort_values(ascending=False).index if em.get(c, 0) >= min_em]
    return ok[:k] if ok else [str(em.idxmax())]


def mirage(points: pd.DataFrame, means: pd.DataFrame, component: str, settings: FitSettings) -> dict:
    """Fit the component's per-token target CE vs N, then predict EM = p^L and normalised edit distance 1 − p
    (p = exp(−CE), L = mean target tokens) and compare with the observed curves."""
    pts = points[points["component"] == component]
    g = means[means["component"] == component]
    law = fit_power_law(
        pts["n_params"].to_numpy(float),
        pts["per_token_ce"].to_numpy(float),
        settings.replace(n_boot=0),
        progress=False,
    )
    L = float(g["target_len"].mean())
    pred = an.mirage_from_ce(law.predict(g["n_params"].to_numpy(float)), L)
    return dict(
        component=component,
        target_len=L,
        law=law.params,
        em_pred=pred["exact_match"].tolist(),
        ned_pred=(1 - pred["p"]).tolist(),
        em_rmse=float(np.sqrt(np.mean((pred["exact_match"] - g["exact_match"]) ** 2))),
        ned_rmse=float(np.sqrt(np.mean((1 - pred["p"] - g["norm_edit_distance"]) ** 2))),
    )


def loss_scaling(points: pd.DataFrame, n_holdout: int, settings: FitSettings) -> dict:
    """F1: held-out LM loss of the final checkpoints vs N, fitted without the ``n_holdout`` largest sizes."""
    per_rung = points.drop_duplicates(["size", "seed"])[["size", "seed", "n_params", "heldout_ce"]]
    sizes = np.sort(per_rung["n_params"].unique())
    fit_sizes = sizes[: max(3, len(sizes) - n_holdout)]
    tr = per_rung[per_rung["n_params"].isin(fit_sizes)]
    law = fit_power_law(
        tr["n_params"].to_numpy(float),
        tr["heldout_ce"].to_numpy(float),
        settings,
        groups=tr["n_params"].to_numpy(),
        progress=False,
    )
    held = per_rung[~per_rung["n_params"].isin(fit_sizes)].groupby("n_params")["heldout_ce"].mean()
    pred = law.predict(held.index.to_numpy(float)) if len(held) else np.zeros(0)
    return dict(
        law=law,
        table=per_rung,
        fit_sizes=fit_sizes.tolist(),
        heldout_rel_error=[float(abs(p - a) / a) for p, a in zip(pred, held.to_numpy())],
    )


def scratchpad(scores: pd.DataFrame, n_boot: int, ci: float, seed: int) -> list[dict]:
    """F12: crossover of scratchpad vs direct EM for every n with both formats (items pooled over seeds)."""
    lad = scores[(scores["family"] == "ladder") & scores["final"].astype(bool) & (scores["op"] == "add")]
    out = []
    for nd, g in lad.groupby("n_digits"):
        if set(g["format"]) < {"direct", "scratchpad"}:
            continue
        sizes = np.sort(g["n_params"].unique())
        hits = {
            f: [g[(g["format"] == f) & (g["n_params"] == s)]["exact_match"].to_numpy() for s in sizes]
            for f in ("direct", "scratchpad")
        }
        res = an.scratchpad_crossover(
            sizes, hits["direct"], hits["scratchpad"], n_boot=n_boot, ci=ci, seed=seed
        )
        out.append(dict(n_digits=int(nd), n=sizes.tolist(), **res))
    return out


def forecast_component(
    points: pd.DataFrame, all_points: pd.DataFrame, comp: str, cfg: dict, chance: dict, settings: FitSettings
) -> dict:
    """Two-step forecast and backtest of every forecastable metric of one component (F6, F7).

    The step-1 laws (task loss vs N) are fitted once per cutoff and shared by the metrics. Metrics that are
    missing for the component (MC grade of a non-MC format) or never above chance are skipped.
    """
    sub_f, sub_c = points[points["component"] == comp], all_points[all_points["component"] == comp]
    final = sub_f.rename(columns={"n_params": "n", "per_token_ce": "loss"})
    sizes = np.sort(final["n"].unique())
    fit_sizes = sizes[: max(3, len(sizes) - int(cfg.get("n_holdout", 2)))]
    bt_settings = settings.replace(n_boot=int(cfg.get("backtest_boot", 50)))
    law, laws = None, {}
    out: dict = dict(results={}, tables=[], backtests=[])
    for metric in cfg.get("forecast_metrics", ["exact_match", "per_digit_acc", "mc_grade"]):
        if sub_f[metric].isna().any() or sub_f[metric].max() <= chance[metric]:
            continue
        law = law or fit_task_law(final, fit_sizes, settings)
        laws = laws or {k: fit_task_law(final, sizes[:k], bt_settings) for k in range(3, len(sizes))}
        fm = final.rename(columns={metric: "metric"})
        cm = sub_c.rename(columns={"n_params": "n", "per_token_ce": "loss", metric: "metric"})
        two = two_step_forecast(fm, cm, fit_sizes, chance[metric], settings, law=law)
        bt = backtest(fm, cm, chance[metric], bt_settings, laws=laws)
        held = two["table"][two["table"]["held_out"]]
        out["results"][f"{comp}/{metric}"] = dict(
            law=two["law"].params,
            link={k: v for k, v in two["link"].items() if k != "residuals"},
            heldout_abs_error=held["abs_error"].tolist(),
            heldout_n=held["n"].tolist(),
            heldout_actual=held["actual"].tolist(),
            heldout_predicted=held["predicted"].tolist(),
            coverage=float(held["covered"].mean()),
            backtest_mean_abs_error=float(bt["abs_error"].mean()),
            backtest_coverage=float(bt["covered"].mean()),
        )
        out["tables"].append(two["table"].assign(component=comp, metric=metric))
        out["backtests"].append(bt.assign(component=comp, metric=metric))
    return out


def analyze(curves: pd.DataFrame, scores: pd.DataFrame, pass_until: pd.DataFrame, cfg: dict) -> dict:
    """Every analysis; returns {"results": JSON-able dict, "tables": {name: DataFrame}, "fits": {...}}.

    ``cfg``: fit (FitSettings keys), n_holdout, headline (list; empty = automatic), n_headline,
    forecast_metrics, n_choices, n_boot (hinge, crossover), backtest_boot (bootstrap fits per backtest step),
    ci, seed.
    """
    settings = FitSettings.from_dict(cfg.get("fit"))
    ci, n_boot, seed = float(cfg.get("ci", 0.95)), int(cfg.get("n_boot", 500)), int(cfg.get("seed", 0))
    points, all_points = ladder_points(curves), ladder_points(curves, final_only=False)
    means = seed_means(points)
    em_table = emergence_table(means)
    headline = list(cfg.get("headline") or []) or pick_headline(
        means, em_table, int(cfg.get("n_headline", 3))
    )
    res: dict = dict(
        headline=headline,
        n_sizes=int(means["size"].nunique()),
        n_rungs=int(points[["size", "seed"]].drop_duplicates().shape[0]),
        n_points_with_checkpoints=int(all_points[["size", "seed", "step"]].drop_duplicates().shape[0]),
    )
    f1 = loss_scaling(points, int(cfg.get("n_holdout", 2)), settings)
    res["loss_scaling"] = dict(
        **f1["law"].as_dict(), fit_sizes=f1["fit_sizes"], heldout_rel_error=f1["heldout_rel_error"]
    )
    res["mirage"], res["errors"] = {}, {}
    for comp in sorted(means["component"].unique()):
        try:
            res["mirage"][comp] = mirage(points, means, comp, settings)
        except FIT_ERRORS as exc:  # one component's failed fit must not sink the whole report
            res["errors"][f"mirage/{comp}"] = repr(exc)
    chance = {"exact_match": 0.0, "per_digit_acc": 0.0, "mc_grade": 1.0 / int(cfg.get("n_choices", 4))}
    res["forecast"], backtests, forecasts = {}, [], []
    for comp in headline:
        try:
            fc = forecast_component(points, all_points, comp, cfg, chance, settings)
        except FIT_ERRORS as exc:
            res["errors"][f"forecast/{comp}"] = repr(exc)
            continue
        res["forecast"].update(fc["results"])
        forecasts += fc["tables"]
        backtests += fc["backtests"]
    res["loss_threshold"] = {}
    for comp in headline:
        sub = all_points[all_points["component"] == comp].dropna(subset=["heldout_ce"])
        if len(sub) >= 4:
            res["loss_threshold"][comp] = an.fit_hinge(
                sub["heldout_ce"], sub["exact_match"], n_boot=n_boot, ci=ci, seed=seed
            )
    res["u_shape"] = {
        f"{c}/{m}": an.u_shape_test(g["n_params"], g[m])
        for c, g in means.groupby("component")
        for m in ("exact_match", "per_digit_acc", "target_logprob")
        if len(g) >= 4 and g[m].notna().all()
    }
    res["scratchpad"] = scratchpad(scores, n_boot, ci, seed)
    res["pass_until"] = {}
    pu = pass_until[pass_until["family"] == "ladder"] if len(pass_until) else pass_until
    for comp, g in pu.groupby("component") if len(pu) else []:
        greedy = points[points["component"] == comp].set_index(["size", "seed"])["exact_match"]
        g = g.join(greedy.rename("greedy_em"), on=["size", "seed"])
        res["pass_until"][comp] = dict(
            an.pass_until_law(g["n_params"], g["pu_pooled"]),
            n_rungs=len(g),
            # rungs whose greedy EM is 0 on the component but whose sampled hit rate is measurably > 0
            n_greedy_zero_sampled_positive=int(((g["greedy_em"] == 0) & (g["pu_pooled"] > 0)).sum()),
            pu_vs_p_exact_max_abs_diff=float((g["pu_pooled"] - g["p_exact"]).abs().max()),
        )
    res["sharp_vs_smooth"] = sharp_vs_smooth(em_table)
    seeds = verdicts.per_seed(points, lambda p: emergence_table(seed_means(p)))
    res["n_seeds"] = len(verdicts.complete_seeds(points))
    res["claims"] = verdicts.curve_claims(points, res["sharp_vs_smooth"], seeds) + verdicts.forecast_claims(
        pd.concat(forecasts, ignore_index=True) if forecasts else pd.DataFrame(), points
    )
    res["seed_table"] = verdicts.seed_table(points)
    tables = dict(
        means=means,
        emergence_scores=em_table,
        loss_points=f1["table"],
        forecast=pd.concat(forecasts, ignore_index=True) if forecasts else pd.DataFrame(),
        backtest=pd.concat(backtests, ignore_index=True) if backtests else pd.DataFrame(),
    )
    return dict(results=res, tables=tables, fits=dict(loss=f1["law"]), settings=settings)


def summarize(rep: dict, curves: pd.DataFrame) -> dict:
    """summary.json: what the study shows, in numbers (see the keys' names), plus every fitting setting."""
    res = rep["results"]
    means = rep["tables"]["means"]
    ref = curves[curves["family"] != "ladder"]
    jumps = {c: v for c, v in res["sharp_vs_smooth"].items() if v["em_jumps_soft_smooth"]}
    forecast_err = {
        k: dict(
            heldout_abs_error=v["heldout_abs_error"],
            heldout_n=v["heldout_n"],
            coverage=v["coverage"],
            backtest_mean_abs_error=v["backtest_mean_abs_error"],
        )
        for k, v in res["forecast"].items()
    }
    out = dict(
        n_sizes=res["n_sizes"],
        n_rungs=res["n_rungs"],
        n_seeds_every_size=res["n_seeds"],
        claims=res["claims"] + loss_claims(res["loss_scaling"]),
        seed_table=res["seed_table"],
        n_points_with_checkpoints=res["n_points_with_checkpoints"],
        n_params_range=[int(means["n_params"].min()), int(means["n_params"].max())],
        headline_components=res["headline"],
        em_jumps_while_soft_metrics_smooth=sorted(jumps),
        statement=(
            f"exact match jumps while edit distance and log-probability change smoothly for {sorted(jumps)}"
            if jumps
            else "no component shows exact match jumping while edit distance and log-probability stay "
            "smooth on this ladder (see sharp_vs_smooth and F2)"
        ),
        sharp_vs_smooth=res["sharp_vs_smooth"],
        final_exact_match={
            c: g.set_index("size")["exact_match"].to_dict() for c, g in means.groupby("component")
        },
        two_step_forecast=forecast_err,
        loss_scaling=dict(
            params=res["loss_scaling"]["params"],
            ci=res["loss_scaling"]["ci"],
            heldout_rel_error=res["loss_scaling"]["heldout_rel_error"],
        ),
        loss_threshold=res["loss_threshold"],
        mirage={
            c: dict(em_rmse=v["em_rmse"], ned_rmse=v["ned_rmse"], target_len=v["target_len"])
            for c, v in res["mirage"].items()
        },
        u_shaped=[k for k, v in res["u_shape"].items() if v["u_shaped"]],
        scratchpad=res["scratchpad"],
        pass_until=res["pass_until"],
        reference_models={
            f"{r.family}/{r.component}": dict(
                n_params=int(r.n_params),
                exact_match=r.exact_match,
                per_digit_acc=r.per_digit_acc,
                target_logprob=r.target_logprob,
            )
            for r in ref.itertuples()
        },
        fit_settings=rep["settings"].as_params(prefix=""),
        fit_errors=res["errors"],
    )
    return io.jsonable(out)


def loss_claims(loss: dict) -> list[dict]:
    """F1 as a claim: the held-out loss law's exponent with its bootstrap CI (falls with size if alpha > 0)."""
    alpha, ci = loss["params"].get("alpha"), (loss.get("ci") or {}).get("alpha")
    return [claim("emergence.loss_scaling.alpha", "held-out LM loss of the task ladder falls as a power law in N",
                  alpha, ci=ci, interval="bootstrap CI over rungs (nested in sizes), fitted without the largest",
                  rule="holds if the lower CI bound of alpha in E + A*N^-alpha is > 0",
                  verdict=bool(ci is not None and ci[0] is not None and ci[0] > 0) if alpha is not None else None)]


def headline_metrics(res: dict) -> dict[str, float]:
    """Flat numbers for MLflow ``log_metrics``: forecast errors and coverage, hinge η, early shares."""
    out: dict[str, float] = {}
    for key, v in res["forecast"].items():
        name = key.replace("/", ".")
        out[f"forecast.{name}.heldout_mae"] = float(np.mean(v["heldout_abs_error"]))
        out[f"forecast.{name}.coverage"] = v["coverage"]
        out[f"forecast.{name}.backtest_mae"] = v["backtest_mean_abs_error"]
    for comp, h in res["loss_threshold"].items():
        out[f"hinge.{comp}.eta"] = h["eta"]
    for comp, v in res["sharp_vs_smooth"].items():
        out[f"early_share.{comp}.exact_match"] = v["em_early_share"]
        out[f"early_share.{comp}.edit_distance"] = v["edit_distance_early_share"]
        out[f"early_share.{comp}.logprob"] = v["logprob_early_share"]
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}
