"""The contract suites' fixtures: ``loader_backend`` and ``extractor_backend`` run a test once per
entry of ``backends.LOADERS`` / ``backends.EXTRACTORS``, each in a place of its own."""

from __future__ import annotations

import uuid

import pytest

from backends import EXTRACTORS, LOADERS, ExtractorBackend, LoaderBackend, Place


def _place(tmp_path) -> Place:
    return Place(name=f"c_{uuid.uuid4().hex[:12]}", dir=tmp_path)


@pytest.fixture(params=LOADERS, ids=[b.id for b in LOADERS])
def loader_backend(request, tmp_path) -> tuple[LoaderBackend, Place]:
    backend, place = request.param, _place(tmp_path)
    _gaps(request, backend)
    with backend.setup(place):
        yield backend, place


def _gaps(request, backend) -> None:
    reason = backend.gaps.get(request.node.originalname)
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=f"{backend.id}: {reason}", strict=True))


@pytest.fixture(params=EXTRACTORS, ids=[b.id for b in EXTRACTORS])
def extractor_backend(request, tmp_path) -> tuple[ExtractorBackend, Place]:
    backend, place = request.param, _place(tmp_path)
    _gaps(request, backend)
    with backend.setup(place):
        yield backend, place
