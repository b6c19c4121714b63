"""Testing tools for collection types: the conformance suite and deterministic fakes.

Installed with ``lookalike``; its fixtures load as a pytest plugin automatically. See
:class:`CollectionTypeSuite`.
"""

from lookalike.testing.conformance import CollectionTypeSuite
from lookalike.testing.fakes import fake_image, fake_images, fake_records, image_base64

__all__ = ["CollectionTypeSuite", "fake_image", "fake_images", "fake_records", "image_base64"]
