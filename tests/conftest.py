"""Shared test set-up: commands run without --output write their run folders under a temporary
folder ($AFSD_RUNS), never into the checkout's runs/."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def runs_in_a_temporary_folder(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("AFSD_RUNS", str(tmp_path_factory.mktemp("runs")))
