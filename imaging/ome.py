"""Pyramidal OME-TIFF outputs (the label map and the overlay) and reading pyramid levels of
either layout.

An output is one OME Image: full resolution in the first (and only top-level) TIFF page,
its sub-resolution levels in that page's SubIFDs (each half the previous, floor-rounded,
down to one 256 px tile), written by libvips ``tiffsave(pyramid=True, subifd=True)`` with
the OME-XML (ome-types) as the ImageDescription: ``Pixels`` of the size and type, the
physical pixel size (``PhysicalSizeX/Y`` in µm) when known, and for label maps the class
names and colours as two OME ``MapAnnotation`` s (namespaces :data:`CLASS_NAMES_NS` and
:data:`CLASS_COLOURS_NS`, keys the class indices), as QuPath, napari (via tifffile) and Fiji
(Bio-Formats) read them. The TIFF resolution tags carry the same pixel size (px/cm).

:func:`pyramid_levels` reads levels of the new (SubIFD) and the old (one page per level,
libvips ``pyramid=True``) layouts alike, for the Deep Zoom viewer and the preview.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyvips

#: OME ``MapAnnotation`` namespaces of the label map's classes (key: class index).
CLASS_NAMES_NS = "pelletseg:classes:names"
CLASS_COLOURS_NS = "pelletseg:classes:colours"
TILE = 256
_OME_TYPE = {"uchar": "uint8", "ushort": "uint16"}


def ome_xml(
    width: int,
    height: int,
    bands: int,
    *,
    name: str,
    pixel_type: str = "uint8",
    pixel_size_um: float | None = None,
    class_names: Sequence[str] | None = None,
    palette: Sequence[tuple[int, int, int]] | None = None,
) -> str:
    """The OME-XML of a one-image OME-TIFF (ome-types).

    Args:
        width, height: Full-resolution size (px).
        bands: Samples per pixel: 1 (label map) or 3 (RGB, interleaved).
        name: The Image's name.
        pixel_type: OME pixel type (``uint8``).
        pixel_size_um: Physical pixel size (µm/px), or None when unknown.
        class_names, palette: Class names and RGB colours (0-255) by class index (label maps).

    Returns:
        The OME-XML document (UTF-8 text).
    """
    from ome_types import model as m
    from ome_types import to_xml

    size = {}
    if pixel_size_um:
        size = {"physical_size_x": pixel_size_um, "physical_size_y": pixel_size_um,
                "physical_size_x_unit": "µm", "physical_size_y_unit": "µm"}
    channel = m.Channel(id="Channel:0:0", samples_per_pixel=bands,
                        name="class index" if class_names is not None else ("RGB" if bands == 3 else None))
    pixels = m.Pixels(
        id="Pixels:0", dimension_order="XYCZT", type=pixel_type, size_x=width, size_y=height,
        size_c=bands, size_z=1, size_t=1, interleaved=bands > 1, big_endian=False,
        channels=[channel], tiff_data_blocks=[m.TiffData(plane_count=1)], **size,
    )
    annotations, refs = [], []
    if class_names is not None:
        annotations.append(m.MapAnnotation(
            id="Annotation:0", namespace=CLASS_NAMES_NS,
            value=m.Map(ms=[m.Map.M(k=str(i), value=n) for i, n in enumerate(class_names)]),
        ))
        refs.append(m.AnnotationRef(id="Annotation:0"))
    if class_names is not None and palette is not None:
        annotations.append(m.MapAnnotation(
            id="Annotation:1", namespace=CLASS_COLOURS_NS,
            value=m.Map(ms=[m.Map.M(k=str(i), value="#{:02x}{:02x}{:02x}".format(*rgb))
                            for i, rgb in enumerate(palette)]),
        ))
        refs.append(m.AnnotationRef(id="Annotation:1"))
    image = m.Image(id="Image:0", name=name, pixels=pixels, annotation_refs=refs)
    ome = m.OME(images=[image], creator="pelletseg",
                structured_annotations=m.StructuredAnnotations(map_annotations=annotations))
    xml = to_xml(ome)
    if not xml.startswith("<?xml"):  # Bio-Formats and tifffile look for an XML document
        xml = '<?xml version="1.0" encoding="UTF-8"?>\n' + xml
    return xml


def save_ome_pyramid(
    image: pyvips.Image,
    out_path: str | Path,
    *,
    name: str,
    pixel_size_um: float | None = None,
    class_names: Sequence[str] | None = None,
    palette: Sequence[tuple[int, int, int]] | None = None,
    labels: bool = False,
    **save_options,
) -> None:
    """Save a lazy 1-band (label map) or 3-band (RGB) uchar image as a pyramidal OME-TIFF
    (tiled 256 px BigTIFF, sub-resolution levels in SubIFDs), streaming.

    Label maps' levels take the most frequent label of each 2x2 block
    (``region_shrink="mode"``, never averaged); pictures' levels are averaged.

    Args:
        image: (H, W) 1-band or (H, W, 3) uchar image, consumed sequentially.
        out_path: Output file; overwritten.
        name: The OME Image's name.
        pixel_size_um: µm/px, written to the OME-XML and the TIFF resolution tags.
        class_names, palette: Classes of a label map (see :func:`ome_xml`).
        labels: True for a label map (mode-downsampled levels).
        save_options: Further libvips ``tiffsave`` options (``compression``, ``Q``, ...).

    Raises:
        ValueError: ``image`` is not 1- or 3-band uchar.
        pyvips.Error: the output cannot be written (or the pipeline's input fails).
    """
    if image.format != "uchar" or image.bands not in (1, 3):
        raise ValueError(f"an OME pyramid is 1- or 3-band uchar, got {image.bands} of {image.format}")
    xml = ome_xml(image.width, image.height, image.bands, name=name,
                  pixel_type=_OME_TYPE[image.format], pixel_size_um=pixel_size_um,
                  class_names=class_names, palette=palette)
    image = image.copy()
    image.set_type(pyvips.GValue.gstr_type, "image-description", xml)
    if pixel_size_um:
        save_options.update(xres=1000.0 / pixel_size_um, yres=1000.0 / pixel_size_um, resunit="cm")
    if labels:
        save_options.setdefault("region_shrink", "mode")
    image.tiffsave(
        str(out_path), pyramid=True, subifd=True, tile=True, tile_width=TILE, tile_height=TILE,
        bigtiff=True, keep="other", **save_options,  # "other" keeps the ImageDescription
    )


def pyramid_levels(path: str | Path, *, access: str = "random") -> list[tuple[int, pyvips.Image]]:
    """The levels of a pyramidal TIFF as ``(downsample factor, lazy image)``, factor 1 first,
    each level's size the full one floor-divided by its factor: SubIFDs of page 0 (OME-TIFF
    outputs) or, for files without SubIFDs, the following top-level pages (libvips
    ``pyramid=True`` files of earlier releases); the levels stop at the first one that is not
    such a halving.

    Raises:
        pyvips.Error: the file cannot be opened.
    """
    first = pyvips.Image.new_from_file(str(path), access=access, revalidate=True)
    levels = [(1, first)]
    n_subifds = first.get("n-subifds") if first.get_typeof("n-subifds") else 0
    if n_subifds:
        candidates = ((k + 1, {"subifd": k}) for k in range(n_subifds))
    else:
        n_pages = first.get("n-pages") if first.get_typeof("n-pages") else 1
        candidates = ((k, {"page": k}) for k in range(1, n_pages))
    for k, option in candidates:
        factor = 1 << k
        image = pyvips.Image.new_from_file(str(path), access=access, **option)
        if image.width != first.width // factor or image.height != first.height // factor:
            break
        if (image.bands, image.format) != (first.bands, first.format):
            break
        levels.append((factor, image))
    return levels
