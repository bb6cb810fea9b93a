import pytest
import torch


@pytest.fixture(autouse=True)
def _threads():
    """Model tests run on one thread: their timings and results do not depend on the machine's cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
