"""A transform's random draw, called without mmcv's per-call wrapper."""
from typing import Any


class DrawMethod:
    """``transform.<name>(*args)`` as a plain call.

    mmcv's ``cache_randomness`` wraps the random methods of its transforms in a descriptor
    that copies itself on every attribute access (for its optional parameter cache, which
    only ``cache_random_params`` switches on).  A data worker draws about twenty times per
    image; calling the wrapped function directly makes the same calls to the random
    generators without that cost.  Pickled as the transform and the method's name (data
    loader workers started with ``spawn`` look the function up again).
    """

    def __init__(self, transform, name: str) -> None:
        self.transform, self.name = transform, name
        for cls in type(transform).__mro__:
            if name in cls.__dict__:
                method = cls.__dict__[name]
                self._function = getattr(method, 'func', method)
                return
        raise AttributeError(f'{type(transform).__name__} has no method {name}')

    def __call__(self, *args) -> Any:
        return self._function(self.transform, *args)

    def __getstate__(self) -> tuple:
        return self.transform, self.name

    def __setstate__(self, state: tuple) -> None:
        self.__init__(*state)
