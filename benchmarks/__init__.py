"""Speed and memory benchmarks of pelletseg against the model-only limit and peer tools.

Run with ``pelletseg bench [--quick] [--device cpu|cuda] --json FILE``; each module measures
one thing (:mod:`benchmarks.limit`, :mod:`benchmarks.pipeline`, :mod:`benchmarks.peers`,
:mod:`benchmarks.memory`), :mod:`benchmarks.runner` runs them in order on one machine, model
and image (beside today's path, eager fp32 at 1024/128), and :mod:`benchmarks.report` writes
the JSON and the Markdown table. ``pelletseg agreement`` (:mod:`benchmarks.agreement`)
measures on the real data which tile geometries keep the whole-image labels and which
runtimes keep eager fp32's labels. Nothing here
is a test: timings never become assertions. May import every package but ``cli`` and
``api`` (jobs go through :mod:`submission`, workers through :mod:`worker.local`).
"""

__all__ = ["agreement", "config", "inputs", "limit", "memory", "microstructure_merge", "peers",
           "pipeline", "report",
           "runner"]
