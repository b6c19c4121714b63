"""The example plugin runs the conformance suite, as every collection type should."""

from lookalike_thumbnail import ThumbnailType

from lookalike.testing import CollectionTypeSuite


class TestThumbnailType(CollectionTypeSuite):
    collection_type = ThumbnailType
    config = {"side": 8}
    bad_configs = [{"side": 1}, {"side": "eight"}, {"colour": True}]
