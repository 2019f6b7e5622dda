"""Whether an image file decodes the way the training pipeline decodes it."""
from typing import Optional

import mmcv

# mmpretrain's IMG_EXTENSIONS and the two it leaves out (.tiff, .webp)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def unreadable_reason(path: str, backend: str = 'cv2') -> Optional[str]:
    """None if ``path`` decodes as ``LoadImageFromFile`` decodes it, else why it does not.

    Args:
        path (str): The image file.
        backend (str): ``LoadImageFromFile``'s ``imdecode_backend``. Defaults to 'cv2'.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        return f'cannot be read ({err.strerror or err})'
    if not data:
        return 'empty file (0 bytes)'
    try:
        img = mmcv.imfrombytes(data, flag='color', backend=backend)
    except Exception as err:  # each decoder raises its own types
        return f'cannot be decoded ({type(err).__name__}: {err})'
    if img is None or img.size == 0:
        return f'cannot be decoded ({len(data)} bytes that {backend} does not take for an image)'
    return None
