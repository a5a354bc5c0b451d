"""Target lists and code versions for ``workflow/rules/emergence.smk`` (imported at parse time: keep it light)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path


def rungs(cfg: dict) -> list[tuple[str, int]]:
    """(size, seed) of every rung: every size with seeds[0], the ``seeded_sizes`` smallest with every seed.

    Sizes are ordered by hidden² · layers, a proxy of their parameter count (the measured count is
    what every analysis uses).
    """
    sizes = sorted(
        cfg["sizes"], key=lambda s: cfg["sizes"][s]["hidden"] ** 2 * cfg["sizes"][s]["layers"]
    )
    seeds = [int(s) for s in cfg["seeds"]]
    if not sizes or not seeds:
        raise ValueError("emergence.sizes and emergence.seeds must not be empty")
    many = set(sizes[: int(cfg.get("seeded_sizes", 0))])
    return [(s, sd) for s in sizes for sd in (seeds if s in many else seeds[:1])]


def rung_paths(cfg: dict, pattern: str) -> list[str]:
    """``pattern`` (with {tsize} and {seed}) filled in for every rung."""
    return [pattern.format(tsize=s, seed=sd) for s, sd in rungs(cfg)]


def size_seeds(cfg: dict) -> dict[str, list[int]]:
    """Size → the seeds it trains with (``rungs`` grouped by size, in rung order): one training job per size."""
    out: dict[str, list[int]] = {}
    for size, seed in rungs(cfg):
        out.setdefault(size, []).append(seed)
    return out


def size_dirs(cfg: dict) -> list[str]:
    """The output directory of every size's training job (it holds ``seed~{seed}/`` per rung)."""
    return [f"results/emergence/models/size~{s}" for s in size_seeds(cfg)]


def init_seed(run_seed: int, rung_seed: int | str) -> int:
    """The seed a rung trains with: its own seed under run seed 0, ``1000 * run_seed + rung_seed`` otherwise.

    The run-wide ``seed:`` then reseeds the whole study (task data, init, batch order) while the rung paths
    (``seed~{rung_seed}``) and the seed-0 results stay as they are.
    """
    run_seed, rung_seed = int(run_seed), int(rung_seed)
    if run_seed < 0 or not 0 <= rung_seed < 1000:
        raise ValueError(f"seed: expected run seed >= 0 and rung seed in 0..999, got {run_seed}, {rung_seed}")
    return 1000 * run_seed + rung_seed


def code_version(*modules: str) -> str:
    """Short SHA-256 of the source of ``modules``: a rule param that reruns a job when that code changes."""
    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)  # located, not imported: rule files stay fast to parse
        if spec is None or spec.origin is None:
            raise ValueError(f"modules: cannot find module {name!r}")
        h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()[:12]
