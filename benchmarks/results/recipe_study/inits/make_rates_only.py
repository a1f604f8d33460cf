"""The shipped default's learned rule (rates, momentum, TV, Fourier scale) on fresh random
weights of the same network (seed 0): the note's "random weights + learned rates" row.

    python benchmarks/results/recipe_study/inits/make_rates_only.py
"""

from dataclasses import replace
from pathlib import Path

from metadip.init import MetaInit
from metadip.shipped import load_init

shipped = load_init("default")
cfg = shipped.config
fresh = MetaInit.random(3, width=cfg.width, depth=cfg.depth, num_fourier=cfg.num_fourier, seed=0)
out = replace(
    shipped,
    weights=fresh.weights,
    metadata={"source": "shipped default rule on seed-0 random weights"},
)
path = Path(__file__).with_name("default_rule_random_weights.safetensors")
out.save(path)
print(f"wrote {path}")
