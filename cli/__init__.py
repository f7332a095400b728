"""The ``pelletseg`` command line (click): the local stack (``run``, ``demo``, ``resume``,
``rerun``, ``worker``, ``migrate``, ``models``), the service (``serve``, ``apikey``), clients of
the HTTP API (``submit``, ``jobs``, ``status``, ``watch``, ``cancel``, ``delete``,
``results``), and ``train``,
``evaluate`` and ``bench``. Commands import what they need when they run, so ``pelletseg
serve`` never loads torch. May import every package.
"""

__all__ = ["main"]
