"""Report builders and the dashboard's data: frames and charts over the warehouse query layer.

``data`` computes frames (only through ``inboxlab.warehouse``: ``connect``/``query``/``metric``),
``charts`` turns frames into plotly figures, ``html`` writes self-contained HTML reports and
``redact`` masks recipients. The Streamlit app and the notebooks call the same functions.
"""

from __future__ import annotations
