"""Fixtures of the data-set tests."""

import pytest


@pytest.fixture(scope="module")
def ray_runtime():
    """A local Ray runtime on 2 CPUs for one test module (left running if one was already up)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
