"""Keep a data loader worker's freed image buffers for the next batch."""
import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 64 << 20  # buffers below this come from the heap and are reused
TRIM_THRESHOLD = 1 << 30  # free heap memory kept before any is returned to the kernel

_tuned_pid = None


def keep_freed_image_memory() -> bool:
    """In this process, let glibc keep freed buffers up to 64 MB for reuse.

    A worker holds a batch of decoded images until it is collated, then frees them.  By
    default glibc serves buffers of this size with fresh ``mmap`` pages and gives them back
    when freed, so every batch faults its pages in again: about 0.2 ms of a worker's ~2 ms
    per ImageNet-sized image (tools/benchmark_data.py).  With the thresholds raised the heap
    keeps them.  Once per process; False where the C library is not glibc (nothing changed).
    """
    global _tuned_pid
    if _tuned_pid == os.getpid():
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c'))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _tuned_pid = os.getpid()
    return ok
