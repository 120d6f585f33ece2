"""The airdask page on the Dask dashboard.

* :mod:`airdask.dashboard.summary`: the summary the airdask scheduler builds from the DB and
  publishes to the Dask scheduler (no DB access needed on the Dask side).
* :mod:`airdask.dashboard.published`: where the summary lives and how the Dask side reads
  it (imports no SQLAlchemy).
* :mod:`airdask.dashboard.page`: the Bokeh page that shows it, refreshed live.
* :mod:`airdask.dashboard.preload`: the scheduler preload that adds the page.
* rich HTML for notebooks lives in :mod:`airdask.display` (pure, no Bokeh).

Importing this package imports neither Bokeh nor the database layer.
"""
