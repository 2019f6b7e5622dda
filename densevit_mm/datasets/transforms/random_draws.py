"""A transform's random draw, called without mmcv's per-call wrapper."""
import functools
from typing import Callable


def draw_method(transform, name: str) -> Callable:
    """``transform.<name>`` as a plain bound call.

    mmcv's ``cache_randomness`` wraps the random methods of its transforms in a descriptor
    that copies itself on every attribute access (for its optional parameter cache, which
    only ``cache_random_params`` switches on).  A data worker draws about twenty times per
    image; calling the wrapped function directly makes the same calls to the random
    generators without that cost.
    """
    for cls in type(transform).__mro__:
        if name in cls.__dict__:
            method = cls.__dict__[name]
            return functools.partial(getattr(method, 'func', method), transform)
    raise AttributeError(f'{type(transform).__name__} has no method {name}')
