"""Keep a data loader worker's freed image buffers for the next batch."""
import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# buffers below this come from the heap and are reused: glibc's largest (64-bit; a decoded
# 10-megapixel image)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30  # free heap memory kept before any is returned to the kernel

_tuned = (None, False)  # (pid, whether glibc took both settings)


def keep_freed_image_memory() -> bool:
    """In this process, let glibc keep freed buffers up to 32 MB for reuse.

    A worker holds a batch of decoded images until it is collated, then frees them.  By
    default glibc serves buffers of this size with fresh ``mmap`` pages and gives them back
    when freed, so every batch faults its pages in again: about 0.2 ms of a worker's ~2 ms
    per ImageNet-sized image (tools/benchmark_data.py).  With the thresholds raised the heap
    keeps them (up to 1 GB of free heap per worker).  Once per process; returns whether glibc
    took both settings (False where the C library is not glibc: nothing changed).
    """
    global _tuned
    if _tuned[0] != os.getpid():
        try:
            mallopt = ctypes.CDLL(ctypes.util.find_library('c')).mallopt
            took = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1,
                    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1]
        except (OSError, AttributeError, TypeError):
            took = [False]
        _tuned = (os.getpid(), all(took))
    return _tuned[1]
