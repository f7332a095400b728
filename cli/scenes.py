"""Which jobs a local image gives ``pelletseg run`` and ``pelletseg submit``: one per scene of
an OME-TIFF of several images (one scene per pellet of a mount, e.g. a multi-scene CZI
converted by bfconvert), else one.

``--scene N`` gives every image's job the OME Image N (:attr:`core.spec.JobSpec.scene`);
``--scene all``, and no ``--scene`` for a local OME-TIFF of several scenes, gives one job per
scene (:func:`submission.sources.local_scenes`), all in the run's batch, so no pellet of the mount
is left out and none has to be named by hand. A source that is not a local file (``s3://...``)
is not opened here: without ``--scene N`` its worker refuses a file of several scenes, saying
which to give.
"""

from __future__ import annotations

import click

from core.sources import source_scheme

__all__ = ["ALL", "scene_option", "scenes_of"]

#: ``--scene all``: one job per scene.
ALL = "all"


def _scene(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    if value is None or value == ALL:
        return value
    try:
        scene = int(value)
    except ValueError:
        scene = -1
    if scene < 0:
        raise click.BadParameter(f"{value!r} is neither a scene number (0, 1, ...) nor "
                                 f"{ALL!r}", ctx=ctx, param=param)
    return scene


#: ``--scene`` of ``pelletseg run`` and ``pelletseg submit``.
scene_option = click.option(
    "--scene", default=None, callback=_scene, metavar="N|all",
    help="Of an OME-TIFF of several images (scenes, e.g. one per pellet): the scene to read "
         "(0-based, as the file numbers its images), or 'all' for one job per scene (one "
         "batch). Default: one job per scene for a local file of several, else its one image.",
)


def scenes_of(source: str, scene: int | str | None) -> list[int | None]:
    """The scenes to submit ``source`` with, one job each: ``[scene]`` for a number; the
    scenes of a local OME-TIFF of several for ``all`` or None; else ``[None]`` (the file's one
    image; a file that cannot be opened is left to the usual checks, which say what is wrong).

    Raises:
        click.UsageError: ``all`` for a source that is not a local file (its scenes cannot be
            listed here).
    """
    if isinstance(scene, int):
        return [scene]
    if source_scheme(source) != "file":
        if scene == ALL:
            raise click.UsageError(
                f"--scene all lists the scenes of local files; {source} is not one: give "
                "--scene N for each scene to segment")
        return [None]
    from submission.sources import local_scenes  # the stack's modules: only when needed

    return local_scenes(source) or [None]
