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
# # Ad-hoc analysis of deferrals
# Reads the warehouse at `$INBOXLAB_HOME` (default `./var`) through the query layer.
# Fill it with `inboxlab import postfix fixtures/logs/postfix-maillog.log` or
# `inboxlab sim run gmail-brownout --out var/runs/gb && inboxlab ingest var/runs/gb`.

# %%
import os

from inboxlab.report import data as d
from inboxlab.warehouse import connect, metric, query

home = os.environ.get("INBOXLAB_HOME", "var")
con = connect(home)
print(d.overview(con))

# %% [markdown]
# Deferral rate per source and provider, then the codes behind it with their hints.

# %%
rates = query(None, """
SELECT source, provider, count(*) AS results,
  count(*) FILTER (WHERE event = 'deferred') AS deferrals,
  round(deferrals / results, 4) AS deferral_rate
FROM events WHERE event IN ('delivered', 'deferred', 'bounced')
GROUP BY ALL ORDER BY deferral_rate DESC""", con=con)
print(rates)
codes = metric(None, "deferral_codes", by="provider", con=con)
print(codes.head(10))
assert rates["deferrals"].sum() == codes["n"].sum()

# %%
print(d.deferrals_by_class(con))
