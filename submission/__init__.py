"""The submission service, the one way jobs are created and controlled: the HTTP API, the
CLI and the benchmarks all build a :class:`core.spec.JobSpec` through
:meth:`SubmissionService.build_spec` (every check: source rules, uploads, webhook URL,
registered model, tile geometry from the model package) and submit, cancel and resume through
it; :func:`prepare` readies a stack (home, migrations, bundled models);
:mod:`submission.reports` reads a batch's table of sections for the API and ``pelletseg run``.

May import: ``core``, ``storage``, ``queues``, ``models``, ``microstructure`` and
``webhooks``, and ``imaging`` lazily (the scenes of a local file or an upload,
:mod:`submission.sources`); never ``worker``, ``training``, ``api`` or torch.
"""

from submission.service import SubmissionError, SubmissionService
from submission.sources import local_scenes, upload_scenes
from submission.stack import prepare

__all__ = ["SubmissionError", "SubmissionService", "local_scenes", "prepare", "upload_scenes"]
