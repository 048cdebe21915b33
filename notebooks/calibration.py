# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Calibration walk-through: deferral probability vs send rate
# Per provider and 10-minute bucket we count results and deferrals, then fit
# p(deferral) = 1 / (1 + exp(-(a + b * rate))) by maximum likelihood (binomial) with scipy.
# A positive `b` says the provider defers more the faster we send: the slope a shaping
# policy should respect. Data: the warehouse at `$INBOXLAB_HOME`.

# %%
import os

import numpy as np
from scipy import optimize, special

from inboxlab.warehouse import connect, query

con = connect(os.environ.get("INBOXLAB_HOME", "var"))
buckets = query(None, """
SELECT provider, time_bucket(INTERVAL 10 MINUTE, ts) AS t, count(*) AS n,
  count(*) FILTER (WHERE event = 'deferred') AS k
FROM events WHERE event IN ('delivered', 'deferred', 'bounced') AND provider IS NOT NULL
GROUP BY ALL HAVING count(*) >= 5 ORDER BY provider, t""", con=con)
print(buckets.head())

# %%
def fit(rate: np.ndarray, n: np.ndarray, k: np.ndarray) -> tuple[float, float]:
    x = (rate - rate.mean()) / (rate.std() or 1.0)

    def nll(theta: np.ndarray) -> float:
        z = theta[0] + theta[1] * x
        return float(-(k * -np.logaddexp(0, -z) + (n - k) * -np.logaddexp(0, z)).sum())

    res = optimize.minimize(nll, np.zeros(2), method="BFGS")
    a, b = res.x
    scale = rate.std() or 1.0
    return float(a - b * rate.mean() / scale), float(b / scale)


results = {}
for (provider,), part in buckets.partition_by("provider", as_dict=True).items():
    if part.height < 3:
        continue
    rate = part["n"].to_numpy().astype(float) / 10.0  # messages per minute
    a, b = fit(rate, part["n"].to_numpy(), part["k"].to_numpy())
    results[provider] = (a, b)
    observed = part["k"].sum() / part["n"].sum()
    predicted = float((special.expit(a + b * rate) * part["n"].to_numpy()).sum() / part["n"].sum())
    print(f"{provider}: a={a:.3f} b={b:.4f} per msg/min; observed {observed:.4f}, "
          f"fitted {predicted:.4f}")
    assert abs(observed - predicted) < 0.05
assert results, "need at least one provider with 3+ busy buckets"
