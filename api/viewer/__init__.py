"""The dashboard viewer's pixels: Deep Zoom (DZI) grids and tiles read from pyramidal TIFFs
(:mod:`api.viewer.deepzoom`), and each job's layers (overlay, labels, source, confidence) as local
pyramidal TIFFs (:mod:`api.viewer.layers`). A *Deep Zoom tile* (256 px of a pyramid level) is
not a model tile."""

from api.viewer.deepzoom import DZ_TILE_SIZE, DeepZoomGrid, PixelKind, Pyramid, open_pyramid
from api.viewer.layers import LAYER_KIND, Layer, LayerFiles, LayerUnavailable

__all__ = ["DZ_TILE_SIZE", "LAYER_KIND", "DeepZoomGrid", "Layer", "LayerFiles",
           "LayerUnavailable", "PixelKind", "Pyramid", "open_pyramid"]
