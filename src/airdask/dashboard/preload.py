"""Scheduler preload that adds the airdask page to the Dask dashboard.

Use it as ``dask scheduler --preload airdask.dashboard.preload``, on a LocalCluster with
``scheduler_kwargs={"preload": ["airdask.dashboard.preload"]}``, or through the
``distributed.scheduler.preload`` config. The page is then at ``/airdask`` (in the
dashboard's navigation bar) and ``/individual-airdask`` (listed by ``individual-plots.json``,
so JupyterLab's dask extension offers it).

Custom dashboard pages have no public API in distributed; this module relies on two
internals, each pinned by ``tests/dashboard/test_dashboard.py``:

1. ``distributed.dashboard.scheduler.applications``: the table of Bokeh documents the
   scheduler turns into its dashboard in ``Scheduler.__init__``. Dask imports a preload
   module inside ``Scheduler.__init__`` *before* the dashboard is built, so importing this
   module is the moment to add the page to that table (:func:`register_routes`; that is
   this module's only purpose, so the import-time registration is its contract).
2. ``Scheduler.http_application`` (a Tornado ``RoutingApplication``) accepts extra
   applications at runtime. :func:`install` uses it when the scheduler's dashboard was built
   without the page (this module was imported after the scheduler started, e.g. through
   ``Client.run_on_scheduler(install)``).

:func:`install` also adds an "Airdask" entry to the navigation bar of every dashboard page.
"""

from __future__ import annotations

import logging
from typing import Any

from airdask.dashboard.page import airdask_doc, individual_airdask_doc

log = logging.getLogger(__name__)

ROUTE = "/airdask"
INDIVIDUAL_ROUTE = "/individual-airdask"
PAGE_NAME = ROUTE.strip("/")
#: This module's name, for ``--preload`` and ``scheduler_kwargs={"preload": [...]}``.
PRELOAD = __name__

_DOCS = {ROUTE: airdask_doc, INDIVIDUAL_ROUTE: individual_airdask_doc}


def register_routes() -> None:
    """Add the page to Dask's dashboard table; schedulers built afterwards in this process
    serve it. Idempotent."""
    from distributed.dashboard import scheduler as dashboard

    for route, doc in _DOCS.items():
        dashboard.applications.setdefault(route, doc)


def _bokeh_apps(scheduler: Any) -> list[Any]:
    from bokeh.server.tornado import BokehTornado

    http = getattr(scheduler, "http_application", None)
    return [a for a in getattr(http, "applications", []) if isinstance(a, BokehTornado)]


def serves_page(dask_scheduler: Any) -> bool:
    """Whether the dashboard of ``dask_scheduler`` has the airdask page (the parameter's
    name lets ``Client.run_on_scheduler(serves_page)`` pass the scheduler)."""
    return any(ROUTE in app.app_paths for app in _bokeh_apps(dask_scheduler))


def _add_to_navigation(scheduler: Any) -> None:
    # template_variables is memoized per scheduler and its "pages"/"plots" lists are shared
    # by reference with every page's template variables: appending reaches them all.
    from distributed.dashboard.scheduler import template_variables

    variables = template_variables(scheduler)
    if PAGE_NAME not in variables["pages"]:
        variables["pages"].append(PAGE_NAME)
    urls = {plot["url"] for plot in variables["plots"]}
    if INDIVIDUAL_ROUTE.strip("/") not in urls:
        variables["plots"].append({"url": INDIVIDUAL_ROUTE.strip("/"), "name": "Airdask"})


def _attach_runtime(scheduler: Any, dask_app: Any) -> None:
    from distributed.dashboard.core import BokehApplication
    from distributed.dashboard.scheduler import template_variables
    from tornado.ioloop import IOLoop

    app = BokehApplication(  # type: ignore[no-untyped-call]  # distributed is untyped
        _DOCS, scheduler, prefix=dask_app.prefix, template_variables=template_variables(scheduler)
    )
    scheduler.http_application.add_application(app)
    app.initialize(IOLoop.current())
    app.start()


def install(dask_scheduler: Any) -> str:
    """Make the dashboard of ``dask_scheduler`` serve the airdask page; returns how:
    ``"already"`` (built in with the dashboard, or installed before), ``"runtime"`` (added
    now), or ``"no-dashboard"`` (the scheduler has no Bokeh dashboard: nothing to do).

    Must run on the scheduler's event loop: preloads and ``Client.run_on_scheduler(install)``
    do (the parameter's name is what ``run_on_scheduler`` passes the scheduler as).
    """
    scheduler = dask_scheduler
    register_routes()
    apps = _bokeh_apps(scheduler)
    if not apps:
        log.warning("the Dask scheduler has no dashboard: the airdask page is not added")
        return "no-dashboard"
    how = "already"
    if not serves_page(scheduler):
        _attach_runtime(scheduler, apps[0])
        how = "runtime"
    _add_to_navigation(scheduler)
    log.info("airdask dashboard page at %s (%s)", ROUTE, how)
    return how


def dask_setup(scheduler: Any) -> None:
    """Dask's preload hook: called when the scheduler starts."""
    install(scheduler)


# See the module docstring, point 1: the import is how a preload reaches the dashboard table
# before Scheduler.__init__ builds the dashboard.
register_routes()
