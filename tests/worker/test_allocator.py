"""While a job trains, a step's freed memory is kept for the next step: the same large
allocation made again faults no pages in (glibc otherwise unmaps anything over 32 MB at
free, and every step paid ~300k page faults; bench/train_throughput.py)."""

from __future__ import annotations

import resource

import pytest
import torch

from worker import recipe

pytestmark = pytest.mark.skipif(recipe._glibc() is None, reason="needs glibc (mallopt)")

SIZE = 64 * 2**20  # over glibc's largest mmap threshold (32 MB)


def _faults_of_a_second_allocation() -> int:
    first = torch.ones(SIZE // 4)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    again = torch.ones(SIZE // 4)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del again
    return faults


def test_freed_step_memory_is_reused_inside_and_returned_after():
    pages = SIZE // 4096
    assert _faults_of_a_second_allocation() > pages // 2  # the default: unmapped at free, faulted in again
    lines = []
    with recipe.freed_memory_kept(lines.append):
        _faults_of_a_second_allocation()  # the first one grows the heap
        assert _faults_of_a_second_allocation() < pages // 20
    assert lines == ["memory: a step's freed memory is kept for the next step (glibc: no mmap, no trim)"]
    assert _faults_of_a_second_allocation() > pages // 2  # the defaults are back
