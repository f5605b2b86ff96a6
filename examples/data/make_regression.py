#!/usr/bin/env python3
"""Writes regression.csv: 2000 rows of x1, x2, x3 drawn uniformly from
[-1.5, 1.5] and y = sin(2 x1) + x2^2 / 2 - x3 + 0.1 e, with e standard
normal. The noise sets the floor of any model's error: an RMSE of 0.1.
Deterministic (seed 7), so the file in the repository can be regenerated."""
import math
import random

rng = random.Random(7)
with open("regression.csv", "w") as f:
    f.write("x1,x2,x3,y\n")
    for _ in range(2000):
        x1, x2, x3 = (rng.uniform(-1.5, 1.5) for _ in range(3))
        y = math.sin(2 * x1) + x2 * x2 / 2 - x3 + 0.1 * rng.gauss(0, 1)
        f.write(f"{x1:.5f},{x2:.5f},{x3:.5f},{y:.5f}\n")
