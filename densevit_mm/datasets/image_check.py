"""Whether an image file decodes the way the training pipeline decodes it, and whether its
size, read from its header, is within the pixel limit."""
import io
import threading
from typing import Optional, Tuple, Union

import mmcv
from PIL import Image

# mmpretrain's IMG_EXTENSIONS and the two it leaves out (.tiff, .webp)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')

# 2**27 = 134.2 MP (16384 x 8192): about twice the largest ImageNet train images (~10k x 7k),
# far above COCO's and ADE20K's.  A draw at the limit adds ~1.3 GB to a worker (measured
# with the pretraining pipeline); a 30000 x 30000 JPEG added 9 GB.  The one default.
MAX_PIXELS = 2 ** 27

# PIL's own limit (Image.MAX_IMAGE_PIXELS) is a module global, lifted around one header read;
# a thread decoding with PIL in that instant would go without it (data loader workers,
# processes of one thread, have none)
_PIL_LIMIT_LOCK = threading.Lock()


# JPEG frame headers (start of frame, all coding processes), which carry the image size
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                          0xCE, 0xCF})


def jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """``(width, height)`` from a JPEG's frame header, walking its marker segments; None when
    ``data`` is no JPEG or the walk does not reach a frame header with a size (the caller
    then asks PIL).  A data loader worker checks every image's size before decoding it; this
    costs a tenth of PIL's ``Image.open`` (0.005 against 0.05 ms in a worker)."""
    if data[:2] != b'\xff\xd8':
        return None
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            i += 2
        elif marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header first
            return None
        elif marker in _SOF_MARKERS:
            if i + 9 > end:
                return None
            height, width = data[i + 5] << 8 | data[i + 6], data[i + 7] << 8 | data[i + 8]
            return (width, height) if width and height else None  # 0: set by a DNL marker
        else:
            i += 2 + (data[i + 2] << 8 | data[i + 3])
    return None


def image_size(source: Union[str, bytes]) -> Optional[Tuple[int, int]]:
    """``(width, height)`` from the header of ``source`` (a file, or its bytes), no pixel
    decoded; None if PIL does not identify it (the decoder then says what is wrong with it).
    A JPEG's bytes are read by :func:`jpeg_size` first.

    ``Image.open`` reads the header and leaves the pixels to ``load()``, which is never
    called.  It would refuse, with its own ``DecompressionBombError``, a header over twice
    ``Image.MAX_IMAGE_PIXELS`` (179 MP): that check is lifted for the call, so that
    ``max_pixels``, not PIL, decides and names the limit.
    """
    if isinstance(source, bytes):
        size = jpeg_size(source)
        if size is not None:
            return size
    with _PIL_LIMIT_LOCK:
        pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                return img.size
        except Exception:  # each format plugin raises its own types
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = pil_limit


def too_large_reason(source: Union[str, bytes], max_pixels: int = MAX_PIXELS) -> Optional[str]:
    """Why ``source`` has too many pixels to be decoded, from its header, else None.

    Args:
        source (str | bytes): The image file, or its bytes.
        max_pixels (int): Largest width x height taken. Defaults to ``MAX_PIXELS`` (2**27).
    """
    size = image_size(source)
    if size is None or size[0] * size[1] <= max_pixels:
        return None
    width, height = size
    return (f'too large: {width} x {height} = {width * height / 1e6:.4g} MP exceeds the pixel '
            f'limit of {max_pixels / 1e6:.4g} MP (max_pixels={max_pixels}; raise it if images '
            'this large are meant to be trained on, or shrink the file)')


def unreadable_reason(path: str, backend: str = 'cv2',
                      max_pixels: int = MAX_PIXELS) -> Optional[str]:
    """None if ``path`` decodes as ``LoadImageFromFile`` decodes it and its header says it
    has at most ``max_pixels`` pixels, else why not.  A file over the limit is not decoded.

    Args:
        path (str): The image file.
        backend (str): ``LoadImageFromFile``'s ``imdecode_backend``. Defaults to 'cv2'.
        max_pixels (int): Largest width x height taken. Defaults to ``MAX_PIXELS`` (2**27).
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        return f'cannot be read ({err.strerror or err})'
    return undecodable_reason(data, backend, max_pixels)


def undecodable_reason(data: bytes, backend: str = 'cv2',
                       max_pixels: int = MAX_PIXELS) -> Optional[str]:
    """:func:`unreadable_reason` of an image file's bytes (a shard member, say)."""
    if not data:
        return 'empty file (0 bytes)'
    too_large = too_large_reason(data, max_pixels)
    if too_large is not None:
        return too_large
    try:
        img = mmcv.imfrombytes(data, flag='color', backend=backend)
    except Exception as err:  # each decoder raises its own types
        return f'cannot be decoded ({type(err).__name__}: {err})'
    if img is None or img.size == 0:
        return f'cannot be decoded ({len(data)} bytes that {backend} does not take for an image)'
    return None
