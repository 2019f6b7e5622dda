"""Image files whose header claims a size that their few hundred bytes do not hold: the
pixel limit's test cases, written in microseconds and a few kB of memory."""
import io
import struct
import zlib

from PIL import Image


def png_claiming(path, width: int, height: int) -> bytes:
    """Write a PNG whose IHDR says ``width`` x ``height`` (8-bit RGB) and whose IDAT holds 64
    zero bytes; return its bytes.  A decoder that trusts the header fails on the data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data)))

    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)  # depth 8, RGB, no interlace
    data = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr)
            + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))
    path.write_bytes(data)
    return data


def jpeg_claiming(path, width: int, height: int) -> bytes:
    """Write a 16 x 16 baseline JPEG whose frame header (SOF0) says ``width`` x ``height``;
    return its bytes."""
    buffer = io.BytesIO()
    Image.new('RGB', (16, 16), (200, 30, 30)).save(buffer, 'JPEG')
    data = bytearray(buffer.getvalue())
    sof = data.index(b'\xff\xc0')  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    path.write_bytes(bytes(data))
    return bytes(data)
