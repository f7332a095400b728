"""cli.scenes: which jobs a source gives ``pelletseg run`` and ``submit`` (one per scene of a
local multi-image OME-TIFF), and the ``--scene`` option's values."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cli.scenes import ALL, scene_option, scenes_of
from tests.imaging.formats.test_inputs import rgb, write_scenes

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("ome_types")


def test_a_local_multi_image_ome_tiff_gives_a_job_per_scene_unless_one_is_named(tmp_path):
    mount = tmp_path / "mount.ome.tif"
    write_scenes(mount)  # a thumbnail (0) and scenes 1, 2
    assert scenes_of(str(mount), None) == [1, 2] == scenes_of(mount.as_uri(), ALL)
    assert scenes_of(str(mount), 2) == [2]
    one = tmp_path / "one.tif"
    tifffile.imwrite(one, rgb(40, 50), photometric="rgb")
    assert scenes_of(str(one), None) == [None] == scenes_of(str(one), ALL)
    broken = tmp_path / "broken.ome.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 16)  # left to the usual checks
    assert scenes_of(str(broken), None) == [None]
    assert scenes_of("s3://lab/mount.ome.tif", None) == [None]  # not opened here
    assert scenes_of("s3://lab/mount.ome.tif", 1) == [1]
    with pytest.raises(click.UsageError, match="--scene all lists the scenes of local files"):
        scenes_of("s3://lab/mount.ome.tif", ALL)


def test_the_scene_option_takes_a_number_or_all():
    @click.command()
    @scene_option
    def show(scene):
        click.echo(repr(scene))

    runner = CliRunner()
    assert [runner.invoke(show, args).output.strip() for args in ([], ["--scene", "3"],
                                                                  ["--scene", "all"])] == [
        "None", "3", "'all'"]
    for bad in ("-1", "two"):
        res = runner.invoke(show, ["--scene", bad])
        assert res.exit_code == 2 and "neither a scene number" in res.output
