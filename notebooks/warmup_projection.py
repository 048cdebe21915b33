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
# # Warmup projection
# Daily volume and deferral rate per pool x provider, the Wilson interval of the last day and
# the projected safe daily volume (the `warmup` metric), from the warehouse at `$INBOXLAB_HOME`.

# %%
import os

from inboxlab.report import charts
from inboxlab.report import data as d
from inboxlab.warehouse import connect

con = connect(os.environ.get("INBOXLAB_HOME", "var"))
daily = d.warmup_daily(con)
print(daily)

# %%
state = d.warmup(con)
print(state.select("pool", "provider", "days", "last_attempts", "last_deferral_rate", "ci_low",
                   "ci_high", "state", "projected_safe_daily", "projected_low", "projected_high"))
assert (state["ci_low"] <= state["last_deferral_rate"]).all()
assert (state["last_deferral_rate"] <= state["ci_high"]).all()

# %%
fig = charts.warmup_projection(state)
fig.show()
