from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# The suite runs on a 2-core CI machine; one torch thread per test process avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path
